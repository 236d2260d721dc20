package push

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/myelin-chat/myelin/storage"
)

// Unread counts are kept in memory, per user, room and thread, so that they include an
// event as soon as it is evaluated: a /sync woken by the event answers with counts
// that include it, without waiting for its notification rows to be committed. A user's
// counts are loaded from the database (their unread rows after their receipts) the
// first time they are needed, then kept up to date by evaluations and receipts. This
// assumes one process evaluates and serves the counts (as the notifier does).

// unreadNote is an unread notification as the in-memory counts keep it.
type unreadNote struct {
	pos       int64
	thread    string // thread root, "" for the main timeline
	highlight bool
}

// roomUnread is a user's unread notifications in one room, with the receipts that
// read them.
type roomUnread struct {
	receipts map[string]int64 // scope ("", "main" or a thread root) → stream position
	notes    []unreadNote     // unread, in stream order
	counts   Counts           // derived from notes
}

// covered tells whether a receipt of the user reads the notification at pos.
func (r *roomUnread) covered(pos int64, thread string) bool {
	if pos <= r.receipts[""] {
		return true
	}
	scope := thread
	if scope == "" {
		scope = "main"
	}
	return pos <= r.receipts[scope]
}

func (r *roomUnread) add(n unreadNote) {
	if r.covered(n.pos, n.thread) {
		return
	}
	if k := len(r.notes); k > 0 && r.notes[k-1].pos >= n.pos {
		return // already counted (evaluations come in stream order)
	}
	r.notes = append(r.notes, n)
	r.counts.add(n, 1)
}

func (c *Counts) add(n unreadNote, d int) {
	h := 0
	if n.highlight {
		h = d
	}
	c.Notifications += d
	c.Highlights += h
	if n.thread == "" {
		c.Main.Notifications += d
		c.Main.Highlights += h
		return
	}
	if c.Threads == nil {
		c.Threads = map[string]Count{}
	}
	tc := c.Threads[n.thread]
	tc.Notifications += d
	tc.Highlights += h
	if tc.Notifications == 0 {
		delete(c.Threads, n.thread)
	} else {
		c.Threads[n.thread] = tc
	}
}

// read applies a receipt and returns how many notifications became read.
func (r *roomUnread) read(scope string, pos int64) int {
	if pos <= r.receipts[scope] {
		return 0
	}
	r.receipts[scope] = pos
	kept := r.notes[:0]
	for _, n := range r.notes {
		if r.covered(n.pos, n.thread) {
			r.counts.add(n, -1)
		} else {
			kept = append(kept, n)
		}
	}
	dropped := len(r.notes) - len(kept)
	clear(r.notes[len(kept):])
	r.notes = kept
	return dropped
}

// userUnread is one user's unread notifications by room.
type userUnread map[string]*roomUnread

func (u userUnread) room(roomID string) *roomUnread {
	r := u[roomID]
	if r == nil {
		r = &roomUnread{receipts: map[string]int64{}}
		u[roomID] = r
	}
	return r
}

// maxUnreadUsers bounds the users whose counts are kept in memory; past it, an
// arbitrary user is dropped (and reloaded from the database when needed again).
const maxUnreadUsers = 100_000

// unreadMemory holds the loaded users' counts and the evaluations not yet committed.
type unreadMemory struct {
	// store orders database writes that change counts (committing notification rows,
	// storing receipts: exclusive) against loading a user's counts from the database
	// (shared), so that a load sees each evaluation either in the database or pending,
	// and each receipt either in the database or applied to the loaded counts.
	store sync.RWMutex

	mu      sync.Mutex
	users   map[string]userUnread
	pending map[*evaluation]struct{} // evaluated, rows not yet committed
}

func newUnreadMemory() *unreadMemory {
	return &unreadMemory{users: map[string]userUnread{}, pending: map[*evaluation]struct{}{}}
}

// evaluated counts a new evaluation for the loaded users and keeps it pending until
// its rows are committed.
func (m *unreadMemory) evaluated(e *evaluation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending[e] = struct{}{}
	room := e.out.Event.RoomID().String()
	for i := range e.notes {
		n := &e.notes[i]
		if u := m.users[n.UserID]; u != nil {
			u.room(room).add(unreadNote{pos: n.StreamPos, thread: n.ThreadID, highlight: n.Highlight})
		}
	}
}

