package syncapi

import (
	"sync"
	"sync/atomic"
)

// Notifier wakes long-polling /sync requests. The in-process implementation
// (LocalNotifier) is the default; a PostgreSQL LISTEN/NOTIFY implementation for several
// processes can replace it by forwarding the Wake calls to every process.
//
// A request registers with Listen before it reads the streams, and waits on the
// listener only when it found nothing: anything written after it read is then
// guaranteed to wake it, so no update is missed and an idle request costs no CPU.
type Notifier interface {
	// Listen registers interest in a user's data (account data, to-device messages of
	// its device, invites) and in rooms (events, typing, receipts, presence of members).
	Listen(userID, deviceID string, roomIDs []string) *Listener
	// WakeRooms wakes the listeners of rooms.
	WakeRooms(roomIDs ...string)
	// WakeRoomEvents wakes the listeners of rooms for new timeline events that change no
	// state: a listener woken only this way may answer from the events it was given.
	WakeRoomEvents(roomIDs ...string)
	// WakeUsers wakes every listener of users.
	WakeUsers(userIDs ...string)
}

// Listener is one waiting request. C is closed when it is woken.
type Listener struct {
	C <-chan struct{}

	c      chan struct{}
	once   sync.Once
	user   string
	rooms  []string
	closer func(*Listener)
	// other is set by any wake-up but WakeRoomEvents (before C closes).
	other atomic.Bool
}

func (l *Listener) wake(events bool) {
	if !events {
		l.other.Store(true)
	}
	l.once.Do(func() { close(l.c) })
}

// OnlyEvents reports whether every wake-up of the listener so far came from
// WakeRoomEvents.
func (l *Listener) OnlyEvents() bool { return !l.other.Load() }

// Close unregisters the listener.
func (l *Listener) Close() {
	if l.closer != nil {
		l.closer(l)
	}
}

// LocalNotifier is the in-process Notifier.
type LocalNotifier struct {
	mu    sync.Mutex
	users map[string]map[*Listener]struct{}
	rooms map[string]map[*Listener]struct{}
}

// NewLocalNotifier returns an in-process notifier.
func NewLocalNotifier() *LocalNotifier {
	return &LocalNotifier{users: map[string]map[*Listener]struct{}{}, rooms: map[string]map[*Listener]struct{}{}}
}

func add(m map[string]map[*Listener]struct{}, k string, l *Listener) {
	set := m[k]
	if set == nil {
		set = map[*Listener]struct{}{}
		m[k] = set
	}
	set[l] = struct{}{}
}

func remove(m map[string]map[*Listener]struct{}, k string, l *Listener) {
	if set := m[k]; set != nil {
		delete(set, l)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// Listen implements Notifier.
func (n *LocalNotifier) Listen(userID, deviceID string, roomIDs []string) *Listener {
	c := make(chan struct{})
	l := &Listener{C: c, c: c, user: userID, rooms: roomIDs, closer: n.close}
	n.mu.Lock()
	add(n.users, userID, l)
	for _, r := range roomIDs {
		add(n.rooms, r, l)
	}
	n.mu.Unlock()
	return l
}

func (n *LocalNotifier) close(l *Listener) {
	n.mu.Lock()
	remove(n.users, l.user, l)
	for _, r := range l.rooms {
		remove(n.rooms, r, l)
	}
	n.mu.Unlock()
}

// WakeRooms implements Notifier.
func (n *LocalNotifier) WakeRooms(roomIDs ...string) { n.wakeRooms(false, roomIDs) }

// WakeRoomEvents implements Notifier.
func (n *LocalNotifier) WakeRoomEvents(roomIDs ...string) { n.wakeRooms(true, roomIDs) }

func (n *LocalNotifier) wakeRooms(events bool, roomIDs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range roomIDs {
		for l := range n.rooms[r] {
			l.wake(events)
		}
	}
}

// WakeUsers implements Notifier.
func (n *LocalNotifier) WakeUsers(userIDs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range userIDs {
		for l := range n.users[u] {
			l.wake(false)
		}
	}
}
