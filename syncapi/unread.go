package syncapi

import (
	"context"
	"sync"
	"time"
)

// RoomUnreadCounter is an UnreadCounter that can also count a whole room at once and
// tell when the notifications of new events are counted. The fast path uses it to
// read the counts of every woken member of a room with one query per new event.
type RoomUnreadCounter interface {
	UnreadCounter
	// RoomUnreadCounts returns the counts of every user of the room with unread
	// notifications (others have none): Notifications and Highlights are the room's
	// totals, Threads the counts per thread with the main timeline under "".
	RoomUnreadCounts(ctx context.Context, roomID string) (map[string]UnreadCounts, error)
	// WaitCounted blocks until the events up to stream position pos are counted, or
	// ctx ends.
	WaitCounted(ctx context.Context, pos int64) error
}

// countWait bounds how long an answer waits for the counts of the events it carries:
// past it, the counts are read as they are (as the database path does).
const countWait = 250 * time.Millisecond

// roomCounts is one read of a room's counts, shared by the answers for the same event.
type roomCounts struct {
	upTo   int64  // the room's last event the counts were read for
	reads  uint64 // the room's read generation when read
	done   chan struct{}
	counts map[string]UnreadCounts
	err    error
}

type unreadCache struct {
	mu    sync.Mutex
	rooms map[string]*roomCounts
	reads map[string]uint64 // room → read receipts seen (resets counts)
}

// markRead notes that a user's counts in a room may have dropped.
func (c *unreadCache) markRead(roomID string) {
	c.mu.Lock()
	if c.reads == nil {
		c.reads = map[string]uint64{}
	}
	c.reads[roomID]++
	c.mu.Unlock()
}

// roomUnread returns a user's counts in a room for an answer whose last event in the
// room is at upTo: the first answer for that event waits (briefly) for the push service
// to count it and reads the room; the others reuse that read.
func (s *Service) roomUnread(ctx context.Context, rc RoomUnreadCounter, userID, roomID string, upTo int64,
	threads bool) (UnreadCounts, error) {
	c := &s.unreadRooms
	c.mu.Lock()
	if c.rooms == nil {
		c.rooms = map[string]*roomCounts{}
	}
	reads := c.reads[roomID]
	e := c.rooms[roomID]
	mine := false
	if e == nil || e.upTo < upTo || e.reads != reads {
		e = &roomCounts{upTo: upTo, reads: reads, done: make(chan struct{})}
		if len(c.rooms) >= memberCacheMaxUsers {
			c.rooms = map[string]*roomCounts{}
		}
		c.rooms[roomID] = e
		mine = true
	}
	c.mu.Unlock()
	if mine {
		wctx, cancel := context.WithTimeout(ctx, countWait)
		_ = rc.WaitCounted(wctx, upTo) // past the bound, counts are read as they are
		cancel()
		e.counts, e.err = rc.RoomUnreadCounts(context.WithoutCancel(ctx), roomID)
		close(e.done)
	} else {
		select {
		case <-e.done:
		case <-ctx.Done():
			return UnreadCounts{}, ctx.Err()
		}
	}
	if e.err != nil {
		return UnreadCounts{}, e.err
	}
	uc := e.counts[userID]
	if !threads {
		return UnreadCounts{Notifications: uc.Notifications, Highlights: uc.Highlights}, nil
	}
	main := uc.Threads[""]
	out := UnreadCounts{Notifications: main.Notifications, Highlights: main.Highlights}
	for id, tc := range uc.Threads {
		if id == "" {
			continue
		}
		if out.Threads == nil {
			out.Threads = map[string]UnreadCounts{}
		}
		out.Threads[id] = tc
	}
	return out, nil
}
