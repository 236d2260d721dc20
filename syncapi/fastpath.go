package syncapi

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// The fast path of long-polling /sync.
//
// Rebuilding a /sync response from the database costs about a millisecond of CPU; when
// one message wakes the 500 long-polls of a big room, that is half a second of CPU per
// message. Most wake-ups carry only new timeline events in rooms the user is joined to,
// and the sync service has seen each of them go by (OnNewEvent). So:
//
//   - the service keeps the last eventLogSize published events in memory (eventLog);
//   - a long-poll woken only by timeline events (Listener.OnlyEvents) answers from that
//     log when everything since its position is there and simple: no state event or
//     redaction in its rooms, no membership change of the user, at most the timeline
//     limit per room, no lazy-loaded member the device was not sent yet. Anything else falls back to the
//     database path, which stays the reference;
//   - a request whose since token is current (nothing new in any stream) goes straight
//     to waiting without building an empty response from the database ("quiet");
//   - a request whose token is behind only by such events (the client came back after
//     the next message, the common case in a busy room) is answered from the log at
//     once, by the same rules ("catch-up").
//
// The answers use the same event visibility check, filters and formatter as the
// database path. Positions of the other streams are left at the request's since token,
// so whatever the fast path does not look at is delivered by the next request.
//
// The log is only complete when every event reaches this process's OnNewEvent, that is
// with the in-process notifier: another Notifier implementation turns the fast path off.

// FastPathStats counts how long-polls were answered (for tests and diagnosis).
type FastPathStats struct {
	// Quiet: requests that went straight to waiting; Built: answers (empty or not)
	// built from the database while long-polling; Fast: wake-ups answered from the
	// event log; CatchUp: requests behind by a few events answered from the event log
	// without waiting; Fallback: wake-ups the event log could not answer.
	Quiet, Built, Fast, CatchUp, Fallback int64
}

type fastCounters struct{ quiet, built, fast, catchUp, fallback atomic.Int64 }

// FastPathStats returns the counters of the long-poll paths since start.
func (s *Service) FastPathStats() FastPathStats {
	c := &s.counters
	return FastPathStats{Quiet: c.quiet.Load(), Built: c.built.Load(), Fast: c.fast.Load(), CatchUp: c.catchUp.Load(),
		Fallback: c.fallback.Load()}
}

// eventLogSize is how many recent events the fast path can answer from.
const eventLogSize = 4096

// cacheTTL bounds how long the in-memory copies of stream positions, ignored users and
// key counts are trusted without a wake-up invalidating them (writes that forgot to
// wake anybody are still seen this late).
const cacheTTL = 5 * time.Second

// logEntry is a published event.
type logEntry struct {
	pos    int64
	room   string
	ev     *roomserver.Event
	state  bool
	member string // state key of an m.room.member event

	once         sync.Once
	senderMember string // the sender's member event before this event (lazy loading)
	err          error

	gapOnce sync.Once
	gap     bool // a hole in the room's history just before the event
	gapErr  error
}

// gapBefore reports whether the room's history has a hole before the event (see
// Roomserver.GapsBefore), computed once for all listeners.
func (e *logEntry) gapBefore(ctx context.Context, rooms *roomserver.Roomserver) (bool, error) {
	e.gapOnce.Do(func() {
		gaps, err := rooms.GapsBefore(context.WithoutCancel(ctx), []*roomserver.Event{e.ev})
		if err != nil {
			e.gapErr = err
			return
		}
		e.gap = gaps[0]
	})
	return e.gap, e.gapErr
}

// senderMemberID returns the event ID of the sender's member event in the state
// before the event, computed once for all listeners.
func (e *logEntry) senderMemberID(ctx context.Context, rooms *roomserver.Roomserver) (string, error) {
	e.once.Do(func() {
		ev, err := rooms.StateEventAt(context.WithoutCancel(ctx), e.ev.EventID(), spec.MRoomMember, string(e.ev.SenderID()), false)
		if err != nil {
			e.err = err
			return
		}
		if ev != nil {
			e.senderMember = ev.EventID()
		}
	})
	return e.senderMember, e.err
}

