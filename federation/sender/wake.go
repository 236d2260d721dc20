package sender

import (
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Wakeup carries "this destination has new queued work" from the code that writes
// queue rows to the destination workers. LocalWakeup is the in-process version; with
// several processes on one PostgreSQL, a LISTEN/NOTIFY implementation forwards Wake to
// the process that runs the destination's worker.
type Wakeup interface {
	// Wake announces new work for destinations (after the rows were committed).
	Wake(destinations ...spec.ServerName)
	// Subscribe makes fn receive every later Wake; it replaces an earlier subscriber.
	Subscribe(fn func(destination spec.ServerName))
}

// LocalWakeup is the in-process Wakeup.
type LocalWakeup struct {
	mu sync.RWMutex
	fn func(spec.ServerName)
}

// NewLocalWakeup returns an in-process Wakeup.
func NewLocalWakeup() *LocalWakeup { return &LocalWakeup{} }

// Wake implements Wakeup.
func (w *LocalWakeup) Wake(destinations ...spec.ServerName) {
	w.mu.RLock()
	fn := w.fn
	w.mu.RUnlock()
	if fn == nil {
		return
	}
	for _, d := range destinations {
		fn(d)
	}
}

// Subscribe implements Wakeup.
func (w *LocalWakeup) Subscribe(fn func(spec.ServerName)) {
	w.mu.Lock()
	w.fn = fn
	w.mu.Unlock()
}
