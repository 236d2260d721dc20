package roomserver

import (
	"context"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// Event returns a stored event by ID, or M_NOT_FOUND. It applies no visibility rule:
// use EventForUser to serve a user.
func (rs *Roomserver) Event(ctx context.Context, eventID string) (*Event, error) {
	ev, err := rs.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, spec.NotFound("Event not found")
	}
	return ev, nil
}

// Events returns the stored events among eventIDs, by ID.
func (rs *Roomserver) Events(ctx context.Context, eventIDs []string) (map[string]*Event, error) {
	return rs.eventsByID(ctx, eventIDs)
}

// EventForUser returns an event of roomID that userID may see, or M_NOT_FOUND.
func (rs *Roomserver) EventForUser(ctx context.Context, userID, roomID, eventID string) (*Event, error) {
	ev, err := rs.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, spec.NotFound("Event not found")
	}
	r, err := rs.roomByNID(ctx, ev.RoomNID)
	if err != nil {
		return nil, err
	}
	if r.id != roomID {
		return nil, spec.NotFound("Event not found")
	}
	ok, err := rs.CanSeeEvent(ctx, userID, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, spec.NotFound("Event not found")
	}
	return ev, nil
}

// RoomInfo describes a room.
type RoomInfo struct {
	RoomID  string
	Version gomatrixserverlib.RoomVersion
	// Create is the room's create event.
	Create *Event
	// Extremities are the forward extremities (event IDs).
	Extremities []string
}

// RoomInfo returns what the server knows about a room, or M_NOT_FOUND.
func (rs *Roomserver) RoomInfo(ctx context.Context, roomID string) (*RoomInfo, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	head := r.head.Load()
	info := &RoomInfo{RoomID: r.id, Version: r.version, Create: head.create}
	for _, x := range head.extremities {
		info.Extremities = append(info.Extremities, x.ID)
	}
	return info, nil
}

// RoomVersion returns a room's version, or M_NOT_FOUND.
func (rs *Roomserver) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return "", err
	}
	return r.version, nil
}

// eventsOf returns the events of entries, in entry order.
func (rs *Roomserver) eventsOf(ctx context.Context, entries []state.Entry) ([]*Event, error) {
	nids := make([]int64, len(entries))
	for i, e := range entries {
		nids[i] = e.Event
	}
	m, err := rs.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(entries))
	for _, nid := range nids {
		ev := m[nid]
		if ev == nil {
			return nil, fmt.Errorf("state event %d is missing", nid)
		}
		out = append(out, ev)
	}
	return out, nil
}

// CurrentState returns every event of a room's current state.
func (rs *Roomserver) CurrentState(ctx context.Context, roomID string) ([]*Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	entries, err := rs.states.Entries(ctx, r.head.Load().state)
	if err != nil {
		return nil, err
	}
	return rs.eventsOf(ctx, entries)
}

// CurrentStateEvent returns the current state event (type, state key) of a room, nil
// if there is none.
func (rs *Roomserver) CurrentStateEvent(ctx context.Context, roomID, eventType, stateKey string) (*Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return rs.stateEvent(ctx, r.head.Load().state, eventType, stateKey)
}

// CurrentStateOfType returns the current state events of one type, by state key.
func (rs *Roomserver) CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]*Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return rs.stateOfType(ctx, r.head.Load().state, eventType)
}

func (rs *Roomserver) stateOfType(ctx context.Context, snap *state.Snapshot, eventType string) ([]*Event, error) {
	tn, ok, err := rs.typeNID(ctx, eventType)
	if err != nil || !ok {
		return nil, err
	}
	entries, err := rs.states.EntriesOfType(ctx, snap, tn)
	if err != nil {
		return nil, err
	}
	return rs.eventsOf(ctx, entries)
}

// snapshotAt loads the state snapshot before an event (after it when after is true);
// M_NOT_FOUND for unknown events and outliers, which have no state of their own.
func (rs *Roomserver) snapshotAt(ctx context.Context, eventID string, after bool) (*state.Snapshot, error) {
	ev, err := rs.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev == nil || ev.Outlier {
		return nil, spec.NotFound("Event not found")
	}
	nid := ev.stateBefore
	if after {
		nid = ev.stateAfter
	}
	return rs.states.Snapshot(ctx, nid)
}

// StateAtEvent returns the state of a room before an event (after it when after is
// true), as the events of that state.
func (rs *Roomserver) StateAtEvent(ctx context.Context, eventID string, after bool) ([]*Event, error) {
	snap, err := rs.snapshotAt(ctx, eventID, after)
	if err != nil {
		return nil, err
	}
	entries, err := rs.states.Entries(ctx, snap)
	if err != nil {
		return nil, err
	}
	return rs.eventsOf(ctx, entries)
}

// StateEventAt returns the state event (type, state key) before an event (after it
// when after is true); nil when absent.
func (rs *Roomserver) StateEventAt(ctx context.Context, eventID, eventType, stateKey string, after bool) (*Event, error) {
	snap, err := rs.snapshotAt(ctx, eventID, after)
	if err != nil {
		return nil, err
	}
	return rs.stateEvent(ctx, snap, eventType, stateKey)
}