// eventLog is a ring of the latest published events, in stream order.
type eventLog struct {
	mu      sync.RWMutex
	entries []*logEntry
	head, n int
	started bool
	floor   int64 // every event published with a position above floor is in entries
	top     int64 // highest published position
}

func newEventLog(size int) *eventLog { return &eventLog{entries: make([]*logEntry, size)} }

func (l *eventLog) add(e *logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		// Events before the first one seen may have been published before the service
		// was wired: the log answers only for what comes after.
		l.started = true
		l.floor = e.pos - 1
	}
	if l.n == len(l.entries) {
		l.floor = l.entries[l.head].pos
		l.entries[l.head] = nil
		l.head = (l.head + 1) % len(l.entries)
		l.n--
	}
	l.entries[(l.head+l.n)%len(l.entries)] = e
	l.n++
	l.top = max(l.top, e.pos)
}

// after returns the logged events with a position above pos and the highest published
// position; ok is false when the log may miss some of them.
func (l *eventLog) after(pos int64) (out []*logEntry, top int64, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if !l.started || pos < l.floor {
		return nil, 0, false
	}
	at := func(i int) *logEntry { return l.entries[(l.head+i)%len(l.entries)] }
	first := sort.Search(l.n, func(i int) bool { return at(i).pos > pos })
	if first < l.n {
		out = make([]*logEntry, 0, l.n-first)
		for i := first; i < l.n; i++ {
			out = append(out, at(i))
		}
	}
	return out, max(l.top, pos), true
}

// userRooms are a user's memberships, cached until one of its member events is
// published.
type userRooms struct {
	all       []roomserver.RoomMembership
	joined    []string
	joinedSet map[string]bool
	maxPos    int64 // the newest membership's stream position
}

type memberCache struct {
	mu    sync.Mutex
	gen   uint64 // raised by every invalidation: a read that raced one is not stored
	users map[string]*userRooms
}

const memberCacheMaxUsers = 100_000

func (c *memberCache) invalidate(userID string) {
	c.mu.Lock()
	c.gen++
	delete(c.users, userID)
	c.mu.Unlock()
}

// current reports whether ur is still the cached memberships of userID (no member
// event of the user was published since it was read).
func (c *memberCache) current(userID string, ur *userRooms) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[userID] == ur
}

// userRooms returns the user's memberships from the cache or the database.
func (s *Service) userRooms(ctx context.Context, userID string) (*userRooms, error) {
	c := &s.members
	c.mu.Lock()
	if ur := c.users[userID]; ur != nil {
		c.mu.Unlock()
		return ur, nil
	}
	gen := c.gen
	c.mu.Unlock()
	ms, err := s.rooms.RoomsOfUser(ctx, userID, "")
	if err != nil {
		return nil, err
	}
	ur := &userRooms{all: ms, joinedSet: map[string]bool{}}
	for _, m := range ms {
		if m.Membership == spec.Join {
			ur.joined = append(ur.joined, m.RoomID)
			ur.joinedSet[m.RoomID] = true
		}
		ur.maxPos = max(ur.maxPos, m.StreamPos)
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.users) >= memberCacheMaxUsers {
			c.users = map[string]*userRooms{}
		}
		c.users[userID] = ur
	}
	c.mu.Unlock()
	return ur, nil
}

// cached is a value read from the database, trusted while no wake-up other than new
// timeline events happened (gen) and for at most cacheTTL.
type cached[T any] struct {
	gen int64
	at  time.Time
	v   T
}

// memo is a small map of cached values.
type memo[T any] struct {
	mu sync.Mutex
	m  map[string]cached[T]
}

func (m *memo[T]) get(key string, gen int64) (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.m[key]
	if !ok || c.gen != gen || time.Since(c.at) > cacheTTL {
		var zero T
		return zero, false
	}
	return c.v, true
}

func (m *memo[T]) put(key string, gen int64, v T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= memberCacheMaxUsers {
		m.m = map[string]cached[T]{}
	}
	m.m[key] = cached[T]{gen: gen, at: time.Now(), v: v}
}

