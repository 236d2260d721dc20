package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// getRoomEvent is GET /rooms/{roomId}/event/{eventId}: 404 for events the user may
// not see (history visibility).
func (s *Server) getRoomEvent(r *http.Request) (any, error) {
	roomID, eventID := pathVar(r, "roomId"), pathVar(r, "eventId")
	d := requestDevice(r)
	ev, err := s.rooms.EventForUser(r.Context(), d.UserID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return s.formatter(d.UserID, d.DeviceID, filter.FormatClient).one(r.Context(), ev)
}

// parseRoomEventFilter parses the filter query parameter (a RoomEventFilter).
func parseRoomEventFilter(raw string) (*filter.RoomEventFilter, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	wrapped := []byte(`{"room":{"timeline":` + raw + `}}`)
	if !json.Valid([]byte(raw)) || strings.TrimSpace(raw)[0] != '{' {
		return nil, httputil.NotJSON("filter is not a JSON object")
	}
	f, err := filter.Parse(wrapped)
	if err != nil {
		return nil, httputil.BadJSON("%s", strings.ReplaceAll(err.Error(), "room.timeline.", ""))
	}
	return f.GetRoom().GetTimeline(), nil
}

// parseLimit reads the limit query parameter.
func parseLimit(r *http.Request, def, maxLimit int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, maxLimit), nil
}

// sqlTypes returns the types of a filter list that the database can match exactly
// (nil when any of them is a wildcard pattern; the filter then applies in Go).
func sqlTypes(types []string) []string {
	for _, t := range types {
		if strings.Contains(t, "*") {
			return nil
		}
	}
	return types
}