// Membership returns the current membership of userID in roomID ("" when the user
// never had one) and the member event. M_NOT_FOUND when the room is unknown.
func (rs *Roomserver) Membership(ctx context.Context, roomID, userID string) (string, *Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	return rs.membershipIn(ctx, r.head.Load(), userID)
}

// Forgotten reports whether userID left and then forgot roomID.
func (rs *Roomserver) Forgotten(ctx context.Context, roomID, userID string) (bool, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return false, err
	}
	return roomstore.IsForgotten(ctx, rs.db, r.nid, userID)
}

// RoomMembership is a user's current membership of one room.
type RoomMembership struct {
	RoomID     string
	Membership string
	EventID    string
	// StreamPos is the position of the membership event.
	StreamPos int64
	Forgotten bool
}

// RoomsOfUser returns the user's current memberships (membership "" for all kinds).
func (rs *Roomserver) RoomsOfUser(ctx context.Context, userID, membership string) ([]RoomMembership, error) {
	rows, err := roomstore.MembershipsOfUser(ctx, rs.db, userID, membership)
	if err != nil {
		return nil, err
	}
	out := make([]RoomMembership, 0, len(rows))
	for _, r := range rows {
		out = append(out, RoomMembership{RoomID: r.RoomID, Membership: r.Membership, EventID: r.EventID,
			StreamPos: r.EventNID, Forgotten: r.Forgotten})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoomID < out[j].RoomID })
	return out, nil
}

// JoinedRooms returns the IDs of the rooms userID is joined to.
func (rs *Roomserver) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	ms, err := rs.RoomsOfUser(ctx, userID, spec.Join)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.RoomID
	}
	return out, nil
}

// MembersRequest selects member events of a room.
type MembersRequest struct {
	RoomID string
	// AtStream, when non-zero, asks for the members at that stream position (a /sync
	// token) instead of now.
	AtStream int64
	// Membership keeps only this membership; NotMembership drops this one.
	Membership    string
	NotMembership string
}

// Members returns m.room.member events of a room's current state (or of the state at
// AtStream), sorted by user ID.
func (rs *Roomserver) Members(ctx context.Context, req MembersRequest) ([]*Event, error) {
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	snap := r.head.Load().state
	if req.AtStream > 0 {
		ev, err := roomstore.LatestStreamPosBefore(ctx, rs.db, r.nid, req.AtStream)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			if snap, err = rs.states.Snapshot(ctx, ev.StateAfter); err != nil {
				return nil, err
			}
		}
	}
	evs, err := rs.stateOfType(ctx, snap, spec.MRoomMember)
	if err != nil {
		return nil, err
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if req.Membership != "" && ev.Membership != req.Membership {
			continue
		}
		if req.NotMembership != "" && ev.Membership == req.NotMembership {
			continue
		}
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return *out[i].StateKey() < *out[j].StateKey() })
	return out, nil
}

// JoinedMembers returns the user IDs joined to a room (from the current state table).
func (rs *Roomserver) JoinedMembers(ctx context.Context, roomID string) ([]string, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := roomstore.MembersOfRoom(ctx, rs.db, r.nid, spec.Join, "")
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rows))
	for i, row := range rows {
		out[i] = row.StateKey
	}
	sort.Strings(out)
	return out, nil
}

// MessagesRequest asks for a page of a room's timeline in topological order.
type MessagesRequest struct {
	RoomID string
	// Viewer, when set, filters events by history visibility for that user.
	Viewer string
	// From is where the page starts (see Position); To, when set, where it must stop.
	From Position
	To   *Position
	Dir  Direction
	// Limit defaults to 10 and is capped at 1000.
	Limit int
	// Types and NotTypes filter by event type.
	Types    []string
	NotTypes []string
}

// MessagesPage is a page of events.
type MessagesPage struct {
	// Events are in pagination order (newest first when paginating backwards).
	Events []*Event
	// Next continues the pagination; nil when the end of the timeline was reached.
	Next *Position
}

// Messages returns a page of a room's timeline in topological order.
func (rs *Roomserver) Messages(ctx context.Context, req MessagesRequest) (*MessagesPage, error) {
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, 1000)
	dir := req.Dir.order()
	var to *roomstore.TopoPos
	if req.To != nil {
		to = &roomstore.TopoPos{Depth: req.To.Depth, Stream: req.To.Stream}
	}
	from := roomstore.TopoPos{Depth: req.From.Depth, Stream: req.From.Stream}
	tf := roomstore.TimelineFilter{Types: req.Types, NotTypes: req.NotTypes}
	if req.Dir == Backward && req.From.Bounded {
		// Everything that reached the room by MaxStream (and, past the first page, is
		// before From).
		maxStream := req.From.MaxStream
		tf.MaxStream = &maxStream
		if req.From.syncStart() {
			from = roomstore.TopoPos{Depth: End.Depth, Stream: End.Stream}
		}
	}
	rows, err := roomstore.EventsTopological(ctx, rs.db, r.nid, from, to, dir, limit, tf)
	if err != nil {
		return nil, err
	}
	evs, err := rs.rowsToEvents(ctx, rows)
	if err != nil {
		return nil, err
	}
	page := &MessagesPage{}
	if len(evs) == limit {
		last := evs[len(evs)-1].Position()
		if req.Dir == Backward {
			last = last.before()
			last.Bounded, last.MaxStream = req.From.Bounded, req.From.MaxStream
		}
		page.Next = &last
	}
	if req.Viewer != "" {
		if evs, err = rs.VisibleEvents(ctx, req.Viewer, evs); err != nil {
			return nil, err
		}
	}
	page.Events = evs
	return page, nil
}

