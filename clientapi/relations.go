package clientapi

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// Relations and threads (client API v1):
//   GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
//   GET /rooms/{roomId}/threads
// Pagination tokens are "r<stream position>" (relations) and "t<stream position>"
// (threads): exclusive bounds in the global event stream.

const (
	defaultRelationsLimit = 50
	maxRelationsLimit     = 1000
	// maxRelationsDepth is how many levels recurse=true follows (the spec asks for 3).
	maxRelationsDepth = 3
)

// relParseLimit reads the limit query parameter: def when absent, capped at max.
func relParseLimit(r *http.Request, def, maxLimit int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	if n == 0 {
		return def, nil
	}
	return min(n, maxLimit), nil
}

// parseStreamToken parses a "<prefix><position>" token; 0 when s is empty.
func parseStreamToken(s, prefix string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(s, prefix), 10, 64)
	if err != nil || !strings.HasPrefix(s, prefix) || n <= 0 {
		return 0, httputil.InvalidParam("Unknown pagination token %q", s)
	}
	return n, nil
}

// relationsBound turns a from/to token of /relations into an exclusive bound on stream
// positions: our own "r<pos>" tokens, /messages tokens ("t<depth>_<stream>") and /sync
// tokens ("s<events>_..."). For the latter two, which point just after an event, the
// bound includes that event when upper is true (stream_pos < bound) and excludes it
// otherwise (stream_pos > bound). 0 when s is empty.
func relationsBound(s string, upper bool) (int64, error) {
	switch {
	case s == "":
		return 0, nil
	case strings.HasPrefix(s, "r"):
		return parseStreamToken(s, "r")
	}
	var pos int64
	if p, err := roomserver.ParsePosition(s); err == nil {
		pos = p.Stream
	} else if t, err := syncapi.ParseToken(s); err == nil {
		pos = t.Events
	} else {
		return 0, httputil.InvalidParam("Unknown pagination token %q", s)
	}
	if upper {
		pos++
	}
	if pos <= 0 {
		return 0, nil
	}
	return pos, nil
}

// getRelations serves GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (s *Server) getRelations(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, eventID := pathVar(r, "roomId"), pathVar(r, "eventId")
	relType, eventType := pathVar(r, "relType"), pathVar(r, "eventType")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, httputil.InvalidParam("%q is not a valid room ID", roomID)
	}
	q := r.URL.Query()
	dir := roomserver.Backward
	switch q.Get("dir") {
	case "", "b":
	case "f":
		dir = roomserver.Forward
	default:
		return nil, httputil.InvalidParam("dir must be f or b")
	}
	limit, err := relParseLimit(r, defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	from, err := relationsBound(q.Get("from"), dir == roomserver.Backward)
	if err != nil {
		return nil, err
	}
	to, err := relationsBound(q.Get("to"), dir != roomserver.Backward)
	if err != nil {
		return nil, err
	}
	recurse := false
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		recurse = true
	default:
		return nil, httputil.InvalidParam("recurse must be true or false")
	}
	// The parent must exist in this room and be visible to the user.
	if _, err := s.rooms.EventForUser(ctx, d.UserID, roomID, eventID); err != nil {
		if _, isMatrix := httputil.AsError(err); isMatrix {
			return nil, httputil.NotFound("Event not found")
		}
		return nil, err
	}

	var evs []*roomserver.Event
	var next int64
	depth := 1
	if !recurse {
		page, err := s.rooms.Relations(ctx, roomserver.RelationsRequest{
			RoomID: roomID, EventID: eventID, RelType: relType, EventType: eventType,
			Viewer: d.UserID, From: from, Dir: dir, Limit: limit,
		})
		if err != nil {
			return nil, err
		}
		evs, next = page.Events, page.Next
	} else {
		all, reached, err := s.relationsRecursive(ctx, roomID, eventID, d.UserID)
		if err != nil {
			return nil, err
		}
		depth = reached
		sort.Slice(all, func(i, j int) bool {
			if dir == roomserver.Backward {
				return all[i].StreamPos > all[j].StreamPos
			}
			return all[i].StreamPos < all[j].StreamPos
		})
		for _, ev := range all {
			if relType != "" && ev.RelType != relType {
				continue
			}
			if eventType != "" && ev.Type() != eventType {
				continue
			}
			if from > 0 && ((dir == roomserver.Backward && ev.StreamPos >= from) || (dir == roomserver.Forward && ev.StreamPos <= from)) {
				continue
			}
			if len(evs) == limit {
				next = evs[len(evs)-1].StreamPos
				break
			}
			evs = append(evs, ev)
		}
	}
	if to > 0 {
		kept := evs[:0:0]
		for _, ev := range evs {
			if (dir == roomserver.Backward && ev.StreamPos <= to) || (dir == roomserver.Forward && ev.StreamPos >= to) {
				next = 0
				break
			}
			kept = append(kept, ev)
		}
		evs = kept
	}
	chunk, err := s.formatter(d.UserID, d.DeviceID, filter.FormatClient).events(ctx, evs)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": chunk}
	if next > 0 {
		resp["next_batch"] = "r" + strconv.FormatInt(next, 10)
	}
	if from > 0 {
		resp["prev_batch"] = q.Get("from")
	}
	if recurse {
		resp["recursion_depth"] = depth
	}
	return resp, nil
}

