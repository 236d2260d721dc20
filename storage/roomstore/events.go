package roomstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/myelin-chat/myelin/storage"
)

// Event is a row of room_events. Nullable text columns are "" when NULL, except
// StateKey which is nil for non-state events.
type Event struct {
	NID            int64
	EventID        string
	RoomNID        int64
	StreamPos      int64 // 0 when not in the timeline
	Depth          int64
	Type           string
	StateKey       *string
	TypeNID        int64
	StateKeyNID    int64
	Sender         string
	OriginServerTS int64
	Membership     string
	StateBefore    int64
	StateAfter     int64
	ReplacesID     string
	Outlier        bool
	Rejected       bool
	SoftFailed     bool
	RedactedBy     string
	RelType        string
	RelatesTo      string
	TxnID          string
	DeviceID       string
	JSON           []byte
}

const eventColumns = `event_nid, event_id, room_nid, stream_pos, depth, event_type, state_key,
	event_type_nid, state_key_nid, sender, origin_server_ts, membership, state_before, state_after,
	replaces_event_id, outlier, rejected, soft_failed, redacted_by, rel_type, relates_to, txn_id, device_id, json`

const insertEventSQL = `INSERT INTO room_events (` + eventColumns + `) VALUES (
	$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)`

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

// InsertEvent stores an event row; storage.ErrExists if the event ID is already stored.
func InsertEvent(ctx context.Context, q storage.Querier, e *Event) error {
	var sk any
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	_, err := q.ExecContext(ctx, insertEventSQL,
		e.NID, e.EventID, e.RoomNID, nullInt(e.StreamPos), e.Depth, e.Type, sk,
		e.TypeNID, e.StateKeyNID, e.Sender, e.OriginServerTS, nullStr(e.Membership), e.StateBefore, e.StateAfter,
		nullStr(e.ReplacesID), e.Outlier, e.Rejected, e.SoftFailed, nullStr(e.RedactedBy), nullStr(e.RelType),
		nullStr(e.RelatesTo), nullStr(e.TxnID), nullStr(e.DeviceID), string(e.JSON))
	if storage.IsUniqueViolation(err) {
		return storage.ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert event %s: %w", e.EventID, err)
	}
	return nil
}

// InsertEvents stores event rows with multi-row INSERTs (one round trip per 100
// events); storage.ErrExists if an event ID is already stored.
func InsertEvents(ctx context.Context, q storage.Querier, events []*Event) error {
	if d, ok := storage.DialectOf(q); ok && d == storage.SQLite {
		// SQLite runs in-process: one cached single-row statement per event is cheaper
		// than preparing a multi-row statement of a new size for every batch.
		for _, e := range events {
			if _, err := q.ExecContext(ctx, insertEventSQL, eventArgs(e)...); err != nil {
				if storage.IsUniqueViolation(err) {
					return storage.ErrExists
				}
				return fmt.Errorf("insert event %s: %w", e.EventID, err)
			}
		}
		return nil
	}
	return chunk(events, 100, func(part []*Event) error {
		var b strings.Builder
		b.WriteString(`INSERT INTO room_events (` + eventColumns + `) VALUES `)
		args := make([]any, 0, len(part)*24)
		for i, e := range part {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(len(args)+1, 24) + ")")
			args = append(args, eventArgs(e)...)
		}
		_, err := q.ExecContext(ctx, b.String(), args...)
		if storage.IsUniqueViolation(err) {
			return storage.ErrExists
		}
		if err != nil {
			return fmt.Errorf("insert %d events: %w", len(part), err)
		}
		return nil
	})
}

// eventArgs returns the values of eventColumns for e.
func eventArgs(e *Event) []any {
	var sk any
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	return []any{e.NID, e.EventID, e.RoomNID, nullInt(e.StreamPos), e.Depth, e.Type, sk,
		e.TypeNID, e.StateKeyNID, e.Sender, e.OriginServerTS, nullStr(e.Membership), e.StateBefore, e.StateAfter,
		nullStr(e.ReplacesID), e.Outlier, e.Rejected, e.SoftFailed, nullStr(e.RedactedBy), nullStr(e.RelType),
		nullStr(e.RelatesTo), nullStr(e.TxnID), nullStr(e.DeviceID), string(e.JSON)}
}

