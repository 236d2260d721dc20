package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
)

// timestampCandidates is how many events near the timestamp are checked for visibility.
const timestampCandidates = 100

// getTimestampToEvent serves GET /rooms/{roomId}/timestamp_to_event?ts&dir: the event
// closest to ts in the direction given (at or after ts for f, at or before for b) that
// the user may see. Where our copy of the room may not reach ts, other servers of the
// room are asked too.
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
	if s.remote != nil {
		// Our copy of the room may not cover ts (history from before we joined): when
		// nothing is found, or the event found forwards follows a gap in our DAG,
		// other servers of the room are asked, and their event wins when closer.
		var local *roomserver.Event
		if len(evs) > 0 {
			local = evs[0]
		}
		gap := local == nil
		if local != nil && !backward {
			if gap, err = s.gapBefore(ctx, local); err != nil {
				return nil, err
			}
		}
		if gap {
			id, rts, err := s.remote.TimestampToEvent(ctx, roomID, ts, backward)
			if err != nil {
				logrus.WithError(err).WithField("room_id", roomID).Info("timestamp_to_event over federation failed")
			} else if id != "" && (local == nil || absDiff(rts, ts) < absDiff(int64(local.OriginServerTS()), ts)) {
				if ev, err := s.rooms.EventForUser(ctx, d.UserID, roomID, id); err == nil {
					return map[string]any{"event_id": ev.EventID(), "origin_server_ts": int64(ev.OriginServerTS())}, nil
				}
			}
		}
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

// gapBefore reports whether some prev event of ev is not in our timeline: history
// before it is missing here (it was not backfilled yet).
func (s *Server) gapBefore(ctx context.Context, ev *roomserver.Event) (bool, error) {
	prevs := ev.PrevEventIDs()
	found, err := s.rooms.Events(ctx, prevs)
	if err != nil {
		return false, err
	}
	for _, id := range prevs {
		if p := found[id]; p == nil || p.Outlier {
			return true, nil
		}
	}
	return false, nil
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}
