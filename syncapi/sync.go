package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomserver/invitefilter"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// Request is a parsed /sync request.
type Request struct {
	UserID   string
	DeviceID string
	// Since is nil for an initial sync.
	Since     *Token
	Filter    *filter.Filter
	FullState bool
	// UseStateAfter asks for state_after (the state up to the end of the timeline)
	// instead of state (up to its start).
	UseStateAfter bool
	// SetPresence is online (default), unavailable or offline.
	SetPresence string
	Timeout     time.Duration
	// Format renders room events as the client sees them (clientapi's formatter).
	Format func(ctx context.Context, evs []*roomserver.Event) ([]any, error)
}

// Response is the /sync response body.
type Response struct {
	NextBatch        string         `json:"next_batch"`
	Rooms            *Rooms         `json:"rooms,omitempty"`
	Presence         *EventList     `json:"presence,omitempty"`
	AccountData      *EventList     `json:"account_data,omitempty"`
	ToDevice         *EventList     `json:"to_device,omitempty"`
	DeviceLists      *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts        map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`

	next Token
}

// Next returns the response's next_batch token.
func (r *Response) Next() Token { return r.next }

// EventList is {"events": [...]}.
type EventList struct {
	Events []any `json:"events"`
}

// DeviceLists is the device_lists section.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// Rooms is the rooms section.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join,omitempty"`
	Invite map[string]*InvitedRoom `json:"invite,omitempty"`
	Knock  map[string]*KnockedRoom `json:"knock,omitempty"`
	Leave  map[string]*LeftRoom    `json:"leave,omitempty"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []any  `json:"events"`
	Limited   bool   `json:"limited"`
	PrevBatch string `json:"prev_batch,omitempty"`
}

// Summary is a joined room's summary.
type Summary struct {
	Heroes             []string `json:"m.heroes,omitempty"`
	JoinedMemberCount  *int     `json:"m.joined_member_count,omitempty"`
	InvitedMemberCount *int     `json:"m.invited_member_count,omitempty"`
}

// NotificationCounts are unread notification counts.
type NotificationCounts struct {
	HighlightCount    int64 `json:"highlight_count"`
	NotificationCount int64 `json:"notification_count"`
}

// JoinedRoom is a room of rooms.join.
type JoinedRoom struct {
	Summary                   *Summary                      `json:"summary,omitempty"`
	State                     *EventList                    `json:"state,omitempty"`
	StateAfter                *EventList                    `json:"state_after,omitempty"`
	Timeline                  Timeline                      `json:"timeline"`
	Ephemeral                 EventList                     `json:"ephemeral"`
	AccountData               EventList                     `json:"account_data"`
	UnreadNotifications       *NotificationCounts           `json:"unread_notifications,omitempty"`
	UnreadThreadNotifications map[string]NotificationCounts `json:"unread_thread_notifications,omitempty"`
}

// InvitedRoom is a room of rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is a room of rooms.knock.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is a room of rooms.leave.
type LeftRoom struct {
	State       *EventList `json:"state,omitempty"`
	StateAfter  *EventList `json:"state_after,omitempty"`
	Timeline    Timeline   `json:"timeline"`
	AccountData EventList  `json:"account_data"`
}

// strippedEvent is a stripped state event (invite_state, knock_state).
//
// The m.room.create event is given in full (MSC4311, spec v1.16): clients use its
// event ID, room ID and timestamp to tell rooms apart (room version 12 room IDs are
// the create event's hash), so those fields are kept when known.
type strippedEvent struct {
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	StateKey       string          `json:"state_key"`
	Type           string          `json:"type"`
	EventID        string          `json:"event_id,omitempty"`
	RoomID         string          `json:"room_id,omitempty"`
	OriginServerTS int64           `json:"origin_server_ts,omitempty"`
}

// basicEvent is an event with only a type and content (account data, typing, receipts).
type basicEvent struct {
	Type    string `json:"type"`
	Content any    `json:"content"`
}

// presenceEvent is an m.presence event.
type presenceEvent struct {
	Type    string       `json:"type"`
	Sender  string       `json:"sender"`
	Content PresenceView `json:"content"`
}

func (r *Response) empty() bool {
	if r.Rooms != nil && (len(r.Rooms.Join) > 0 || len(r.Rooms.Invite) > 0 || len(r.Rooms.Knock) > 0 || len(r.Rooms.Leave) > 0) {
		return false
	}
	if r.Presence != nil && len(r.Presence.Events) > 0 || r.AccountData != nil && len(r.AccountData.Events) > 0 ||
		r.ToDevice != nil && len(r.ToDevice.Events) > 0 {
		return false
	}
	return r.DeviceLists == nil || len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// CurrentToken returns the current position of every stream.
func (s *Service) CurrentToken(ctx context.Context) (Token, error) {
	pos, err := storage.StreamPositions(ctx, s.db)
	if err != nil {
		return Token{}, err
	}
	return Token{
		Events:      s.rooms.StreamPosition(),
		AccountData: pos[storage.StreamAccountData],
		Receipts:    pos[storage.StreamReceipts],
		Typing:      s.typing.Pos(),
		Presence:    pos[storage.StreamPresence],
		ToDevice:    pos[storage.StreamToDevice],
		DeviceLists: pos[storage.StreamDeviceList],
	}, nil
}

// Sync answers a /sync request. With a since token and a timeout it waits until there
// is something to return or the timeout passes (then it returns an empty response).
//
// A long-poll registers with the notifier before it looks for news, so whatever is
// written after it looked wakes it. Looking is cheap when the token is current
// (quiet); a wake-up by new timeline events is answered from memory when it can be
// (fastAnswer); anything else rebuilds the answer from the database.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	done := s.presence.syncStarted(ctx, req.UserID, req.SetPresence)
	defer done()
	if req.Since == nil || req.FullState {
		return s.build(ctx, req)
	}
	if req.Timeout <= 0 {
		// Clients poll with timeout 0 when they come back to the foreground; with no
		// news for them, answer from memory instead of the database.
		if s.log != nil && fastEligible(req) {
			if r, err := s.quietAnswer(ctx, req); r != nil || err != nil {
				return r, err
			}
		}
		return s.build(ctx, req)
	}
	timer := time.NewTimer(req.Timeout)
	defer timer.Stop()
	fast := s.log != nil && fastEligible(req)
	base := *req.Since // the user has nothing new before base
	var resp *Response // the last (empty) answer built from the database
	stale := 0         // reads of the user's memberships that a member event overtook
	for {
		var ur *userRooms
		var l *Listener
		if fast {
			var err error
			if ur, err = s.userRooms(ctx, req.UserID); err != nil {
				return nil, err
			}
			l = s.notifier.Listen(req.UserID, req.DeviceID, ur.joined)
			if !s.members.current(req.UserID, ur) {
				// A member event of the user was published between reading ur and
				// listening: its wake-up came too early for l. Read again (a few times:
				// under heavy membership churn the database path answers instead).
				l.Close()
				l = nil
				if stale++; stale < 3 {
					continue
				}
			} else if quiet, err := s.quiet(ctx, req, base, ur); err != nil {
				l.Close()
				return nil, err
			} else if quiet {
				s.counters.quiet.Add(1)
			} else if r, nextBase, ok, err := s.catchUp(ctx, req, base, ur); err != nil || (ok && r != nil) {
				l.Close()
				return r, err
			} else if ok {
				base = nextBase // only events this request filters out: wait
				if resp != nil {
					resp.next.Events = base.Events
					resp.NextBatch = resp.next.String()
				}
			} else {
				l.Close()
				l = nil
			}
		}
		if l == nil {
			ms, err := s.rooms.RoomsOfUser(ctx, req.UserID, "")
			if err != nil {
				return nil, err
			}
			var roomIDs []string
			for _, m := range ms {
				if m.Membership == spec.Join {
					roomIDs = append(roomIDs, m.RoomID)
				}
			}
			// Listen before reading: whatever is written after the read wakes us.
			l = s.notifier.Listen(req.UserID, req.DeviceID, roomIDs)
			s.counters.built.Add(1)
			if resp, err = s.build(ctx, req); err != nil || !resp.empty() {
				l.Close()
				return resp, err
			}
			base = resp.next
			if fast {
				// The fast path must know the memberships the listener follows.
				if ur, err = s.userRooms(ctx, req.UserID); err != nil {
					l.Close()
					return nil, err
				}
			}
		}
		for l != nil {
			select {
			case <-l.C:
			case <-timer.C:
				l.Close()
				return s.timedOut(ctx, req, base, resp)
			case <-ctx.Done():
				l.Close()
				return s.timedOut(ctx, req, base, resp)
			}
			if !fast {
				l.Close()
				break
			}
			other := !l.OnlyEvents()
			l.Close()
			r, nextBase, next, err := s.answerWake(ctx, req, base, ur, other)
			if err != nil || r != nil {
				if r != nil {
					s.counters.fast.Add(1)
				}
				return r, err
			}
			if next == nil {
				s.counters.fallback.Add(1)
				break
			}
			l = next
			base = nextBase
			if resp != nil {
				resp.next.Events = base.Events
				resp.NextBatch = resp.next.String()
			}
		}
	}
}

// answerWake answers a fast long-poll woken by new events (other: or by anything
// else) from the event log. It returns the answer; or, when nothing new is for the
// request, the base to wait from and a registered listener to wait on; or neither when
// the database path must answer.
//
// The woken listener is closed before the log is read: most wake-ups have an answer,
// and registering anew costs a turn of the notifier's lock per listener when a big
// room wakes them all. Only a request with nothing to say registers again, and then
// reads the log and the other streams once more, so that whatever was published
// while it was not listening is seen.
func (s *Service) answerWake(ctx context.Context, req Request, base Token, ur *userRooms, other bool) (
	*Response, Token, *Listener, error) {
	var l *Listener
	for {
		if other {
			// Woken by something else than timeline events: maybe by a stream the
			// filter drops (presence of room-mates with presence filtered out).
			ok, err := s.streamsQuiet(ctx, req, base, ur)
			if err != nil || !ok {
				if l != nil {
					l.Close()
				}
				return nil, base, nil, err
			}
		}
		r, nextBase, ok, err := s.fastAnswer(ctx, req, base, ur)
		if err != nil || !ok || r != nil {
			if l != nil {
				l.Close()
			}
			return r, base, nil, err
		}
		base = nextBase
		if l != nil {
			return nil, base, l, nil // listening since before this read: wait
		}
		l = s.notifier.Listen(req.UserID, req.DeviceID, ur.joined)
		other = true
	}
}

// catchUp answers a request that is behind (new events since its token, as when a
// client comes back for more while the room keeps busy) from the event log, as a
// wake-up would be: when the user's memberships did not change and no other stream
// holds anything for it, fastAnswer decides. The listener is registered already, so
// what is published after the log is read wakes it.
func (s *Service) catchUp(ctx context.Context, req Request, base Token, ur *userRooms) (*Response, Token, bool, error) {
	if ur.maxPos > base.Events {
		return nil, base, false, nil
	}
	if ok, err := s.streamsQuiet(ctx, req, base, ur); !ok || err != nil {
		return nil, base, false, err
	}
	r, next, ok, err := s.fastAnswer(ctx, req, base, ur)
	if err == nil && ok && r != nil {
		s.counters.catchUp.Add(1)
	}
	return r, next, ok, err
}

// timedOut answers a long-poll that found nothing: the last empty answer, else one
// built now (the request may have gone straight to waiting).
func (s *Service) timedOut(ctx context.Context, req Request, base Token, resp *Response) (*Response, error) {
	if resp != nil {
		return resp, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req.Since = &base
	return s.build(ctx, req)
}

// syncState is the work of one build.
type syncState struct {
	req     Request
	since   Token // zero for initial
	to      Token
	initial bool
	full    bool // initial or full_state
	resp    *Response
	shared  map[string]bool // users sharing a joined room with the requester (lazy)
	joined  []string
	changed map[string]bool // device_lists.changed candidates
	left    map[string]bool
	ignored map[string]bool      // m.ignored_user_list
	invites *invitefilter.Config // invites not allowed are not shown; loaded when needed
	// newMates are users who joined a room with the requester (or whose room the
	// requester joined) after since: their current presence is sent even when it did
	// not change, as the client has never been told it.
	newMates map[string]bool
}

func (s *Service) build(ctx context.Context, req Request) (*Response, error) {
	st := &syncState{req: req, initial: req.Since == nil, changed: map[string]bool{}, left: map[string]bool{},
		newMates: map[string]bool{}}
	if req.Since != nil {
		st.since = *req.Since
	}
	st.full = st.initial || req.FullState
	if st.initial {
		s.lazy.reset(req.UserID, req.DeviceID)
	}
	// The memberships are read after the token's positions: every membership change up
	// to the token is then in them. (Read before, a join committed in between would be
	// missing from the answer while its token went past it, and the room would never
	// come down.)
	cur, err := s.CurrentToken(ctx)
	if err != nil {
		return nil, err
	}
	var ms []roomserver.RoomMembership
	for try := 0; ; try++ {
		if ms, err = s.rooms.RoomsOfUser(ctx, req.UserID, ""); err != nil {
			return nil, err
		}
		// A membership may be newer than the position that is safe to read to (its
		// transaction committed, an older one is still in flight): move the token past
		// it once the position passes it, and read the memberships again, as more may
		// have changed meanwhile.
		newest := int64(0)
		for _, m := range ms {
			newest = max(newest, m.StreamPos)
		}
		if newest <= cur.Events || try >= 100 {
			break
		}
		if cur.Events = s.rooms.StreamPosition(); cur.Events < newest {
			time.Sleep(time.Millisecond)
			cur.Events = s.rooms.StreamPosition()
		}
	}
	st.to = cur.atLeast(st.since)
	st.resp = &Response{Rooms: &Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
		Knock: map[string]*KnockedRoom{}, Leave: map[string]*LeftRoom{}}}
	rf := req.Filter.GetRoom()

	for _, m := range ms {
		if m.Membership == spec.Join {
			st.joined = append(st.joined, m.RoomID)
		}
	}
	if st.ignored, err = s.ignoredUsers(ctx, req.UserID); err != nil {
		return nil, err
	}
	// Room account data, by room.
	var ad []storage.AccountData
	if st.since.AccountData < st.to.AccountData {
		if ad, err = storage.AccountDataSince(ctx, s.db, req.UserID, st.since.AccountData, st.to.AccountData); err != nil {
			return nil, err
		}
	}
	roomAD := map[string][]any{}
	var globalAD []any
	adf := req.Filter.GetAccountData()
	radf := rf.GetAccountData()
	for _, a := range ad {
		if a.RoomID == "" {
			if adf.Matches(a.Type, req.UserID) {
				globalAD = append(globalAD, basicEvent{Type: a.Type, Content: a.Content})
			}
		} else if radf.Matches(a.RoomID, a.Type, req.UserID, false) {
			roomAD[a.RoomID] = append(roomAD[a.RoomID], basicEvent{Type: a.Type, Content: a.Content})
		}
	}
	// Receipts of joined rooms.
	receipts, err := s.receipts(ctx, st)
	if err != nil {
		return nil, err
	}

	for _, m := range ms {
		if !rf.MatchesRoom(m.RoomID) || m.StreamPos > st.to.Events {
			continue
		}
		changedSince := m.StreamPos > st.since.Events
		switch m.Membership {
		case spec.Join:
			jr, err := s.joinedRoom(ctx, st, m, roomAD[m.RoomID], receipts[m.RoomID])
			if err != nil {
				return nil, err
			}
			if jr != nil {
				st.resp.Rooms.Join[m.RoomID] = jr
			}
		case spec.Invite:
			if st.full || changedSince {
				ir, err := s.invitedRoom(ctx, m)
				if err != nil {
					return nil, err
				}
				if st.invites == nil {
					c, err := invitefilter.Load(ctx, s.db, st.req.UserID)
					if err != nil {
						return nil, err
					}
					st.invites = &c
				}
				if inviter := invitedBy(ir); !st.ignored[inviter] && st.invites.Decide(inviter) == invitefilter.Allow {
					st.resp.Rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: EventList{Events: ir}}
				}
			}
		case "knock":
			if st.full || changedSince {
				ir, err := s.invitedRoom(ctx, m)
				if err != nil {
					return nil, err
				}
				st.resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: EventList{Events: ir}}
			}
		case spec.Leave, spec.Ban:
			if m.Forgotten && (st.initial || !changedSince) {
				// A forgotten room is left out, except for the leave itself in an
				// incremental sync: other devices must still learn the room was left.
				continue
			}
			if (st.full && rf.IncludesLeave()) || (!st.initial && changedSince) {
				lr, err := s.leftRoom(ctx, st, m, roomAD[m.RoomID])
				if err != nil {
					return nil, err
				}
				if lr != nil {
					st.resp.Rooms.Leave[m.RoomID] = lr
				}
			}
		}
	}
	if len(globalAD) > 0 || st.full {
		st.resp.AccountData = &EventList{Events: nonNil(globalAD)}
	}
	if err := s.presenceSection(ctx, st); err != nil {
		return nil, err
	}
	if err := s.toDevice(ctx, st); err != nil {
		return nil, err
	}
	if err := s.deviceLists(ctx, st); err != nil {
		return nil, err
	}
	if st.resp.OTKCounts, err = storage.OneTimeKeyCounts(ctx, s.db, req.UserID, req.DeviceID); err != nil {
		return nil, err
	}
	if st.resp.OTKCounts == nil {
		st.resp.OTKCounts = map[string]int{}
	}
	if st.resp.FallbackKeyTypes, err = storage.UnusedFallbackKeyTypes(ctx, s.db, req.UserID, req.DeviceID); err != nil {
		return nil, err
	}
	if st.resp.FallbackKeyTypes == nil {
		st.resp.FallbackKeyTypes = []string{}
	}
	st.resp.next = st.to
	st.resp.NextBatch = st.to.String()
	return st.resp, nil
}

func nonNil(evs []any) []any {
	if evs == nil {
		return []any{}
	}
	return evs
}

// receipts returns the m.receipt event content of each joined room with new receipts.
func (s *Service) receipts(ctx context.Context, st *syncState) (map[string]map[string]map[string]map[string]any, error) {
	return s.receiptsOf(ctx, st, st.joined, st.since.Receipts)
}

// receiptsOf returns the m.receipt contents of rooms for receipts after position from.
func (s *Service) receiptsOf(ctx context.Context, st *syncState, rooms []string, from int64) (map[string]map[string]map[string]map[string]any, error) {
	if len(rooms) == 0 || from >= st.to.Receipts {
		return nil, nil
	}
	rs, err := storage.ReceiptsSince(ctx, s.db, rooms, from, st.to.Receipts)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]map[string]any{} // room → event → type → user → receipt
	for _, r := range rs {
		if r.Type == ReceiptReadPrivate && r.UserID != st.req.UserID {
			continue
		}
		room := out[r.RoomID]
		if room == nil {
			room = map[string]map[string]map[string]any{}
			out[r.RoomID] = room
		}
		ev := room[r.EventID]
		if ev == nil {
			ev = map[string]map[string]any{}
			room[r.EventID] = ev
		}
		users := ev[r.Type]
		if users == nil {
			users = map[string]any{}
			ev[r.Type] = users
		}
		rec := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			if prev, ok := users[r.UserID].(map[string]any); ok && prev["thread_id"] == nil {
				// A user's unthreaded and threaded receipts on the same event share one
				// slot of the content: the unthreaded one wins (MSC4102), as it says more.
				continue
			}
			rec["thread_id"] = r.ThreadID
		}
		users[r.UserID] = rec
	}
	return out, nil
}

// timeline returns up to limit events of a room with from < stream position <= to that
// the user may see and that pass the filter, oldest first; limited when there were more.
// droppedState reports state events of the window left out by the filter; merged that
// forks of the room's DAG were merged in the part of the window it looked at (the state
// at the end is then not the state at the start plus the timeline's state events).
//
// With from 0 (an initial sync, a newly joined room) the window is the room's whole
// history and the timeline is its latest events in topological order, as /messages
// pages them from prev_batch; an incremental window follows the stream, so that
// everything after the since token is seen.
func (s *Service) timeline(ctx context.Context, st *syncState, roomID string, from, to int64, limit int,
	tf *filter.RoomEventFilter) (evs []*roomserver.Event, limited, droppedState, merged bool, err error) {
	const maxPages = 20
	pageSize := max(limit+1, 20)
	upper := to
	cursor := roomserver.End
	var backfilled bool
	next := func() ([]*roomserver.Event, bool, error) {
		if from > 0 {
			raw, err := s.rooms.StreamEvents(ctx, roomID, from, upper, pageSize, true)
			if err != nil || len(raw) == 0 {
				return nil, false, err
			}
			upper = raw[len(raw)-1].StreamPos - 1
			return raw, len(raw) == pageSize, nil
		}
		page, err := s.rooms.Messages(ctx, roomserver.MessagesRequest{RoomID: roomID, From: cursor,
			Dir: roomserver.Backward, Limit: pageSize})
		if err != nil {
			return nil, false, err
		}
		more := page.Next != nil
		if more {
			cursor = *page.Next
		}
		// Events after to come with the next sync; backfilled ones (history fetched
		// from other servers, before the stream starts) are not part of /sync's window:
		// reaching them ends the timeline, limited (the client paginates for them).
		raw := page.Events[:0:0]
		for _, ev := range page.Events {
			if ev.StreamPos < 0 {
				backfilled = true
				return raw, false, nil
			}
			if ev.StreamPos > 0 && ev.StreamPos <= to {
				raw = append(raw, ev)
			}
		}
		return raw, more, nil
	}
	for page := 0; page < maxPages; page++ {
		raw, more, err := next()
		if err != nil {
			return nil, false, false, false, err
		}
		if len(raw) == 0 && !more {
			limited = limited || backfilled
			break
		}
		// A hole in the room's history before an event (its prev events are missing
		// here): the timeline stops at that event and is limited, as the events before
		// the hole are not in it (the client paginates to fetch them).
		gaps, err := s.rooms.GapsBefore(ctx, raw)
		if err != nil {
			return nil, false, false, false, err
		}
		gapAt := ""
		for i, ev := range raw {
			if gaps[i] {
				raw, gapAt = raw[:i+1], ev.EventID()
				break
			}
		}
		vis, err := s.rooms.VisibleEvents(ctx, st.req.UserID, raw)
		if err != nil {
			return nil, false, false, false, err
		}
		for _, ev := range vis {
			if len(evs) < limit && len(ev.PrevEventIDs()) > 1 {
				merged = true // (an older event is before the timeline: no matter)
			}
			if st.ignored[string(ev.SenderID())] && !ev.IsState() {
				continue // events of ignored users are not sent, except state
			}
			if !tf.Matches(roomID, ev.Type(), string(ev.SenderID()), hasURL(ev)) {
				if ev.IsState() {
					droppedState = true
				}
				continue
			}
			if len(evs) == limit {
				limited = true
				break
			}
			evs = append(evs, ev)
		}
		if gapAt != "" || backfilled {
			limited = true
			break
		}
		if limited || !more {
			break
		}
		if page == maxPages-1 {
			limited = true
		}
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs, limited, droppedState, merged, nil
}

func hasURL(ev *roomserver.Event) bool {
	var c struct {
		URL json.RawMessage `json:"url"`
	}
	return json.Unmarshal(ev.Content(), &c) == nil && len(c.URL) > 0
}

// roomWindow builds the timeline and state of a room for the window (from, to].
// full asks for the complete state at the start of the timeline.
func (s *Service) roomWindow(ctx context.Context, st *syncState, roomID string, from, to int64, full bool) (
	tl Timeline, state []*roomserver.Event, timeline []*roomserver.Event, err error) {
	rf := st.req.Filter.GetRoom()
	tf := rf.GetTimeline()
	limit := tf.LimitOr(filter.DefaultTimelineLimit)
	evs, limited, droppedState, merged, err := s.timeline(ctx, st, roomID, from, to, limit, tf)
	if err != nil {
		return tl, nil, nil, err
	}
	tl.Limited = limited
	if len(evs) > 0 {
		first := evs[0]
		tl.PrevBatch = roomserver.SyncPrevBatch(first, to).String()
	} else {
		pos, err := s.rooms.PositionAtStream(ctx, roomID, to)
		if err != nil {
			return tl, nil, nil, err
		}
		tl.PrevBatch = pos.String()
	}
	if st.req.UseStateAfter {
		return s.stateAfter(ctx, st, roomID, from, to, full, tl, evs)
	}
	// The state before the timeline: all of it when full, else what changed since from.
	// State changes the timeline filter dropped, and those a merge of forks brought in
	// (not on the timeline's branch), are added from the state at the end of the
	// window, so the client never misses one.
	if full || limited || droppedState || merged {
		inTimeline := make(map[string]bool, len(evs))
		timelineKeys := map[[2]string]bool{}
		for _, ev := range evs {
			inTimeline[ev.EventID()] = true
			if ev.IsState() {
				timelineKeys[[2]string{ev.Type(), *ev.StateKey()}] = true
			}
		}
		included := map[string]bool{}
		byKey := map[[2]string]int{} // index in state
		var atStart map[string]bool  // the state before the timeline
		add := func(all []*roomserver.Event, after int64) {
			for _, ev := range all {
				if inTimeline[ev.EventID()] || included[ev.EventID()] {
					continue
				}
				key := [2]string{ev.Type(), *ev.StateKey()}
				if i, ok := byKey[key]; ok && after > 0 {
					if !timelineKeys[key] {
						// The end of the window has another value than the start: the
						// client must end with that one.
						included[ev.EventID()] = true
						state[i] = ev
					}
					continue
				}
				if (full && after == 0) || ev.StreamPos > max(from, after) ||
					(merged && after > 0 && !timelineKeys[key] && !atStart[ev.EventID()]) {
					included[ev.EventID()] = true
					byKey[key] = len(state)
					state = append(state, ev)
				}
			}
		}
		if len(evs) > 0 {
			before, err := s.rooms.StateAtEvent(ctx, evs[0].EventID(), false)
			if err != nil {
				return tl, nil, nil, err
			}
			atStart = make(map[string]bool, len(before))
			for _, ev := range before {
				atStart[ev.EventID()] = true
			}
			add(before, 0)
		}
		if len(evs) == 0 || droppedState || merged {
			last, err := s.rooms.StreamEvents(ctx, roomID, 0, to, 1, true)
			if err != nil {
				return tl, nil, nil, err
			}
			if len(last) > 0 {
				end, err := s.rooms.StateAtEvent(ctx, last[0].EventID(), true)
				if err != nil {
					return tl, nil, nil, err
				}
				var after int64
				if len(evs) > 0 {
					after = evs[0].StreamPos
				}
				add(end, after)
			}
		}
	}
	var memberAt func(userID string) (*roomserver.Event, error)
	if len(evs) > 0 {
		memberAt = func(userID string) (*roomserver.Event, error) {
			return s.rooms.StateEventAt(ctx, evs[0].EventID(), spec.MRoomMember, userID, false)
		}
	}
	state, err = s.filterState(ctx, st, roomID, state, evs, full, memberAt)
	if err != nil {
		return tl, nil, nil, err
	}
	return tl, state, evs, nil
}

// stateAfter computes state_after: the state changes between from and the end of the
// window (all of the state when full), timeline events included.
func (s *Service) stateAfter(ctx context.Context, st *syncState, roomID string, from, to int64, full bool, tl Timeline,
	evs []*roomserver.Event) (Timeline, []*roomserver.Event, []*roomserver.Event, error) {
	last, err := s.rooms.StreamEvents(ctx, roomID, 0, to, 1, true)
	if err != nil || len(last) == 0 {
		return tl, nil, evs, err
	}
	end, err := s.rooms.StateAtEvent(ctx, last[0].EventID(), true)
	if err != nil {
		return tl, nil, evs, err
	}
	members := map[string]*roomserver.Event{}
	var state []*roomserver.Event
	for _, ev := range end {
		if ev.Type() == spec.MRoomMember {
			members[*ev.StateKey()] = ev
		}
		if full || ev.StreamPos > from {
			state = append(state, ev)
		}
	}
	memberAt := func(userID string) (*roomserver.Event, error) { return members[userID], nil }
	state, err = s.filterState(ctx, st, roomID, state, evs, full, memberAt)
	return tl, state, evs, err
}

// filterState applies the state filter and lazy-loading of members.
// memberAt looks up the member event of a timeline sender that is not in state (nil
// when there is no timeline).
func (s *Service) filterState(ctx context.Context, st *syncState, roomID string, state, timeline []*roomserver.Event, full bool,
	memberAt func(userID string) (*roomserver.Event, error)) ([]*roomserver.Event, error) {
	sf := st.req.Filter.GetRoom().GetState()
	lazy := sf.LazyLoad()
	needed := map[string]bool{}
	if lazy {
		for _, ev := range timeline {
			needed[string(ev.SenderID())] = true
		}
		if full {
			needed[st.req.UserID] = true
		}
	}
	out := state[:0:0]
	have := map[string]bool{}
	for _, ev := range state {
		if !sf.Matches(roomID, ev.Type(), string(ev.SenderID()), hasURL(ev)) {
			continue
		}
		if lazy && ev.Type() == spec.MRoomMember {
			u := *ev.StateKey()
			if !needed[u] {
				continue
			}
			if !sf.RedundantMembers() && s.lazy.sent(st.req.UserID, st.req.DeviceID, roomID, u, ev.EventID()) {
				have[u] = true
				continue
			}
			have[u] = true
		}
		out = append(out, ev)
	}
	if lazy && memberAt != nil && sf.Matches(roomID, spec.MRoomMember, "", false) {
		// Members of timeline senders that are not in the state delta.
		users := make([]string, 0, len(needed))
		for u := range needed {
			users = append(users, u)
		}
		sort.Strings(users)
		for _, u := range users {
			if have[u] {
				continue
			}
			ev, err := memberAt(u)
			if err != nil {
				return nil, err
			}
			if ev == nil {
				continue
			}
			if !sf.RedundantMembers() && s.lazy.sent(st.req.UserID, st.req.DeviceID, roomID, u, ev.EventID()) {
				continue
			}
			out = append(out, ev)
		}
	}
	if lazy {
		sent := map[string]string{}
		for _, ev := range out {
			if ev.Type() == spec.MRoomMember {
				sent[*ev.StateKey()] = ev.EventID()
			}
		}
		for _, ev := range timeline {
			if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
				sent[*ev.StateKey()] = ev.EventID()
			}
		}
		s.lazy.record(st.req.UserID, st.req.DeviceID, roomID, sent)
	}
	return out, nil
}

// newlyJoined reports whether the user's join to a room happened after since (and it
// was not joined before, e.g. a profile change).
func (s *Service) newlyJoined(ctx context.Context, st *syncState, m roomserver.RoomMembership) (bool, error) {
	if st.initial || m.StreamPos <= st.since.Events {
		return false, nil
	}
	ev, err := s.rooms.Event(ctx, m.EventID)
	if err != nil {
		return false, err
	}
	for ev != nil && ev.StreamPos > st.since.Events {
		if ev.ReplacesState == "" {
			return true, nil
		}
		prev, err := s.rooms.Events(ctx, []string{ev.ReplacesState})
		if err != nil {
			return false, err
		}
		p := prev[ev.ReplacesState]
		if p == nil {
			return true, nil
		}
		if p.StreamPos <= st.since.Events {
			return p.Membership != spec.Join, nil
		}
		ev = p
	}
	return true, nil
}

func (s *Service) joinedRoom(ctx context.Context, st *syncState, m roomserver.RoomMembership, ad []any,
	receipts map[string]map[string]map[string]any) (*JoinedRoom, error) {
	newly, err := s.newlyJoined(ctx, st, m)
	if err != nil {
		return nil, err
	}
	// full_state gives the whole state but keeps the timeline incremental.
	full := st.full || newly
	from := st.since.Events
	if st.initial || newly {
		from = 0
	}
	var tl Timeline
	var state, timeline []*roomserver.Event
	news := full
	if !full {
		if news, err = s.roomHasEventsAfter(ctx, m.RoomID, from); err != nil {
			return nil, err
		}
	}
	if news {
		if tl, state, timeline, err = s.roomWindow(ctx, st, m.RoomID, from, st.to.Events, full); err != nil {
			return nil, err
		}
	}
	if newly && !st.initial && news && (len(timeline) == 0 || timeline[0].Type() != spec.MRoomCreate) {
		// The client has no timeline of a room it just joined to continue: unless this
		// one starts at the room's creation, there is history before it to paginate.
		tl.Limited = true
	}
	jr := &JoinedRoom{Timeline: tl, AccountData: EventList{Events: nonNil(ad)}, Ephemeral: EventList{Events: []any{}}}
	// Ephemeral: typing and receipts.
	ef := st.req.Filter.GetRoom().GetEphemeral()
	if ef.Matches(m.RoomID, "m.typing", "", false) {
		since := st.since.Typing
		if full {
			since = 0
		}
		if users, changed := s.typing.Since(m.RoomID, since); changed {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, basicEvent{Type: "m.typing", Content: map[string]any{"user_ids": nonNilStrings(users)}})
		}
	}
	if newly && !st.initial {
		// A newly joined room gets every receipt, not only those since the token.
		all, err := s.receiptsOf(ctx, st, []string{m.RoomID}, 0)
		if err != nil {
			return nil, err
		}
		receipts = all[m.RoomID]
	}
	if len(receipts) > 0 && ef.Matches(m.RoomID, "m.receipt", "", false) {
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, basicEvent{Type: "m.receipt", Content: receipts})
	}
	if !full && len(timeline) == 0 && len(state) == 0 && len(jr.Ephemeral.Events) == 0 && len(ad) == 0 {
		return nil, nil
	}
	if !news {
		// Only ephemeral events or account data: an empty timeline that continues from here.
		pos, err := s.rooms.PositionAtStream(ctx, m.RoomID, st.to.Events)
		if err != nil {
			return nil, err
		}
		jr.Timeline.PrevBatch = pos.String()
	}
	if jr.Timeline.Events, err = st.req.Format(ctx, timeline); err != nil {
		return nil, err
	}
	stateList := &EventList{}
	if stateList.Events, err = st.req.Format(ctx, state); err != nil {
		return nil, err
	}
	if st.req.UseStateAfter {
		jr.StateAfter = stateList
	} else {
		jr.State = stateList
	}
	memberChange := full
	for _, evs := range [][]*roomserver.Event{state, timeline} {
		for _, ev := range evs {
			if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
				continue
			}
			memberChange = true
			if u := *ev.StateKey(); u != st.req.UserID && !st.initial {
				if ev.Membership == spec.Join {
					st.changed[u] = true
					st.newMates[u] = true
				} else if ev.Membership == spec.Leave || ev.Membership == spec.Ban {
					st.left[u] = true
				}
			}
		}
	}
	if newly {
		members, err := s.rooms.JoinedMembers(ctx, m.RoomID)
		if err != nil {
			return nil, err
		}
		// Every member of a newly joined room counts as changed, the requester too: their
		// other devices start sharing this room's encrypted traffic and may need to
		// (re)fetch device lists.
		for _, u := range members {
			st.changed[u] = true
			if u != st.req.UserID {
				st.newMates[u] = true
			}
		}
	}
	if memberChange {
		if jr.Summary, err = s.summary(ctx, st, m.RoomID); err != nil {
			return nil, err
		}
	}
	if err := s.addUnread(ctx, st.req, m.RoomID, jr); err != nil {
		return nil, err
	}
	return jr, nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// summary builds m.heroes and the member counts of a room.
func (s *Service) summary(ctx context.Context, st *syncState, roomID string) (*Summary, error) {
	members, err := s.rooms.Members(ctx, roomserver.MembersRequest{RoomID: roomID})
	if err != nil {
		return nil, err
	}
	var joined, invited int
	var heroes, others []string
	for _, ev := range members {
		u := *ev.StateKey()
		switch ev.Membership {
		case spec.Join:
			joined++
		case spec.Invite:
			invited++
		}
		if u == st.req.UserID {
			continue
		}
		if ev.Membership == spec.Join || ev.Membership == spec.Invite {
			heroes = append(heroes, u)
		} else {
			others = append(others, u)
		}
	}
	if len(heroes) == 0 {
		heroes = others
	}
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	return &Summary{Heroes: heroes, JoinedMemberCount: &joined, InvitedMemberCount: &invited}, nil
}

// strippedTypes are the state events of invite_state and knock_state.
var strippedTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar",
	spec.MRoomCanonicalAlias, "m.room.encryption", "m.room.topic"}

func (s *Service) invitedRoom(ctx context.Context, m roomserver.RoomMembership) ([]any, error) {
	out := []any{}
	// A membership received from another server for a room this server is not in
	// carries the stripped state its server sent (unsigned invite_room_state or
	// knock_room_state): this server's copy of the room's state is empty or stale.
	if ev, err := s.rooms.Event(ctx, m.EventID); err == nil && ev.Outlier {
		if given := strippedFromUnsigned(ev); given != nil {
			return append(given, stripped(ev)), nil
		}
	}
	for _, t := range strippedTypes {
		ev, err := s.rooms.CurrentStateEvent(ctx, m.RoomID, t, "")
		if err != nil {
			return nil, err
		}
		if ev != nil {
			out = append(out, stripped(ev))
		}
	}
	ev, err := s.rooms.Event(ctx, m.EventID)
	if err != nil {
		return nil, err
	}
	// The inviter's own member event, then the invite itself.
	if sender := string(ev.SenderID()); sender != *ev.StateKey() {
		if inv, err := s.rooms.CurrentStateEvent(ctx, m.RoomID, spec.MRoomMember, sender); err != nil {
			return nil, err
		} else if inv != nil {
			out = append(out, stripped(inv))
		}
	}
	out = append(out, stripped(ev))
	return out, nil
}

// strippedFromUnsigned returns the stripped state in an event's unsigned
// invite_room_state or knock_room_state; nil when there is none.
func strippedFromUnsigned(ev *roomserver.Event) []any {
	var u struct {
		Invite []strippedEvent `json:"invite_room_state"`
		Knock  []strippedEvent `json:"knock_room_state"`
	}
	if json.Unmarshal(ev.Unsigned(), &u) != nil {
		return nil
	}
	var out []any
	for _, list := range [][]strippedEvent{u.Invite, u.Knock} {
		for _, e := range list {
			if e.Type == "" || (e.Type == spec.MRoomMember && e.StateKey == *ev.StateKey()) {
				continue // the membership itself comes last, from the event
			}
			if len(e.Content) == 0 {
				e.Content = json.RawMessage("{}")
			}
			if e.Type != spec.MRoomCreate {
				// Only the create event is given in full; the PDU fields other
				// servers send for the rest are not part of stripped state.
				e.EventID, e.RoomID, e.OriginServerTS = "", "", 0
			}
			out = append(out, e)
		}
	}
	return out
}

func stripped(ev *roomserver.Event) strippedEvent {
	c := json.RawMessage(ev.Content())
	if len(c) == 0 {
		c = json.RawMessage("{}")
	}
	out := strippedEvent{Content: c, Sender: string(ev.SenderID()), StateKey: *ev.StateKey(), Type: ev.Type()}
	if ev.Type() == spec.MRoomCreate {
		out.EventID, out.RoomID, out.OriginServerTS = ev.EventID(), ev.RoomID().String(), int64(ev.OriginServerTS())
	}
	return out
}

func (s *Service) leftRoom(ctx context.Context, st *syncState, m roomserver.RoomMembership, ad []any) (*LeftRoom, error) {
	from := st.since.Events
	full := st.full
	if st.initial {
		from = 0
	}
	tl, state, timeline, err := s.roomWindow(ctx, st, m.RoomID, from, m.StreamPos, full)
	if err != nil {
		return nil, err
	}
	// A leave this server could only store out of band (the rejection of an invite to
	// a room no server of ours is in) is not in the room's timeline: send it there, so
	// the client learns the membership ended.
	if ev, err := s.rooms.Event(ctx, m.EventID); err != nil {
		return nil, err
	} else if ev != nil && ev.Outlier && m.StreamPos > from &&
		st.req.Filter.GetRoom().GetTimeline().Matches(m.RoomID, ev.Type(), string(ev.SenderID()), false) {
		timeline = append(timeline, ev)
	}
	lr := &LeftRoom{Timeline: tl, AccountData: EventList{Events: nonNil(ad)}}
	if lr.Timeline.Events, err = st.req.Format(ctx, timeline); err != nil {
		return nil, err
	}
	stateList := &EventList{}
	if stateList.Events, err = st.req.Format(ctx, state); err != nil {
		return nil, err
	}
	if st.req.UseStateAfter {
		lr.StateAfter = stateList
	} else {
		lr.State = stateList
	}
	if !st.initial {
		members, err := s.rooms.JoinedMembers(ctx, m.RoomID)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			st.left[u] = true
		}
	}
	return lr, nil
}

// sharedUsers returns the users sharing a joined room with the requester (and itself).
func (s *Service) sharedUsers(ctx context.Context, st *syncState) (map[string]bool, error) {
	if st.shared != nil {
		return st.shared, nil
	}
	st.shared = map[string]bool{st.req.UserID: true}
	for _, r := range st.joined {
		members, err := s.rooms.JoinedMembers(ctx, r)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			st.shared[u] = true
		}
	}
	return st.shared, nil
}

func (s *Service) presenceSection(ctx context.Context, st *syncState) error {
	pf := st.req.Filter.GetPresence()
	if pf.LimitOr(1) == 0 || pf.ExcludesType("m.presence") {
		return nil
	}
	var rows []storage.Presence
	if st.since.Presence < st.to.Presence {
		var err error
		if rows, err = storage.PresenceSince(ctx, s.db, nil, st.since.Presence, st.to.Presence); err != nil {
			return err
		}
	}
	// Users newly sharing a room with the requester: their presence as it is now, when
	// it is not among the changes anyway (an incremental sync only; an initial one
	// has every stored presence).
	if !st.initial && len(st.newMates) > 0 {
		seen := make(map[string]bool, len(rows))
		for _, p := range rows {
			seen[p.UserID] = true
		}
		var users []string
		for u := range st.newMates {
			if !seen[u] {
				users = append(users, u)
			}
		}
		sort.Strings(users)
		if len(users) > 0 {
			mates, err := storage.PresenceSince(ctx, s.db, users, 0, st.to.Presence)
			if err != nil {
				return err
			}
			rows = append(mates, rows...)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	shared, err := s.sharedUsers(ctx, st)
	if err != nil {
		return err
	}
	var evs []any
	for _, p := range rows {
		if !shared[p.UserID] || !pf.Matches("m.presence", p.UserID) {
			continue
		}
		evs = append(evs, presenceEvent{Type: "m.presence", Sender: p.UserID, Content: s.presence.view(p)})
	}
	if limit := pf.LimitOr(len(evs)); len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	if len(evs) > 0 {
		st.resp.Presence = &EventList{Events: evs}
	}
	return nil
}

// toDevice delivers the device's inbox; messages up to since were received and are deleted.
func (s *Service) toDevice(ctx context.Context, st *syncState) error {
	const limit = 100
	if st.since.ToDevice > 0 && s.needsAck(st.req.UserID, st.req.DeviceID, st.since.ToDevice) {
		if _, err := storage.AckToDevice(ctx, s.db, st.req.UserID, st.req.DeviceID, st.since.ToDevice); err != nil {
			return err
		}
		s.ackedTo(st.req.UserID, st.req.DeviceID, st.since.ToDevice)
	}
	if st.since.ToDevice >= st.to.ToDevice {
		return nil // nothing was sent since: everything up to since was delivered
	}
	msgs, err := storage.ToDeviceSince(ctx, s.db, st.req.UserID, st.req.DeviceID, st.since.ToDevice, limit)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	evs := make([]any, len(msgs))
	for i, m := range msgs {
		evs[i] = m
	}
	st.resp.ToDevice = &EventList{Events: evs}
	last := msgs[len(msgs)-1].Pos
	if len(msgs) == limit {
		st.to.ToDevice = last
	} else {
		st.to.ToDevice = max(st.to.ToDevice, last)
	}
	return nil
}

func (s *Service) deviceLists(ctx context.Context, st *syncState) error {
	if st.initial {
		return nil
	}
	if st.since.DeviceLists < st.to.DeviceLists {
		users, err := storage.DeviceListChangedUsers(ctx, s.db, st.req.UserID, st.since.DeviceLists, st.to.DeviceLists)
		if err != nil {
			return err
		}
		for _, u := range users {
			st.changed[u] = true
		}
	}
	if len(st.changed) == 0 && len(st.left) == 0 {
		return nil
	}
	shared, err := s.sharedUsers(ctx, st)
	if err != nil {
		return err
	}
	dl := &DeviceLists{}
	for u := range st.changed {
		if shared[u] {
			dl.Changed = append(dl.Changed, u)
		}
	}
	for u := range st.left {
		if !shared[u] {
			dl.Left = append(dl.Left, u)
		}
	}
	sort.Strings(dl.Changed)
	sort.Strings(dl.Left)
	if len(dl.Changed) > 0 || len(dl.Left) > 0 {
		st.resp.DeviceLists = dl
	}
	return nil
}

// ignoredUsers reads the user's m.ignored_user_list.
func (s *Service) ignoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := storage.GetAccountData(ctx, s.db, userID, "", "m.ignored_user_list")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// invitedBy returns the sender of the invite in a stripped invite_state (its last event).
func invitedBy(state []any) string {
	if len(state) == 0 {
		return ""
	}
	if ev, ok := state[len(state)-1].(strippedEvent); ok {
		return ev.Sender
	}
	return ""
}