// streamPositions returns the positions of the database streams (account data,
// receipts, presence, to-device, device lists), from memory when no wake-up that may
// have moved them happened since they were read.
func (s *Service) streamPositions(ctx context.Context) (map[string]int64, error) {
	gen := s.gen.Load()
	if pos, ok := s.positions.get("", gen); ok {
		return pos, nil
	}
	// One reader refreshes while the others (all woken together) wait for its result.
	s.positionsMu.Lock()
	defer s.positionsMu.Unlock()
	if pos, ok := s.positions.get("", gen); ok {
		return pos, nil
	}
	pos, err := storage.StreamPositions(ctx, s.db)
	if err != nil {
		return nil, err
	}
	s.positions.put("", gen, pos)
	return pos, nil
}

// userGens records, per user, the wake generation of the user's last WakeUsers. The
// per-user caches (ignored users, key counts) hold until the user is woken: a wake-up
// of a room or of another user (presence, typing, receipts of a big room) does not
// make every member re-read them.
type userGens struct {
	mu    sync.Mutex
	m     map[string]int64
	floor int64 // the generation when m was last emptied (bounded size)
}

func (g *userGens) bump(userIDs []string, gen int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]int64{}
	} else if len(g.m)+len(userIDs) > memberCacheMaxUsers {
		g.m = map[string]int64{}
		g.floor = gen // every entry cached before is stale
	}
	for _, u := range userIDs {
		g.m[u] = gen
	}
}

func (g *userGens) get(userID string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.m[userID], g.floor)
}

// cachedIgnored returns the user's ignored users (account data changes wake the user).
func (s *Service) cachedIgnored(ctx context.Context, userID string) (map[string]bool, error) {
	gen := s.userGens.get(userID)
	if v, ok := s.ignored.get(userID, gen); ok {
		return v, nil
	}
	v, err := s.ignoredUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	s.ignored.put(userID, gen, v)
	return v, nil
}

type keyCounts struct {
	otk      map[string]int
	fallback []string
}

// quietAnswer is the answer to a request with nothing new after its since token (the
// token again, with the device's key counts), or nil when there is news or the fast
// path cannot tell.
func (s *Service) quietAnswer(ctx context.Context, req Request) (*Response, error) {
	ur, err := s.userRooms(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	if quiet, err := s.quiet(ctx, req, *req.Since, ur); !quiet || err != nil || !s.members.current(req.UserID, ur) {
		return nil, err // news, or memberships changed while they were read
	}
	kc, err := s.cachedKeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return nil, err
	}
	s.counters.quiet.Add(1)
	return &Response{NextBatch: req.Since.String(), OTKCounts: kc.otk, FallbackKeyTypes: kc.fallback, next: *req.Since}, nil
}

// cachedKeyCounts returns the device's one-time key counts and unused fallback key
// types. Uploads wake the user; claims by others do not, so a count may be up to
// cacheTTL old (the next database build refreshes it).
func (s *Service) cachedKeyCounts(ctx context.Context, userID, deviceID string) (keyCounts, error) {
	gen := s.userGens.get(userID)
	key := userID + "|" + deviceID
	if v, ok := s.keys.get(key, gen); ok {
		return v, nil
	}
	var kc keyCounts
	var err error
	if kc.otk, err = storage.OneTimeKeyCounts(ctx, s.db, userID, deviceID); err != nil {
		return kc, err
	}
	if kc.fallback, err = storage.UnusedFallbackKeyTypes(ctx, s.db, userID, deviceID); err != nil {
		return kc, err
	}
	if kc.otk == nil {
		kc.otk = map[string]int{}
	}
	if kc.fallback == nil {
		kc.fallback = []string{}
	}
	s.keys.put(key, gen, kc)
	return kc, nil
}

// fastEligible reports whether a request's filter and options allow the fast path.
func fastEligible(req Request) bool {
	return req.Since != nil && !req.FullState && req.Format != nil
}

