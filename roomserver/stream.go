package roomserver

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// streamTracker allocates event NIDs (which are also stream positions) inside write
// transactions and works out the highest position below which every transaction has
// committed or rolled back (the "safe" position). Readers such as /sync must never
// read past it: with several transactions in flight on PostgreSQL, a transaction
// holding position 10 can commit after one holding 11, and a reader that saw 11 and
// moved on would skip 10 for ever.
//
// Outputs are published once they are at or below the safe position, in stream order.
//
// Lock order: streamTracker.mu, then streamTracker.pubMu (taken before mu is released
// so publication order follows position order).
type streamTracker struct {
	dialect storage.Dialect

	mu       sync.Mutex
	last     int64 // SQLite: last NID handed out; both: highest NID seen allocated
	inflight map[*streamTxn]struct{}
	ready    []*streamTxn // committed, waiting for the safe position to pass them
	safe     atomic.Int64

	pubMu   sync.Mutex
	publish func(OutputEvent)
}

// streamTxn is the allocation state of one write transaction.
type streamTxn struct {
	low     int64 // no position below low can belong to this transaction
	high    int64 // highest position allocated
	outputs []OutputEvent
}

func newStreamTracker(ctx context.Context, db *storage.DB, publish func(OutputEvent)) (*streamTracker, error) {
	last, err := roomstore.MaxEventNID(ctx, db)
	if err != nil {
		return nil, err
	}
	t := &streamTracker{dialect: db.Dialect(), last: last, inflight: make(map[*streamTxn]struct{}), publish: publish}
	t.safe.Store(last)
	return t, nil
}

// Safe returns the highest position below which everything has committed.
func (t *streamTracker) Safe() int64 { return t.safe.Load() }

// begin registers a transaction that may allocate positions.
func (t *streamTracker) begin() *streamTxn {
	t.mu.Lock()
	defer t.mu.Unlock()
	txn := &streamTxn{low: t.last + 1}
	t.inflight[txn] = struct{}{}
	return txn
}

// alloc hands out n increasing positions to txn. On PostgreSQL they come from the
// event_nid sequence (through q, inside the transaction); on SQLite from memory, as
// one process owns the database.
func (t *streamTracker) alloc(ctx context.Context, q storage.Querier, txn *streamTxn, n int) ([]int64, error) {
	if n == 0 {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []int64
	if t.dialect == storage.Postgres {
		var err error
		if out, err = roomstore.NextEventNIDs(ctx, q, n); err != nil {
			return nil, err
		}
	} else {
		out = make([]int64, n)
		for i := range out {
			t.last++
			out[i] = t.last
		}
	}
	if txn.high == 0 && out[0] > txn.low {
		txn.low = out[0]
	}
	for _, p := range out {
		txn.high = max(txn.high, p)
		t.last = max(t.last, p)
	}
	return out, nil
}

// finish ends a transaction. Committed outputs are published, in position order, as
// soon as every lower position is settled.
func (t *streamTracker) finish(txn *streamTxn, committed bool) {
	t.mu.Lock()
	delete(t.inflight, txn)
	if committed && len(txn.outputs) > 0 {
		t.ready = append(t.ready, txn)
		sort.Slice(t.ready, func(i, j int) bool { return t.ready[i].low < t.ready[j].low })
	}
	safe := t.last
	for other := range t.inflight {
		safe = min(safe, other.low-1)
	}
	if safe > t.safe.Load() {
		t.safe.Store(safe)
	}
	var out []OutputEvent
	n := 0
	for n < len(t.ready) && t.ready[n].high <= safe {
		out = append(out, t.ready[n].outputs...)
		n++
	}
	t.ready = t.ready[n:]
	// The jobs of one transaction allocate separately, so transactions' positions can
	// interleave: publish everything now settled in position order.
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	if len(out) == 0 {
		t.mu.Unlock()
		return
	}
	t.pubMu.Lock()
	t.mu.Unlock()
	defer t.pubMu.Unlock()
	for _, ev := range out {
		t.publish(ev)
	}
}