func scanEvent(rows interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var stream sql.NullInt64
	var sk, membership, replaces, redactedBy, relType, relatesTo, txnID, deviceID sql.NullString
	var js string
	err := rows.Scan(&e.NID, &e.EventID, &e.RoomNID, &stream, &e.Depth, &e.Type, &sk,
		&e.TypeNID, &e.StateKeyNID, &e.Sender, &e.OriginServerTS, &membership, &e.StateBefore, &e.StateAfter,
		&replaces, &e.Outlier, &e.Rejected, &e.SoftFailed, &redactedBy, &relType, &relatesTo, &txnID, &deviceID, &js)
	if err != nil {
		return nil, err
	}
	e.StreamPos = stream.Int64
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	e.Membership = membership.String
	e.ReplacesID = replaces.String
	e.RedactedBy = redactedBy.String
	e.RelType = relType.String
	e.RelatesTo = relatesTo.String
	e.TxnID = txnID.String
	e.DeviceID = deviceID.String
	e.JSON = []byte(js)
	return &e, nil
}

func queryEvents(ctx context.Context, q storage.Querier, query string, args ...any) ([]*Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	return out, nil
}

// EventsByNID loads events by NID, in no particular order; unknown NIDs are skipped.
func EventsByNID(ctx context.Context, q storage.Querier, nids []int64) ([]*Event, error) {
	var out []*Event
	err := chunk(nids, inChunk, func(part []int64) error {
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events WHERE event_nid IN (`+
			placeholders(1, len(part))+`)`, toArgs(part)...)
		out = append(out, evs...)
		return err
	})
	return out, err
}

// EventsByID loads events by event ID, in no particular order; unknown IDs are skipped.
func EventsByID(ctx context.Context, q storage.Querier, ids []string) ([]*Event, error) {
	var out []*Event
	err := chunk(ids, inChunk, func(part []string) error {
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events WHERE event_id IN (`+
			placeholders(1, len(part))+`)`, toArgs(part)...)
		out = append(out, evs...)
		return err
	})
	return out, err
}

// EventNIDsByID maps event IDs to NIDs; unknown IDs are absent.
func EventNIDsByID(ctx context.Context, q storage.Querier, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	err := chunk(ids, inChunk, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT event_id, event_nid FROM room_events WHERE event_id IN (`+
			placeholders(1, len(part))+`)`, toArgs(part)...)
		if err != nil {
			return fmt.Errorf("event nids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var nid int64
			if err := rows.Scan(&id, &nid); err != nil {
				return err
			}
			out[id] = nid
		}
		return rows.Err()
	})
	return out, err
}

// SetRedactedBy marks an event as redacted by a redaction event and drops its relation
// (redaction strips m.relates_to, so the event no longer counts as a relation).
func SetRedactedBy(ctx context.Context, q storage.Querier, eventNID int64, redactionID string) error {
	_, err := q.ExecContext(ctx, `UPDATE room_events SET redacted_by = $1, rel_type = NULL, relates_to = NULL
		WHERE event_nid = $2`, redactionID, eventNID)
	if err != nil {
		return fmt.Errorf("mark event %d redacted: %w", eventNID, err)
	}
	return nil
}

// Order is the direction of a page of events.
type Order int

// Page directions.
const (
	Forward Order = iota
	Backward
)

// TimelineFilter narrows a page of events by type.
type TimelineFilter struct {
	Types    []string // only these types (none: all)
	NotTypes []string // never these types
	// MaxStream, when set, leaves out events after this stream position.
	MaxStream *int64
}

func (f TimelineFilter) sql(args []any) (string, []any) {
	var b strings.Builder
	if len(f.Types) > 0 {
		b.WriteString(" AND event_type IN (" + placeholders(len(args)+1, len(f.Types)) + ")")
		args = append(args, toArgs(f.Types)...)
	}
	if len(f.NotTypes) > 0 {
		b.WriteString(" AND event_type NOT IN (" + placeholders(len(args)+1, len(f.NotTypes)) + ")")
		args = append(args, toArgs(f.NotTypes)...)
	}
	if f.MaxStream != nil {
		b.WriteString(fmt.Sprintf(" AND stream_pos <= $%d", len(args)+1))
		args = append(args, *f.MaxStream)
	}
	return b.String(), args
}

// TopoPos is a gap in the topological order of a room, just after the event at
// (Depth, Stream): events are ordered by (depth, stream_pos).
type TopoPos struct{ Depth, Stream int64 }

// EventsTopological returns up to limit timeline events of a room after the gap from
// (Forward, oldest first) or before it (Backward, newest first), not going past the
// gap to when it is non-nil.
func EventsTopological(ctx context.Context, q storage.Querier, roomNID int64, from TopoPos, to *TopoPos, dir Order, limit int, f TimelineFilter) ([]*Event, error) {
	args := []any{roomNID, from.Depth, from.Stream}
	// Row values let both engines walk the (room_nid, depth, stream_pos) index.
	after := func(d, s int) string { return fmt.Sprintf(`(depth, stream_pos) > ($%d, $%d)`, d, s) }
	before := func(d, s int) string { return fmt.Sprintf(`(depth, stream_pos) <= ($%d, $%d)`, d, s) }
	where := ` WHERE room_nid = $1 AND stream_pos IS NOT NULL AND `
	order := "ASC"
	if dir == Backward {
		order = "DESC"
		where += before(2, 3)
		if to != nil {
			where += ` AND ` + after(4, 5)
		}
	} else {
		where += after(2, 3)
		if to != nil {
			where += ` AND ` + before(4, 5)
		}
	}
	if to != nil {
		args = append(args, to.Depth, to.Stream)
	}
	fsql, args := f.sql(args)
	args = append(args, limit)
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events`+where+fsql+
		` ORDER BY depth `+order+`, stream_pos `+order+` LIMIT $`+fmt.Sprint(len(args)), args...)
}

