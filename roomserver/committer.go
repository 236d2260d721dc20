package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// commitJob is one unit of work for the committer: usually the events of one room
// prepared by a writer that holds the room's lock.
type commitJob struct {
	// run writes the job in tx. It may run twice (again on its own after a batch
	// failed because of another job), so it must not change shared state: results go
	// into the job and are installed by after.
	run func(ctx context.Context, w *txWriter) error
	// after runs once the transaction committed, before outputs are published.
	after func()
	// outputs are filled by run, in stream order.
	outputs []OutputEvent
	err     error
	done    chan struct{}
}

// txWriter is what a job writes through. Event rows and room heads are collected and
// written for the whole batch at once (multi-row statements) before the commit.
type txWriter struct {
	q       storage.Querier
	tracker *streamTracker
	txn     *streamTxn
	events  []*roomstore.Event
	heads   []roomstore.RoomHead
}

// addEvent queues an event row.
func (w *txWriter) addEvent(e *roomstore.Event) { w.events = append(w.events, e) }

// setHead queues a room's new head.
func (w *txWriter) setHead(h roomstore.RoomHead) { w.heads = append(w.heads, h) }

// flush writes the queued rows.
func (w *txWriter) flush(ctx context.Context) error {
	if err := roomstore.InsertEvents(ctx, w.q, w.events); err != nil {
		return err
	}
	return roomstore.UpdateRoomHeads(ctx, w.q, w.heads)
}

// alloc hands out n event NIDs (stream positions) in this transaction.
func (w *txWriter) alloc(ctx context.Context, n int) ([]int64, error) {
	return w.tracker.alloc(ctx, w.q, w.txn, n)
}

// committer is the group commit: it writes the jobs queued while the previous
// transaction was committing in one transaction, so many rooms share one commit (and
// one fsync). Jobs of one room never meet in a batch because a writer waits for its
// job while holding the room's lock.
type committer struct {
	db       *storage.DB
	tracker  *streamTracker
	maxBatch int

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*commitJob
	closing bool
	wg      sync.WaitGroup
}

func newCommitter(db *storage.DB, tracker *streamTracker, workers, maxBatch int) *committer {
	c := &committer{db: db, tracker: tracker, maxBatch: maxBatch}
	c.cond = sync.NewCond(&c.mu)
	for range workers {
		c.wg.Add(1)
		go c.loop()
	}
	return c
}

var errClosed = errors.New("roomserver: closed")

// do queues a job and waits until it committed or failed. The job always runs to
// completion: a caller cannot abandon a write that may already be committed.
func (c *committer) do(job *commitJob) error {
	job.done = make(chan struct{})
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return errClosed
	}
	c.queue = append(c.queue, job)
	c.cond.Signal()
	c.mu.Unlock()
	<-job.done
	return job.err
}

// close stops the workers once the queue is drained.
func (c *committer) close() {
	c.mu.Lock()
	c.closing = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *committer) loop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.cond.Wait()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		n := min(len(c.queue), c.maxBatch)
		batch := make([]*commitJob, n)
		copy(batch, c.queue)
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		c.mu.Unlock()
		c.commit(batch)
	}
}

func (c *committer) commit(batch []*commitJob) {
	ctx := context.Background()
	err := c.runTx(ctx, batch)
	if err != nil && len(batch) > 1 {
		// One job may have spoiled the batch: run each on its own so the others commit.
		for _, job := range batch {
			job.err = c.runTx(ctx, []*commitJob{job})
			close(job.done)
		}
		return
	}
	for _, job := range batch {
		job.err = err
		close(job.done)
	}
}

func (c *committer) runTx(ctx context.Context, batch []*commitJob) error {
	txn := c.tracker.begin()
	err := c.db.WithTx(ctx, func(tx *storage.Tx) error {
		w := &txWriter{q: tx, tracker: c.tracker, txn: txn}
		if c.db.Dialect() == storage.SQLite {
			sq := newStmtQuerier(tx)
			defer sq.close()
			w.q = sq
		}
		for _, job := range batch {
			job.outputs = nil
			if err := job.run(ctx, w); err != nil {
				return err
			}
		}
		return w.flush(ctx)
	})
	if err != nil {
		c.tracker.finish(txn, false)
		if len(batch) == 1 {
			logrus.WithError(err).Debug("roomserver: write failed")
		}
		return err
	}
	for _, job := range batch {
		if job.after != nil {
			job.after()
		}
		txn.outputs = append(txn.outputs, job.outputs...)
	}
	c.tracker.finish(txn, true)
	return nil
}

// stmtQuerier prepares each distinct statement once per transaction. With SQLite,
// preparing is a large part of the cost of the small statements a batch repeats.
type stmtQuerier struct {
	tx    *storage.Tx
	stmts map[string]*sql.Stmt
}

func newStmtQuerier(tx *storage.Tx) *stmtQuerier {
	return &stmtQuerier{tx: tx, stmts: make(map[string]*sql.Stmt)}
}

func (s *stmtQuerier) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	s.stmts[query] = st
	return st, nil
}

func (s *stmtQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (s *stmtQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (s *stmtQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, query)
	if err != nil {
		// Let the caller see the error through the row, as *sql.Tx would.
		return s.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Dialect tells the query helpers which engine runs the transaction.
func (s *stmtQuerier) Dialect() storage.Dialect { return s.tx.Dialect() }

func (s *stmtQuerier) close() {
	for _, st := range s.stmts {
		st.Close()
	}
}
