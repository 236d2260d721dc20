package roomserver

// Small read-only queries for the client API's directory, relations, threads and
// timestamp_to_event endpoints (clientapi/relations.go, clientapi/timestamp.go).

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// EventsNearTimestamp returns up to limit timeline events of a room closest to ts:
// those with origin_server_ts >= ts, oldest first (forward), or <= ts, newest first
// (backward). Rejected and soft-failed events are left out.
func (rs *Roomserver) EventsNearTimestamp(ctx context.Context, roomID string, ts int64, backward bool, limit int) ([]*Event, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	cmp, order := ">=", "ASC"
	if backward {
		cmp, order = "<=", "DESC"
	}
	rows, err := rs.db.QueryContext(ctx, `SELECT event_nid FROM room_events
		WHERE room_nid = $1 AND stream_pos IS NOT NULL AND origin_server_ts `+cmp+` $2
		ORDER BY origin_server_ts `+order+`, stream_pos `+order+` LIMIT $3`, r.nid, ts, limit)
	if err != nil {
		return nil, fmt.Errorf("events near timestamp: %w", err)
	}
	return rs.eventsOfNIDRows(ctx, rows)
}

// ThreadRoot is a thread of a room: its root event and its latest reply position.
type ThreadRoot struct {
	RootID string
	// LatestPos is the stream position of the latest m.thread reply.
	LatestPos int64
}

// ThreadRoots returns the threads of a room (events that have m.thread replies), by
// latest reply, newest first, whose latest reply is before the stream position before
// (0: no bound). With participant set, only threads whose root or a reply was sent by
// that user.
func (rs *Roomserver) ThreadRoots(ctx context.Context, roomID string, before int64, participant string, limit int) ([]ThreadRoot, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if before <= 0 {
		before = 1 << 62
	}
	args := []any{r.nid, before}
	having := ` HAVING MAX(e.stream_pos) < $2`
	if participant != "" {
		args = append(args, participant)
		having += ` AND (SUM(CASE WHEN e.sender = $3 THEN 1 ELSE 0 END) > 0 OR EXISTS (
			SELECT 1 FROM room_events root WHERE root.event_id = e.relates_to AND root.sender = $3))`
	}
	args = append(args, limit)
	rows, err := rs.db.QueryContext(ctx, `SELECT e.relates_to, MAX(e.stream_pos) FROM room_events e
		WHERE e.room_nid = $1 AND e.rel_type = 'm.thread' AND e.stream_pos IS NOT NULL
		GROUP BY e.relates_to`+having+`
		ORDER BY MAX(e.stream_pos) DESC LIMIT $`+fmt.Sprint(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("thread roots: %w", err)
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if err := rows.Scan(&t.RootID, &t.LatestPos); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

type nidRows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}

func (rs *Roomserver) eventsOfNIDRows(ctx context.Context, rows nidRows) ([]*Event, error) {
	defer rows.Close()
	var nids []int64
	for rows.Next() {
		var nid int64
		if err := rows.Scan(&nid); err != nil {
			return nil, err
		}
		nids = append(nids, nid)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	m, err := rs.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(nids))
	for _, nid := range nids {
		if ev := m[nid]; ev != nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

// PowerToSend reports whether userID's current power level in a room is enough to send
// an event of eventType (a state event when isState), with the creators of v12 rooms
// having unlimited power. It also returns the user's level.
func (rs *Roomserver) PowerToSend(ctx context.Context, roomID, userID, eventType string, isState bool) (bool, int64, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return false, 0, err
	}
	head := r.head.Load()
	pl, err := rs.powerLevels(ctx, head.state, head.create)
	if err != nil {
		return false, 0, err
	}
	level := pl.level(spec.SenderID(userID))
	return level >= pl.EventLevel(eventType, isState), level, nil
}