// quiet reports whether nothing happened for the user after since in any stream, so a
// long-poll can wait without building an (empty) answer from the database. It errs on
// the side of false.
func (s *Service) quiet(ctx context.Context, req Request, since Token, ur *userRooms) (bool, error) {
	if ur.maxPos > since.Events {
		return false, nil // joined, invited, left... since
	}
	if ok, err := s.streamsQuiet(ctx, req, since, ur); !ok || err != nil {
		return false, err
	}
	rf := req.Filter.GetRoom()
	for _, room := range ur.joined {
		if !rf.MatchesRoom(room) {
			continue
		}
		news, err := s.roomHasEventsAfter(ctx, room, since.Events)
		if err != nil || news {
			return false, err
		}
	}
	return true, nil
}

// streamsQuiet reports whether the streams other than room events hold nothing for the
// request after since. Streams its filter drops entirely (presence, receipts, typing,
// account data) do not count.
func (s *Service) streamsQuiet(ctx context.Context, req Request, since Token, ur *userRooms) (bool, error) {
	if since.ToDevice > 0 && s.needsAck(req.UserID, req.DeviceID, since.ToDevice) {
		return false, nil // the build deletes the acknowledged messages
	}
	pos, err := s.streamPositions(ctx)
	if err != nil {
		return false, err
	}
	if since.ToDevice < pos[storage.StreamToDevice] || since.DeviceLists < pos[storage.StreamDeviceList] {
		return false, nil
	}
	rf := req.Filter.GetRoom()
	pf := req.Filter.GetPresence()
	ef := rf.GetEphemeral()
	if since.Presence < pos[storage.StreamPresence] && !pf.ExcludesType("m.presence") && pf.LimitOr(1) != 0 {
		return false, nil
	}
	if since.AccountData < pos[storage.StreamAccountData] &&
		!(req.Filter.GetAccountData().ExcludesAllTypes() && rf.GetAccountData().ExcludesAllTypes()) {
		return false, nil
	}
	if since.Receipts < pos[storage.StreamReceipts] && !ef.ExcludesType("m.receipt") {
		return false, nil
	}
	if since.Typing < s.typing.Pos() && !ef.ExcludesType("m.typing") {
		for _, room := range ur.joined {
			if _, changed := s.typing.Since(room, since.Typing); changed && rf.MatchesRoom(room) {
				return false, nil
			}
		}
	}
	return true, nil
}