// committed drops evaluations whose rows are in the database (or given up on); the
// caller holds store exclusively.
func (m *unreadMemory) committed(evals []*evaluation) {
	m.mu.Lock()
	for _, e := range evals {
		delete(m.pending, e)
	}
	m.mu.Unlock()
}

// loadUnread loads a user's counts from the database unless they are in memory.
func (s *Service) loadUnread(ctx context.Context, userID string) error {
	m := s.unread
	m.mu.Lock()
	loaded := m.users[userID] != nil
	m.mu.Unlock()
	if loaded {
		return nil
	}
	m.store.RLock()
	defer m.store.RUnlock()
	notes, err := storage.UnreadNotificationsOf(ctx, s.db, userID)
	if err != nil {
		return err
	}
	receipts, err := storage.UserReceipts(ctx, s.db, userID)
	if err != nil {
		return err
	}
	u := userUnread{}
	for room, rs := range receipts {
		u.room(room).receipts = rs
	}
	for _, n := range notes {
		u.room(n.RoomID).add(unreadNote{pos: n.StreamPos, thread: n.ThreadID, highlight: n.Highlight})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users[userID] != nil {
		return nil // loaded meanwhile
	}
	// Evaluations not committed yet come after every committed one (rows are committed
	// in evaluation order); add them in stream order.
	var mine []storage.Notification
	for e := range m.pending {
		for i := range e.notes {
			if e.notes[i].UserID == userID {
				mine = append(mine, e.notes[i])
			}
		}
	}
	slices.SortFunc(mine, func(a, b storage.Notification) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	for _, n := range mine {
		u.room(n.RoomID).add(unreadNote{pos: n.StreamPos, thread: n.ThreadID, highlight: n.Highlight})
	}
	if len(m.users) >= maxUnreadUsers {
		for k := range m.users {
			delete(m.users, k)
			break
		}
	}
	m.users[userID] = u
	return nil
}

// totalUnread is a user's unread notifications over all rooms (the badge count).
func (s *Service) totalUnread(ctx context.Context, userID string) (int, error) {
	if err := s.loadUnread(ctx, userID); err != nil {
		return 0, err
	}
	s.unread.mu.Lock()
	defer s.unread.mu.Unlock()
	return s.unread.users[userID].unread(), nil
}

// readMarksChunk is how many users' read marks one transaction of saveReadMarks moves
// (the store lock is held for each, holding back notification writes and receipts).
const readMarksChunk = 500

// saveReadMarks moves the stored read marks (storage.UnreadNotificationsOf) of the users
// whose counts are in memory and who have read every notification to just past the
// evaluated position, so that their next load (after a restart) skips everything
// written so far. Called at shutdown and with the periodic pruning; a load moves the
// mark of its user too.
func (s *Service) saveReadMarks(ctx context.Context) error {
	m := s.unread
	m.mu.Lock()
	users := make([]string, 0, len(m.users))
	for u := range m.users {
		users = append(users, u)
	}
	m.mu.Unlock()
	for len(users) > 0 {
		part := users[:min(readMarksChunk, len(users))]
		users = users[len(part):]
		// Under the store lock no set is committed meanwhile, and an out-of-band
		// evaluation that would start below the mark forgets it in a later commit. Every
		// event up to the evaluated position is in memory: a user without unread
		// notifications has read all the sets written and pending, and later ones start
		// after the position.
		m.store.Lock()
		s.doneMu.Lock()
		mark := s.evalPos + 1
		s.doneMu.Unlock()
		var done []string
		m.mu.Lock()
		for _, userID := range part {
			if u := m.users[userID]; u != nil && u.unread() == 0 {
				done = append(done, userID)
			}
		}
		m.mu.Unlock()
		err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.SetUnreadFrom(ctx, tx, done, mark) })
		m.store.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// unread is the user's number of unread notifications over all rooms.
func (u userUnread) unread() int {
	n := 0
	for _, r := range u {
		n += r.counts.Notifications
	}
	return n
}
