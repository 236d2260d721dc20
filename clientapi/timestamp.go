package clientapi

import (
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// timestampCandidates is how many events near the timestamp are checked for visibility.
const timestampCandidates = 100

// getTimestampToEvent serves GET /rooms/{roomId}/timestamp_to_event?ts&dir: the event
// closest to ts in the direction given (at or after ts for f, at or before for b) that
// the user may see. Only this server's copy of the room is searched.
func (s *Server) getTimestampToEvent(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	tsStr := q.Get("ts")
	if tsStr == "" {
		return nil, httputil.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil {
		return nil, httputil.InvalidParam("ts must be an integer")
	}
	var backward bool
	switch q.Get("dir") {
	case "f":
	case "b":
		backward = true
	case "":
		return nil, httputil.MissingParam("dir is required")
	default:
		return nil, httputil.InvalidParam("dir must be f or b")
	}
	if err := s.requireRoomReader(ctx, roomID, d.UserID); err != nil {
		return nil, err
	}
	evs, err := s.rooms.EventsNearTimestamp(ctx, roomID, ts, backward, timestampCandidates)
	if err != nil {
		return nil, err
	}
	if evs, err = s.rooms.VisibleEvents(ctx, d.UserID, evs); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		dir := "forward"
		if backward {
			dir = "backward"
		}
		return nil, httputil.NotFound("Unable to find event from %d in %s direction", ts, dir)
	}
	return map[string]any{"event_id": evs[0].EventID(), "origin_server_ts": int64(evs[0].OriginServerTS())}, nil
}