func (rs *Roomserver) rowsToEvents(ctx context.Context, rows []*roomstore.Event) ([]*Event, error) {
	out := make([]*Event, 0, len(rows))
	for _, row := range rows {
		if ev, ok := rs.eventCache.Get(row.NID); ok {
			out = append(out, ev)
			continue
		}
		ev, err := rs.eventFromRow(ctx, row)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// StreamEvents returns up to limit timeline events of a room with from < stream
// position <= to, oldest first (newest first when backward). /sync uses it with to
// at most StreamPosition().
func (rs *Roomserver) StreamEvents(ctx context.Context, roomID string, from, to int64, limit int, backward bool) ([]*Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	dir := Forward.order()
	if backward {
		dir = Backward.order()
	}
	rows, err := roomstore.EventsByStream(ctx, rs.db, r.nid, from, to, dir, limit, roomstore.TimelineFilter{})
	if err != nil {
		return nil, err
	}
	return rs.rowsToEvents(ctx, rows)
}

// EventsInStream returns up to limit timeline events of every room with from < stream
// position <= to, oldest first, and the position a reader following the stream has
// reached with them: to, unless the batch is full (more may follow its last event).
// Call it with to at most StreamPosition().
func (rs *Roomserver) EventsInStream(ctx context.Context, from, to int64, limit int) ([]*Event, int64, error) {
	rows, err := roomstore.EventsInStream(ctx, rs.db, from, to, limit)
	if err != nil {
		return nil, from, err
	}
	evs, err := rs.rowsToEvents(ctx, rows)
	if err != nil {
		return nil, from, err
	}
	return evs, StreamReached(evs, to, limit), nil
}

// StreamReached is the position a reader of the stream up to to has reached with a
// batch of at most limit events: to, unless the batch is full (then its last event's).
func StreamReached(evs []*Event, to int64, limit int) int64 {
	if len(evs) == limit && limit > 0 {
		return evs[len(evs)-1].StreamPos
	}
	return to
}

// PositionAtStream returns the topological position just after the room's last event
// at or before a stream position: /sync's prev_batch for /messages.
func (rs *Roomserver) PositionAtStream(ctx context.Context, roomID string, stream int64) (Position, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return Position{}, err
	}
	ev, err := roomstore.LatestStreamPosBefore(ctx, rs.db, r.nid, stream)
	if err != nil {
		return Position{}, err
	}
	if ev == nil {
		return Start, nil
	}
	return Position{Depth: ev.Depth, Stream: ev.StreamPos}, nil
}

// RelationsRequest asks for the events relating to an event.
type RelationsRequest struct {
	RoomID  string
	EventID string
	// RelType and EventType filter the relations when set.
	RelType   string
	EventType string
	// Viewer, when set, filters by history visibility.
	Viewer string
	// From is a stream position to continue from (0: the start for Forward, the end
	// for Backward).
	From  int64
	Dir   Direction
	Limit int
}

// RelationsPage is a page of relations.
type RelationsPage struct {
	Events []*Event
	// Next is the stream position to continue from; 0 when there is no more.
	Next int64
}

// Relations returns events relating to an event (m.relates_to), by stream order.
func (rs *Roomserver) Relations(ctx context.Context, req RelationsRequest) (*RelationsPage, error) {
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	dir := req.Dir.order()
	rows, err := roomstore.Relations(ctx, rs.db, req.EventID, req.RelType, req.EventType, req.From, dir, limit)
	if err != nil {
		return nil, err
	}
	var mine []*roomstore.Event
	for _, row := range rows {
		if row.RoomNID == r.nid {
			mine = append(mine, row)
		}
	}
	evs, err := rs.rowsToEvents(ctx, mine)
	if err != nil {
		return nil, err
	}
	page := &RelationsPage{}
	if len(rows) == limit {
		page.Next = rows[len(rows)-1].StreamPos
	}
	if req.Viewer != "" {
		if evs, err = rs.VisibleEvents(ctx, req.Viewer, evs); err != nil {
			return nil, err
		}
	}
	page.Events = evs
	return page, nil
}

// SharesRoomWithServerSince reports whether a user has been joined, without a break
// since stream position pos (pos < 0: now), to a room in which a user of server has
// also been joined since then. Device-list caches of remote users are current only
// under that condition.
func (rs *Roomserver) SharesRoomWithServerSince(ctx context.Context, userID string, server spec.ServerName, pos int64) (bool, error) {
	return roomstore.SharesRoomWithServerSince(ctx, rs.db, userID, string(server), pos)
}