// EventsByStream returns up to limit timeline events of a room with from < stream_pos <= to,
// oldest first (Forward) or newest first (Backward).
func EventsByStream(ctx context.Context, q storage.Querier, roomNID, from, to int64, dir Order, limit int, f TimelineFilter) ([]*Event, error) {
	order := "ASC"
	if dir == Backward {
		order = "DESC"
	}
	args := []any{roomNID, from, to}
	fsql, args := f.sql(args)
	args = append(args, limit)
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events
		WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3`+fsql+`
		ORDER BY stream_pos `+order+` LIMIT $`+fmt.Sprint(len(args)), args...)
}

// LatestStreamPosBefore returns the event of the room's timeline with the highest
// stream position <= pos (nil when none).
func LatestStreamPosBefore(ctx context.Context, q storage.Querier, roomNID, pos int64) (*Event, error) {
	evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events
		WHERE room_nid = $1 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1`, roomNID, pos)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// Relations returns up to limit timeline events relating to the target event, by
// stream position after from (Forward) or before from (Backward; from 0 means the end).
func Relations(ctx context.Context, q storage.Querier, targetID, relType, eventType string, from int64, dir Order, limit int) ([]*Event, error) {
	args := []any{targetID}
	where := ` WHERE relates_to = $1 AND stream_pos IS NOT NULL`
	if relType != "" {
		args = append(args, relType)
		where += fmt.Sprintf(` AND rel_type = $%d`, len(args))
	}
	if eventType != "" {
		args = append(args, eventType)
		where += fmt.Sprintf(` AND event_type = $%d`, len(args))
	}
	order := "ASC"
	if dir == Backward {
		order = "DESC"
		if from > 0 {
			args = append(args, from)
			where += fmt.Sprintf(` AND stream_pos < $%d`, len(args))
		}
	} else {
		args = append(args, from)
		where += fmt.Sprintf(` AND stream_pos > $%d`, len(args))
	}
	args = append(args, limit)
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events`+where+
		` ORDER BY stream_pos `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
}

// LastJoinPos returns the stream position of the user's latest accepted join to the
// room (0 if they never joined).
func LastJoinPos(ctx context.Context, q storage.Querier, roomNID int64, userID string) (int64, error) {
	var pos sql.NullInt64
	// MAX(+stream_pos): the unary plus keeps SQLite from walking the stream index
	// backwards through the whole room; the (room, type, state key) index is the one.
	err := q.QueryRowContext(ctx, `SELECT MAX(+stream_pos) FROM room_events
		WHERE room_nid = $1 AND event_type = 'm.room.member' AND state_key = $2 AND membership = 'join'`,
		roomNID, userID).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("last join of %s: %w", userID, err)
	}
	return pos.Int64, nil
}

// EventsInStream returns up to limit timeline events of every room with
// from < stream_pos <= to, oldest first (the federation sender reads new events with it).
func EventsInStream(ctx context.Context, q storage.Querier, from, to int64, limit int) ([]*Event, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM room_events
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, from, to, limit)
}

// PromoteOutlier gives a stored outlier its place in the DAG (backfill reaching an
// event first stored as part of some state): its stream position, states and flags.
func PromoteOutlier(ctx context.Context, q storage.Querier, e *Event) error {
	res, err := q.ExecContext(ctx, `UPDATE room_events SET stream_pos = $1, state_before = $2, state_after = $3,
		replaces_event_id = $4, outlier = FALSE, rejected = $5, soft_failed = $6, rel_type = $7, relates_to = $8
		WHERE event_nid = $9`,
		nullInt(e.StreamPos), e.StateBefore, e.StateAfter, nullStr(e.ReplacesID),
		e.Rejected, e.SoftFailed, nullStr(e.RelType), nullStr(e.RelatesTo), e.NID)
	if err != nil {
		return fmt.Errorf("promote outlier %s: %w", e.EventID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("promote outlier %s: %d rows", e.EventID, n)
	}
	return nil
}
