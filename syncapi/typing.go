package syncapi

import (
	"sort"
	"sync"
	"time"
)

// MaxTypingTimeout caps how long a typing notification lasts.
const MaxTypingTimeout = 30 * time.Second

// Typing holds typing notifications in memory. Each change takes a new position in the
// typing stream; an expiry is a timer, not a polling loop.
type Typing struct {
	mu    sync.Mutex
	pos   int64
	rooms map[string]*roomTyping
	wake  func(roomID string)
}

type roomTyping struct {
	pos   int64 // position of the last change
	users map[string]*typingEntry
}

// typingEntry is one user typing; its identity tells an expiry timer whether it is
// still the current entry.
type typingEntry struct{ timer *time.Timer }

func newTyping(wake func(roomID string)) *Typing {
	// Start from the clock so that positions handed out before a restart stay lower.
	return &Typing{pos: time.Now().UnixMilli(), rooms: map[string]*roomTyping{}, wake: wake}
}

// Pos returns the current position of the typing stream.
func (t *Typing) Pos() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// Set marks userID as typing in roomID for timeout (capped at MaxTypingTimeout), or as
// not typing.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	if timeout <= 0 || timeout > MaxTypingTimeout {
		timeout = MaxTypingTimeout
	}
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil {
		rt = &roomTyping{users: map[string]*typingEntry{}}
		t.rooms[roomID] = rt
	}
	old, was := rt.users[userID]
	if was {
		old.timer.Stop()
		delete(rt.users, userID)
	}
	if typing {
		entry := &typingEntry{}
		// The timer's function takes t.mu, held here, so it sees entry.timer set.
		entry.timer = time.AfterFunc(timeout, func() { t.expire(roomID, userID, entry) })
		rt.users[userID] = entry
	}
	changed := typing != was
	if changed {
		t.pos++
		rt.pos = t.pos
	}
	if len(rt.users) == 0 {
		delete(t.rooms, roomID)
		if changed {
			// Keep the position of the change for readers behind it.
			t.rooms[roomID] = rt
		}
	}
	t.mu.Unlock()
	if changed {
		t.wake(roomID)
	}
}

func (t *Typing) expire(roomID, userID string, entry *typingEntry) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil || rt.users[userID] != entry {
		t.mu.Unlock()
		return
	}
	delete(rt.users, userID)
	t.pos++
	rt.pos = t.pos
	t.mu.Unlock()
	t.wake(roomID)
}

// Since returns the users typing in roomID when it changed after position since
// (changed false otherwise). since 0 returns the current list when someone types.
func (t *Typing) Since(roomID string, since int64) (users []string, changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		return nil, false
	}
	if since == 0 {
		if len(rt.users) == 0 {
			return nil, false
		}
	} else if rt.pos <= since {
		return nil, false
	}
	users = make([]string, 0, len(rt.users))
	for u := range rt.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users, true
}