// applyFilter keeps the events that pass rf.
func applyFilter(rf *filter.RoomEventFilter, evs []*roomserver.Event) []*roomserver.Event {
	if rf == nil {
		return evs
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if !rf.Matches(ev.RoomID().String(), ev.Type(), string(ev.SenderID()), hasURL(ev.Content())) {
			continue
		}
		if rf.FiltersRelations() && !rf.MatchesRelation(relType(ev.Content())) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// relType returns the rel_type of an event's m.relates_to ("" when it has none).
func relType(content []byte) string {
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(content, &c)
	return c.RelatesTo.RelType
}

func hasURL(content []byte) bool {
	var c struct {
		URL json.RawMessage `json:"url"`
	}
	_ = json.Unmarshal(content, &c)
	return len(c.URL) > 0 && string(c.URL) != "null"
}

// checkCanRead refuses users who never had a membership in a room that is not
// world_readable (403, as /messages specifies); users who left, were invited or
// banned get what history visibility lets them see.
// It returns the user's membership event (nil when none).
func (s *Server) checkCanRead(ctx context.Context, roomID, userID string) (*roomserver.Event, error) {
	m, ev, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		if me, ok := err.(spec.MatrixError); ok && me.ErrCode == spec.ErrorNotFound {
			return nil, errNotMember
		}
		return nil, err
	}
	if m != "" && m != spec.Join {
		// A room the user left and forgot is gone for them, history included: they
		// read it only as anyone may (world-readable rooms).
		forgotten, err := s.rooms.Forgotten(ctx, roomID, userID)
		if err != nil {
			return nil, err
		}
		if forgotten {
			m, ev = "", nil
		}
	}
	if m != "" {
		return ev, nil
	}
	ok, err := s.worldReadable(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNotMember
	}
	return nil, nil
}

// parseToken parses a pagination token of /messages: a topological position (from
// /messages, /context or /sync's prev_batch) or a /sync next_batch token ("s<events>_...").
func (s *Server) parseToken(ctx context.Context, roomID, tok string) (roomserver.Position, error) {
	if p, err := roomserver.ParsePosition(tok); err == nil {
		return p, nil
	}
	if rest, ok := strings.CutPrefix(tok, "s"); ok {
		events, _, _ := strings.Cut(rest, "_")
		if n, err := strconv.ParseInt(events, 10, 64); err == nil && n >= 0 {
			p, err := s.rooms.PositionAtStream(ctx, roomID, n)
			if err != nil {
				return roomserver.Position{}, errNotMember
			}
			return p, nil
		}
	}
	return roomserver.Position{}, httputil.InvalidParam("Invalid pagination token %q", tok)
}

// lazyMembers returns the member events of the senders of evs, each as of the first
// event of that sender in evs.
func (s *Server) lazyMembers(ctx context.Context, evs []*roomserver.Event) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	var out []*roomserver.Event
	for _, ev := range evs {
		sender := string(ev.SenderID())
		if seen[sender] {
			continue
		}
		seen[sender] = true
		m, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomMember, sender, true)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// maxEmptyPages bounds how many pages /messages reads past events hidden by history
// visibility or the filter before answering with an empty chunk.
const maxEmptyPages = 10

// getMessages is GET /rooms/{roomId}/messages.
func (s *Server) getMessages(r *http.Request) (any, error) {
	roomID := pathVar(r, "roomId")
	q := r.URL.Query()
	d := requestDevice(r)
	req := roomserver.MessagesRequest{RoomID: roomID, Viewer: d.UserID}
	// Who may read comes before what was asked: someone outside the room (or who forgot
	// it) gets 403 whatever the parameters.
	memberEv, err := s.checkCanRead(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	switch q.Get("dir") {
	case "b":
		req.Dir, req.From = roomserver.Backward, roomserver.End
	case "f":
		req.Dir, req.From = roomserver.Forward, roomserver.Start
	case "":
		return nil, httputil.MissingParam("dir is required")
	default:
		return nil, httputil.InvalidParam("dir must be \"b\" or \"f\"")
	}
	from, to := q.Get("from"), q.Get("to")
	if from != "" {
		p, err := s.parseToken(r.Context(), roomID, from)
		if err != nil {
			return nil, err
		}
		req.From = p
	}
	if to != "" {
		p, err := s.parseToken(r.Context(), roomID, to)
		if err != nil {
			return nil, err
		}
		req.To = &p
	}
	limit, err := parseLimit(r, 10, 1000)
	if err != nil {
		return nil, err
	}
	rf, err := parseRoomEventFilter(q.Get("filter"))
	if err != nil {
		return nil, err
	}
	if rf != nil {
		req.Types, req.NotTypes = sqlTypes(rf.Types), sqlTypes(rf.NotTypes)
		if rf.Limit != nil && q.Get("limit") == "" {
			limit = min(*rf.Limit, 1000)
		}
	}
	if memberEv != nil && (memberEv.Membership == spec.Leave || memberEv.Membership == spec.Ban) &&
		req.Dir == roomserver.Backward && from == "" {
		readable, err := s.worldReadable(r.Context(), roomID)
		if err != nil {
			return nil, err
		}
		if readable {
			memberEv = nil
		}
	}
	if memberEv != nil && (memberEv.Membership == spec.Leave || memberEv.Membership == spec.Ban) &&
		req.Dir == roomserver.Backward && from == "" {
		// Nothing after a user's leave is visible to them: start there.
		if p := memberEv.Position(); p.Stream > 0 {
			req.From = p
		}
	}
	start := req.From
	resp := map[string]any{"start": start.String(), "chunk": []any{}}
	if limit == 0 {
		return resp, nil
	}
	req.Limit = limit
	var evs []*roomserver.Event
	var next *roomserver.Position
	backfilled := false
	for i := 0; i < maxEmptyPages; i++ {
		page, err := s.rooms.Messages(r.Context(), req)
		if err != nil {
			return nil, err
		}
		if page.Next == nil && req.Dir == roomserver.Backward && !backfilled && s.remote != nil {
			// Local history ran out: the room may have older events on other servers
			// (it was joined over federation). Fetch them once, then read again.
			backfilled = true
			if n, err := s.remote.Backfill(r.Context(), roomID, limit-len(page.Events)); err != nil {
				logrus.WithError(err).WithField("room_id", roomID).Info("backfill failed")
			} else if n > 0 {
				i--
				continue
			}
		}
		evs, next = applyFilter(rf, page.Events), page.Next
		if len(evs) > 0 || next == nil {
			break
		}
		req.From = *next
	}
	f := s.formatter(d.UserID, d.DeviceID, filter.FormatClient)
	chunk, err := f.events(r.Context(), evs)
	if err != nil {
		return nil, err
	}
	resp["chunk"] = chunk
	if next != nil {
		resp["end"] = next.String()
	} else if req.Dir == roomserver.Backward && len(evs) > 0 {
		// The page reached the start of our copy of the room. Clients expect an end token
		// with every non-empty page; it is the gap before the page's oldest event, so the
		// next page continues from there with whatever backfill stores before that event
		// (a single backfill may not reach the room's creation). When nothing is left,
		// that next page is an empty chunk without end.
		end := evs[len(evs)-1].Position().Before()
		end.Bounded, end.MaxStream = req.From.Bounded, req.From.MaxStream
		resp["end"] = end.String()
	}
	if rf.LazyLoad() && len(evs) > 0 {
		members, err := s.lazyMembers(r.Context(), evs)
		if err != nil {
			return nil, err
		}
		state, err := f.events(r.Context(), members)
		if err != nil {
			return nil, err
		}
		resp["state"] = state
	}
	return resp, nil
}

// getContext is GET /rooms/{roomId}/context/{eventId}.
func (s *Server) getContext(r *http.Request) (any, error) {
	roomID, eventID := pathVar(r, "roomId"), pathVar(r, "eventId")
	d := requestDevice(r)
	limit, err := parseLimit(r, 10, 100)
	if err != nil {
		return nil, err
	}
	rf, err := parseRoomEventFilter(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, err
	}
	ev, err := s.rooms.EventForUser(r.Context(), d.UserID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	var types, notTypes []string
	if rf != nil {
		types, notTypes = sqlTypes(rf.Types), sqlTypes(rf.NotTypes)
	}
	pos := ev.Position()
	nBefore := limit / 2
	nAfter := limit - nBefore
	f := s.formatter(d.UserID, d.DeviceID, filter.FormatClient)
	resp := map[string]any{}

	startPos := roomserver.Position{Depth: pos.Depth, Stream: pos.Stream - 1}
	var before []*roomserver.Event
	if nBefore > 0 {
		page, err := s.rooms.Messages(r.Context(), roomserver.MessagesRequest{RoomID: roomID, Viewer: d.UserID,
			From: startPos, Dir: roomserver.Backward, Limit: nBefore, Types: types, NotTypes: notTypes})
		if err != nil {
			return nil, err
		}
		before = applyFilter(rf, page.Events)
		if page.Next != nil {
			startPos = *page.Next
		} else if len(page.Events) > 0 {
			startPos = roomserver.Start
		}
	}
	endPos := pos
	var after []*roomserver.Event
	if nAfter > 0 {
		page, err := s.rooms.Messages(r.Context(), roomserver.MessagesRequest{RoomID: roomID, Viewer: d.UserID,
			From: pos, Dir: roomserver.Forward, Limit: nAfter, Types: types, NotTypes: notTypes})
		if err != nil {
			return nil, err
		}
		after = applyFilter(rf, page.Events)
		if n := len(page.Events); n > 0 {
			endPos = page.Events[n-1].Position()
		}
	}
	all := append(append([]*roomserver.Event{ev}, before...), after...)
	if err := f.load(r.Context(), all); err != nil {
		return nil, err
	}
	resp["event"] = f.event(ev, true)
	if resp["events_before"], err = f.events(r.Context(), before); err != nil {
		return nil, err
	}
	if resp["events_after"], err = f.events(r.Context(), after); err != nil {
		return nil, err
	}
	resp["start"] = startPos.String()
	resp["end"] = endPos.String()

	// The state at the last event returned.
	last := ev
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	var state []*roomserver.Event
	if rf.LazyLoad() {
		state, err = s.lazyMembersAt(r.Context(), last.EventID(), all)
	} else {
		state, err = s.rooms.StateAtEvent(r.Context(), last.EventID(), true)
	}
	if err != nil {
		return nil, err
	}
	resp["state"], err = f.events(r.Context(), state)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// lazyMembersAt returns the member events of the senders of evs in the state after atEvent.
func (s *Server) lazyMembersAt(ctx context.Context, atEvent string, evs []*roomserver.Event) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	var out []*roomserver.Event
	for _, ev := range evs {
		sender := string(ev.SenderID())
		if seen[sender] {
			continue
		}
		seen[sender] = true
		m, err := s.rooms.StateEventAt(ctx, atEvent, spec.MRoomMember, sender, true)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}