// relationsRecursive returns the visible events relating to eventID directly or
// through up to maxRelationsDepth relations, and the depth reached.
func (s *Server) relationsRecursive(ctx context.Context, roomID, eventID, viewer string) ([]*roomserver.Event, int, error) {
	seen := map[string]bool{eventID: true}
	var out []*roomserver.Event
	level := []string{eventID}
	reached := 0
	for depth := 1; depth <= maxRelationsDepth && len(level) > 0; depth++ {
		var nextLevel []string
		for _, id := range level {
			page, err := s.rooms.Relations(ctx, roomserver.RelationsRequest{
				RoomID: roomID, EventID: id, Viewer: viewer, Dir: roomserver.Forward, Limit: maxRelationsLimit,
			})
			if err != nil {
				return nil, 0, err
			}
			for _, ev := range page.Events {
				if seen[ev.EventID()] {
					continue
				}
				seen[ev.EventID()] = true
				out = append(out, ev)
				nextLevel = append(nextLevel, ev.EventID())
			}
		}
		if len(nextLevel) > 0 {
			reached = depth
		}
		level = nextLevel
	}
	if reached == 0 {
		reached = 1
	}
	return out, reached, nil
}

// requireRoomReader checks that a user may read a room's history at all: a current or
// former member (history visibility then filters the events), or anyone when the room
// is world readable. 403 M_FORBIDDEN otherwise, also for unknown rooms.
func (s *Server) requireRoomReader(ctx context.Context, roomID, userID string) error {
	membership, _, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		if e, ok := httputil.AsError(err); ok && e.Code == string(spec.ErrorNotFound) {
			return httputil.Forbidden("You cannot view this room")
		}
		return err
	}
	if membership == spec.Join || membership == spec.Leave || membership == spec.Ban {
		return nil
	}
	if ok, err := s.dirWorldReadable(ctx, roomID); err != nil || ok {
		return err
	}
	return httputil.Forbidden("You cannot view this room")
}

// getThreads serves GET /rooms/{roomId}/threads?include=all|participated&from&limit.
func (s *Server) getThreads(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = d.UserID
	default:
		return nil, httputil.InvalidParam("include must be all or participated")
	}
	limit, err := relParseLimit(r, defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	from, err := parseStreamToken(q.Get("from"), "t")
	if err != nil {
		return nil, err
	}
	if err := s.requireRoomReader(ctx, roomID, d.UserID); err != nil {
		return nil, err
	}
	roots, err := s.rooms.ThreadRoots(ctx, roomID, from, participant, limit)
	if err != nil {
		return nil, err
	}
	f := s.formatter(d.UserID, d.DeviceID, filter.FormatClient)
	chunk := []any{}
	for _, t := range roots {
		root, err := s.rooms.EventForUser(ctx, d.UserID, roomID, t.RootID)
		if err != nil {
			continue // not visible (or not known here)
		}
		page, err := s.rooms.Relations(ctx, roomserver.RelationsRequest{
			RoomID: roomID, EventID: t.RootID, RelType: "m.thread", Viewer: d.UserID,
			Dir: roomserver.Backward, Limit: maxRelationsLimit,
		})
		if err != nil {
			return nil, err
		}
		if len(page.Events) == 0 {
			continue
		}
		participated := string(root.SenderID()) == d.UserID
		for _, ev := range page.Events {
			if string(ev.SenderID()) == d.UserID {
				participated = true
			}
		}
		latest, err := f.one(ctx, page.Events[0])
		if err != nil {
			return nil, err
		}
		formatted, err := f.one(ctx, root)
		if err != nil {
			return nil, err
		}
		if ce, ok := formatted.(clientEvent); ok {
			if ce.Unsigned == nil {
				ce.Unsigned = map[string]any{}
			}
			rels, _ := ce.Unsigned["m.relations"].(map[string]any)
			if rels == nil {
				rels = map[string]any{}
			}
			rels["m.thread"] = map[string]any{
				"latest_event":              latest,
				"count":                     len(page.Events),
				"current_user_participated": participated,
			}
			ce.Unsigned["m.relations"] = rels
			formatted = ce
		}
		chunk = append(chunk, formatted)
	}
	resp := map[string]any{"chunk": chunk}
	if len(roots) == limit {
		resp["next_batch"] = "t" + strconv.FormatInt(roots[len(roots)-1].LatestPos, 10)
	}
	return resp, nil
}
