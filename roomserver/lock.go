package roomserver

import (
	"context"
	"sync"
)

// RoomLocker serialises the writers of a room: one writer per room at a time, rooms
// in parallel. The roomserver holds a room's lock from reading the room's head
// (forward extremities and current state) until the transaction that moves the head
// has committed.
//
// The in-process implementation (NewLocalLocker) is enough for one process. Several
// processes sharing one PostgreSQL replace it with PostgreSQL advisory locks
// (pg_advisory_lock on a hash of the room ID, held on a dedicated connection); such an
// implementation must report Exclusive() == false so the roomserver re-checks its
// cached room head against the database after taking the lock.
type RoomLocker interface {
	// Lock blocks until the caller holds the room's lock or ctx ends.
	Lock(ctx context.Context, roomID string) (unlock func(), err error)
	// Exclusive reports whether this process is the only writer of every room, so a
	// cached room head can be trusted without re-reading it.
	Exclusive() bool
}

// LocalLocker is an in-process RoomLocker.
type LocalLocker struct {
	mu    sync.Mutex
	rooms map[string]*roomMutex
}

type roomMutex struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

// NewLocalLocker returns an in-process RoomLocker.
func NewLocalLocker() *LocalLocker { return &LocalLocker{rooms: make(map[string]*roomMutex)} }

// Exclusive implements RoomLocker: a single process owns every room.
func (l *LocalLocker) Exclusive() bool { return true }

// Lock implements RoomLocker.
func (l *LocalLocker) Lock(ctx context.Context, roomID string) (func(), error) {
	l.mu.Lock()
	m := l.rooms[roomID]
	if m == nil {
		m = &roomMutex{ch: make(chan struct{}, 1)}
		l.rooms[roomID] = m
	}
	m.refs++
	l.mu.Unlock()
	select {
	case m.ch <- struct{}{}:
	case <-ctx.Done():
		l.release(roomID, m)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-m.ch
			l.release(roomID, m)
		})
	}, nil
}

func (l *LocalLocker) release(roomID string, m *roomMutex) {
	l.mu.Lock()
	m.refs--
	if m.refs == 0 {
		delete(l.rooms, roomID)
	}
	l.mu.Unlock()
}