// fastAnswer tries to answer a long-poll woken by new timeline events from the event
// log. base is a token the user has nothing new before (since, or the last empty
// answer). It returns ok false when the database path must answer; ok with a nil
// response when nothing new is for this request (wait again from the returned base).
func (s *Service) fastAnswer(ctx context.Context, req Request, base Token, ur *userRooms) (resp *Response, next Token, ok bool, err error) {
	entries, top, ok := s.log.after(base.Events)
	if !ok {
		return nil, base, false, nil
	}
	// A member event of the user published after ur was read invalidated it.
	if !s.members.current(req.UserID, ur) {
		return nil, base, false, nil
	}
	next = base
	next.Events = top
	rf := req.Filter.GetRoom()
	tf := rf.GetTimeline()
	limit := tf.LimitOr(filter.DefaultTimelineLimit)
	joined := ur.joinedSet
	var ignored map[string]bool
	byRoom := map[string][]*roomserver.Event{}
	logged := map[string]*logEntry{}
	var rooms []string
	for _, e := range entries {
		if e.member == req.UserID {
			return nil, base, false, nil // the user's own membership changed
		}
		if !joined[e.room] || !rf.MatchesRoom(e.room) {
			continue
		}
		if e.state || e.ev.Type() == spec.MRoomRedaction {
			// State changes need the state section; a redaction may strip an event
			// of the same window, which the database copy shows redacted.
			return nil, base, false, nil
		}
		if gap, err := e.gapBefore(ctx, s.rooms); err != nil {
			return nil, base, false, err
		} else if gap {
			return nil, base, false, nil // the timeline is limited at the hole
		}
		if ignored == nil {
			if ignored, err = s.cachedIgnored(ctx, req.UserID); err != nil {
				return nil, base, false, err
			}
			if ignored == nil {
				ignored = map[string]bool{}
			}
		}
		sender := string(e.ev.SenderID())
		if ignored[sender] || !tf.Matches(e.room, e.ev.Type(), sender, hasURL(e.ev)) {
			continue
		}
		if byRoom[e.room] == nil {
			rooms = append(rooms, e.room)
		}
		byRoom[e.room] = append(byRoom[e.room], e.ev)
		logged[e.ev.EventID()] = e
	}
	if len(rooms) == 0 {
		return nil, next, true, nil
	}
	sf := rf.GetState()
	resp = &Response{Rooms: &Rooms{Join: make(map[string]*JoinedRoom, len(rooms))}} // empty sections are left out anyway
	for _, room := range rooms {
		evs, err := s.rooms.VisibleEvents(ctx, req.UserID, byRoom[room])
		if err != nil {
			return nil, base, false, err
		}
		if len(evs) == 0 {
			continue
		}
		if len(evs) > limit {
			return nil, base, false, nil // a limited timeline needs the state at its start
		}
		if sf.LazyLoad() && sf.Matches(room, spec.MRoomMember, "", false) {
			// Every sender's member event must already be with the device.
			for _, ev := range evs {
				if sf.RedundantMembers() {
					return nil, base, false, nil
				}
				id, err := logged[ev.EventID()].senderMemberID(ctx, s.rooms)
				if err != nil {
					return nil, base, false, err
				}
				if id != "" && !s.lazy.sent(req.UserID, req.DeviceID, room, string(ev.SenderID()), id) {
					return nil, base, false, nil
				}
			}
		}
		jr := &JoinedRoom{Ephemeral: EventList{Events: []any{}}, AccountData: EventList{Events: []any{}}}
		jr.Timeline.PrevBatch = roomserver.SyncPrevBatch(evs[0], top).String()
		if jr.Timeline.Events, err = req.Format(ctx, evs); err != nil {
			return nil, base, false, err
		}
		if req.UseStateAfter {
			jr.StateAfter = &EventList{Events: []any{}}
		} else {
			jr.State = &EventList{Events: []any{}}
		}
		if rc, ok := s.unread.(RoomUnreadCounter); ok {
			tf := req.Filter.GetRoom().GetTimeline()
			c, err := s.roomUnread(ctx, rc, req.UserID, room, evs[len(evs)-1].StreamPos, tf.ThreadNotifications())
			if err != nil {
				return nil, base, false, err
			}
			setUnread(jr, c, tf.ThreadNotifications())
		} else if err := s.addUnread(ctx, req, room, jr); err != nil {
			return nil, base, false, err
		}
		resp.Rooms.Join[room] = jr
	}
	if len(resp.Rooms.Join) == 0 {
		return nil, next, true, nil
	}
	kc, err := s.cachedKeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return nil, base, false, err
	}
	resp.OTKCounts, resp.FallbackKeyTypes = kc.otk, kc.fallback
	resp.next = next
	resp.NextBatch = next.String()
	return resp, next, true, nil
}

// addUnread fills a joined room's notification counts.
func (s *Service) addUnread(ctx context.Context, req Request, roomID string, jr *JoinedRoom) error {
	if s.unread == nil {
		return nil
	}
	tf := req.Filter.GetRoom().GetTimeline()
	c, err := s.unread.UnreadCounts(ctx, req.UserID, roomID, tf.ThreadNotifications())
	if err != nil {
		return err
	}
	setUnread(jr, c, tf.ThreadNotifications())
	return nil
}

func setUnread(jr *JoinedRoom, c UnreadCounts, threads bool) {
	jr.UnreadNotifications = &NotificationCounts{HighlightCount: c.Highlights, NotificationCount: c.Notifications}
	if threads && len(c.Threads) > 0 {
		jr.UnreadThreadNotifications = map[string]NotificationCounts{}
		for id, tc := range c.Threads {
			jr.UnreadThreadNotifications[id] = NotificationCounts{HighlightCount: tc.Highlights, NotificationCount: tc.Notifications}
		}
	}
}
