package syncapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/storage"
)

// Presence states.
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// Presence timeouts: an online user with no activity for IdleTimeout becomes
// unavailable; a user with no /sync running for OfflineTimeout goes offline.
var (
	IdleTimeout    = 5 * time.Minute
	OfflineTimeout = 60 * time.Second
	presenceTick   = 10 * time.Second
)

// presenceTracker keeps presence in the database (changes take positions in the
// presence stream) and who is syncing or active in memory.
type presenceTracker struct {
	db   *storage.DB
	wake func(ctx context.Context, userID string)

	mu    sync.Mutex
	users map[string]*presenceLive
}

type presenceLive struct {
	state      string
	statusMsg  string
	lastActive time.Time
	syncing    int       // /sync requests in progress
	lastSync   time.Time // when the last one ended
	loaded     bool
}

// PresenceView is a user's presence as the API shows it.
type PresenceView struct {
	Presence        string `json:"presence"`
	StatusMsg       string `json:"status_msg,omitempty"`
	LastActiveAgo   int64  `json:"last_active_ago,omitempty"`
	CurrentlyActive bool   `json:"currently_active"`
}

func newPresenceTracker(db *storage.DB, wake func(ctx context.Context, userID string)) *presenceTracker {
	return &presenceTracker{db: db, wake: wake, users: map[string]*presenceLive{}}
}

// live returns the in-memory record of a user, loading the stored presence once.
// Called with mu held.
func (p *presenceTracker) live(ctx context.Context, userID string) *presenceLive {
	l := p.users[userID]
	if l == nil {
		l = &presenceLive{state: PresenceOffline}
		p.users[userID] = l
	}
	if !l.loaded {
		st, err := storage.GetPresence(ctx, p.db, userID)
		if err == nil {
			l.state, l.statusMsg, l.lastActive = st.State, st.StatusMsg, time.UnixMilli(st.LastActiveTS)
			l.loaded = true
		} else if errors.Is(err, storage.ErrNotFound) {
			l.loaded = true
		}
	}
	return l
}

// set stores a change and wakes the user's room-mates. statusMsg nil keeps the message.
func (p *presenceTracker) set(ctx context.Context, userID, state string, statusMsg *string, active bool) error {
	p.mu.Lock()
	l := p.live(ctx, userID)
	msg := l.statusMsg
	if statusMsg != nil {
		msg = *statusMsg
	}
	if active {
		l.lastActive = time.Now()
	}
	changed := l.state != state || l.statusMsg != msg
	l.state, l.statusMsg = state, msg
	lastActive := l.lastActive
	p.mu.Unlock()
	if !changed && !active {
		return nil
	}
	if !changed {
		return nil
	}
	err := p.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.PutPresence(ctx, tx, storage.Presence{UserID: userID, State: state, StatusMsg: msg, LastActiveTS: lastActive.UnixMilli()})
		return err
	})
	if err != nil {
		return err
	}
	p.wake(ctx, userID)
	return nil
}

// get returns a user's presence.
func (p *presenceTracker) get(ctx context.Context, userID string) (PresenceView, error) {
	st, err := storage.GetPresence(ctx, p.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return PresenceView{Presence: PresenceOffline}, nil
	}
	if err != nil {
		return PresenceView{}, err
	}
	return p.view(st), nil
}

func (p *presenceTracker) view(st storage.Presence) PresenceView {
	v := PresenceView{Presence: st.State, StatusMsg: st.StatusMsg}
	lastActive := time.UnixMilli(st.LastActiveTS)
	p.mu.Lock()
	if l := p.users[st.UserID]; l != nil && l.lastActive.After(lastActive) {
		lastActive = l.lastActive
	}
	p.mu.Unlock()
	if st.LastActiveTS > 0 || !lastActive.IsZero() {
		v.LastActiveAgo = max(time.Since(lastActive).Milliseconds(), 0)
	}
	v.CurrentlyActive = st.State == PresenceOnline && time.Since(lastActive) < 2*time.Minute
	return v
}

// syncStarted records a /sync request of userID with set_presence (online when empty)
// and returns the function to call when it ends.
func (p *presenceTracker) syncStarted(ctx context.Context, userID, setPresence string) func() {
	if setPresence == "" {
		setPresence = PresenceOnline
	}
	p.mu.Lock()
	l := p.live(ctx, userID)
	l.syncing++
	cur := l.state
	p.mu.Unlock()
	var target string
	switch setPresence {
	case PresenceOnline:
		if cur == PresenceOffline {
			target = PresenceOnline
		}
	case PresenceUnavailable:
		if cur != PresenceUnavailable {
			target = PresenceUnavailable
		}
	}
	if target != "" {
		if err := p.set(ctx, userID, target, nil, target == PresenceOnline); err != nil {
			logrus.WithError(err).WithField("user_id", userID).Warn("presence update failed")
		}
	}
	return func() {
		p.mu.Lock()
		l.syncing--
		l.lastSync = time.Now()
		p.mu.Unlock()
	}
}

// active records activity of a user (an event sent): an idle user is online again.
func (p *presenceTracker) active(ctx context.Context, userID string) {
	p.mu.Lock()
	l := p.live(ctx, userID)
	l.lastActive = time.Now()
	idle := l.state == PresenceUnavailable
	p.mu.Unlock()
	if idle {
		if err := p.set(ctx, userID, PresenceOnline, nil, true); err != nil {
			logrus.WithError(err).WithField("user_id", userID).Warn("presence update failed")
		}
	}
}

// run applies the idle and offline timeouts until ctx ends.
func (p *presenceTracker) run(ctx context.Context) {
	t := time.NewTicker(presenceTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.sweep(ctx, time.Now())
	}
}

func (p *presenceTracker) sweep(ctx context.Context, now time.Time) {
	type change struct{ user, state string }
	var changes []change
	p.mu.Lock()
	for u, l := range p.users {
		switch {
		case l.state != PresenceOffline && l.syncing == 0 && !l.lastSync.IsZero() && now.Sub(l.lastSync) > OfflineTimeout:
			changes = append(changes, change{u, PresenceOffline})
		case l.state == PresenceOnline && !l.lastActive.IsZero() && now.Sub(l.lastActive) > IdleTimeout:
			changes = append(changes, change{u, PresenceUnavailable})
		case l.state == PresenceOffline && l.syncing == 0:
			delete(p.users, u) // nothing to remember
		}
	}
	p.mu.Unlock()
	for _, c := range changes {
		if err := p.set(ctx, c.user, c.state, nil, false); err != nil {
			logrus.WithError(err).WithField("user_id", c.user).Warn("presence timeout failed")
		}
	}
}
