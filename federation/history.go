package federation

import (
	"container/heap"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
)

// Serving a room's history to other servers: /backfill, /get_missing_events and
// /timestamp_to_event. The origin must have a joined member in the room and pass
// its server ACL; events its users may not see (history visibility) are sent redacted.

const (
	defaultBackfillLimit = 10
	maxBackfillLimit     = 100
	defaultMissingLimit  = 10
	maxMissingLimit      = 100
)

// historyRoutes registers the history endpoints on the authenticated router.
func (s *Server) historyRoutes(r *mux.Router) {
	r.HandleFunc("/v1/backfill/{roomID}", s.getBackfill).Methods(http.MethodGet)
	r.HandleFunc("/v1/get_missing_events/{roomID}", s.postGetMissingEvents).Methods(http.MethodPost)
	r.HandleFunc("/v1/timestamp_to_event/{roomID}", s.getTimestampToEvent).Methods(http.MethodGet)
}

// roomForOrigin checks the room path variable: the room must be known, the origin
// allowed by its ACL and in the room (now or at one of atEvents).
func (s *Server) roomForOrigin(r *http.Request, atEvents ...string) (string, error) {
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		return "", err
	}
	if _, err := s.rooms.RoomVersion(r.Context(), roomID); err != nil {
		return "", err
	}
	if err := s.checkACL(r.Context(), roomID); err != nil {
		return "", err
	}
	for _, id := range atEvents {
		if s.originInRoom(r.Context(), roomID, id) == nil {
			return roomID, nil
		}
	}
	return roomID, s.originInRoom(r.Context(), roomID, "")
}

// byDepth is a max-heap of events by depth (then ID, for a stable order).
type byDepth []*roomserver.Event

func (h byDepth) Len() int { return len(h) }
func (h byDepth) Less(i, j int) bool {
	if h[i].Depth() != h[j].Depth() {
		return h[i].Depth() > h[j].Depth()
	}
	return h[i].EventID() > h[j].EventID()
}
func (h byDepth) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *byDepth) Push(x any)   { *h = append(*h, x.(*roomserver.Event)) }
func (h *byDepth) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// walkBack returns up to limit events of roomID reached from the start IDs through
// prev_events, newest (deepest) first. Start events are included when includeStart;
// events in stop are not returned nor walked through, nor are events below minDepth.
// Outliers and rejected events are skipped (they have no place in the DAG we serve).
func (s *Server) walkBack(ctx context.Context, roomID string, start []string, includeStart bool, stop map[string]bool, minDepth int64, limit int) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	h := &byDepth{}
	load := func(ids []string) error {
		var want []string
		for _, id := range ids {
			if !seen[id] && !stop[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			return nil
		}
		found, err := s.rooms.Events(ctx, want)
		if err != nil {
			return err
		}
		for _, id := range want {
			ev := found[id]
			if ev == nil || ev.Outlier || ev.Rejected || ev.RoomID().String() != roomID || ev.Depth() < minDepth {
				continue
			}
			heap.Push(h, ev)
		}
		return nil
	}
	if includeStart {
		if err := load(start); err != nil {
			return nil, err
		}
	} else {
		startEvs, err := s.rooms.Events(ctx, start)
		if err != nil {
			return nil, err
		}
		for _, id := range start {
			seen[id] = true
			if ev := startEvs[id]; ev != nil && ev.RoomID().String() == roomID {
				if err := load(ev.PrevEventIDs()); err != nil {
					return nil, err
				}
			}
		}
	}
	var out []*roomserver.Event
	for h.Len() > 0 && len(out) < limit {
		ev := heap.Pop(h).(*roomserver.Event)
		out = append(out, ev)
		if err := load(ev.PrevEventIDs()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// forOrigin renders events for the requesting server: those its users may not see
// are redacted.
func (s *Server) forOrigin(ctx context.Context, roomID string, evs []*roomserver.Event) ([]json.RawMessage, error) {
	visible, err := s.rooms.VisibleToServer(ctx, Origin(ctx), evs)
	if err != nil {
		return nil, err
	}
	ver, err := s.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for i, ev := range evs {
		if visible[i] {
			out = append(out, ev.JSON())
			continue
		}
		red, err := impl.RedactEventJSON(ev.JSON())
		if err != nil {
			return nil, err
		}
		out = append(out, red)
	}
	return out, nil
}

// getBackfill is GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...: up to
// limit events, starting with the v events and walking back through prev_events,
// newest first.
func (s *Server) getBackfill(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		httputil.WriteError(w, r, httputil.MissingParam("v is required"))
		return
	}
	limit := defaultBackfillLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be a non-negative integer"))
			return
		}
		limit = min(n, maxBackfillLimit)
	}
	roomID, err := s.roomForOrigin(r, from...)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.walkBack(ctx, roomID, from, true, nil, 0, limit)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	pdus, err := s.forOrigin(ctx, roomID, evs)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{
		"origin": s.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(time.Now()), "pdus": pdus,
	})
}

// postGetMissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomId}:
// the events before latest_events back to earliest_events (neither included), at
// least min_depth deep, at most limit, oldest first.
func (s *Server) postGetMissingEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    *int     `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(body.Latest) == 0 {
		httputil.WriteError(w, r, httputil.BadJSON("latest_events is required"))
		return
	}
	limit := defaultMissingLimit
	if body.Limit != nil {
		if *body.Limit < 0 {
			httputil.WriteError(w, r, httputil.BadJSON("limit must not be negative"))
			return
		}
		limit = min(*body.Limit, maxMissingLimit)
	}
	roomID, err := s.roomForOrigin(r, body.Latest...)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	stop := map[string]bool{}
	for _, id := range body.Earliest {
		stop[id] = true
	}
	evs, err := s.walkBack(ctx, roomID, body.Latest, false, stop, body.MinDepth, limit)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	pdus, err := s.forOrigin(ctx, roomID, evs)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"events": pdus})
}

// getTimestampToEvent is GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts&dir:
// the event closest to ts in the direction given that the origin may see.
func (s *Server) getTimestampToEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("ts must be an integer"))
		return
	}
	var backward bool
	switch q.Get("dir") {
	case "f":
	case "b":
		backward = true
	default:
		httputil.WriteError(w, r, httputil.InvalidParam("dir must be f or b"))
		return
	}
	roomID, err := s.roomForOrigin(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.rooms.EventsNearTimestamp(ctx, roomID, ts, backward, 100)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	visible, err := s.rooms.VisibleToServer(ctx, Origin(ctx), evs)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	for i, ev := range evs {
		if visible[i] {
			httputil.WriteResult(w, map[string]any{"event_id": ev.EventID(), "origin_server_ts": int64(ev.OriginServerTS())})
			return
		}
	}
	httputil.WriteError(w, r, httputil.NotFound("No event found from %d", ts))
}
