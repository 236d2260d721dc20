// Package roomstore holds the SQL of the room DAG: rooms, events, state blocks and
// snapshots, the current state table and numeric IDs. It is written once for SQLite
// and PostgreSQL. The roomserver owns the logic; this package only reads and writes
// rows (see docs/roomserver.md for the model).
package roomstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/storage"
)

// Room is a row of the rooms table.
type Room struct {
	NID          int64
	RoomID       string
	Version      string
	SnapshotNID  int64
	Extremities  []int64
	LastEventNID int64
}

// InsertRoom creates a room row and returns its NID; storage.ErrExists if the room ID is taken.
func InsertRoom(ctx context.Context, q storage.Querier, roomID, version string, nowMS int64) (int64, error) {
	var nid int64
	err := q.QueryRowContext(ctx, `INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)
		RETURNING room_nid`, roomID, version, nowMS).Scan(&nid)
	if storage.IsUniqueViolation(err) {
		return 0, storage.ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("insert room %s: %w", roomID, err)
	}
	return nid, nil
}

const roomColumns = `room_nid, room_id, room_version, state_snapshot_nid, extremities, last_event_nid`

func scanRoom(row interface{ Scan(...any) error }) (Room, error) {
	var r Room
	var ext string
	if err := row.Scan(&r.NID, &r.RoomID, &r.Version, &r.SnapshotNID, &ext, &r.LastEventNID); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(ext), &r.Extremities); err != nil {
		return r, fmt.Errorf("room %s: bad extremities %q: %w", r.RoomID, ext, err)
	}
	return r, nil
}

// GetRoom loads a room by ID; storage.ErrNotFound if unknown.
func GetRoom(ctx context.Context, q storage.Querier, roomID string) (Room, error) {
	r, err := scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rooms WHERE room_id = $1`, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("get room %s: %w", roomID, err)
	}
	return r, nil
}

// GetRoomByNID loads a room by NID; storage.ErrNotFound if unknown.
func GetRoomByNID(ctx context.Context, q storage.Querier, nid int64) (Room, error) {
	r, err := scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rooms WHERE room_nid = $1`, nid))
	if errors.Is(err, sql.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("get room %d: %w", nid, err)
	}
	return r, nil
}

// RoomHeadVersion returns last_event_nid of a room: a cheap staleness check for cached heads.
func RoomHeadVersion(ctx context.Context, q storage.Querier, roomNID int64) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT last_event_nid FROM rooms WHERE room_nid = $1`, roomNID).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("room head version %d: %w", roomNID, err)
	}
	return v, nil
}

// UpdateRoomHead stores the current state snapshot and forward extremities of a room.
func UpdateRoomHead(ctx context.Context, q storage.Querier, roomNID, snapshotNID int64, extremities []int64, lastEventNID int64) error {
	_, err := q.ExecContext(ctx, `UPDATE rooms SET state_snapshot_nid = $1, extremities = $2, last_event_nid = $3
		WHERE room_nid = $4`, snapshotNID, encodeNIDs(extremities), lastEventNID, roomNID)
	if err != nil {
		return fmt.Errorf("update room head %d: %w", roomNID, err)
	}
	return nil
}

// RoomHead is the new head of a room for UpdateRoomHeads.
type RoomHead struct {
	RoomNID      int64
	SnapshotNID  int64
	Extremities  []int64
	LastEventNID int64
}

// UpdateRoomHeads stores the heads of several rooms in one statement per 100 rooms.
func UpdateRoomHeads(ctx context.Context, q storage.Querier, heads []RoomHead) error {
	if d, ok := storage.DialectOf(q); ok && d == storage.SQLite {
		// In-process engine: a cached single-row statement per room (see InsertEvents).
		for _, h := range heads {
			// SQLite numbers $N parameters in order of appearance: keep them in order.
			if _, err := q.ExecContext(ctx, `UPDATE rooms SET state_snapshot_nid = $1, extremities = $2, last_event_nid = $3
				WHERE room_nid = $4`, h.SnapshotNID, encodeNIDs(h.Extremities), h.LastEventNID, h.RoomNID); err != nil {
				return fmt.Errorf("update head of room %d: %w", h.RoomNID, err)
			}
		}
		return nil
	}
	return chunk(heads, 100, func(part []RoomHead) error {
		var b strings.Builder
		b.WriteString(`UPDATE rooms SET state_snapshot_nid = v.column2, extremities = v.column3, last_event_nid = v.column4 FROM (VALUES `)
		args := make([]any, 0, len(part)*4)
		for i, h := range part {
			if i > 0 {
				b.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&b, "(CAST($%d AS BIGINT), CAST($%d AS BIGINT), CAST($%d AS TEXT), CAST($%d AS BIGINT))", n+1, n+2, n+3, n+4)
			args = append(args, h.RoomNID, h.SnapshotNID, encodeNIDs(h.Extremities), h.LastEventNID)
		}
		b.WriteString(`) AS v WHERE rooms.room_nid = v.column1`)
		if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("update %d room heads: %w", len(part), err)
		}
		return nil
	})
}

func encodeNIDs(nids []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range nids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(n, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// MaxEventNID returns the highest event NID or stream position stored (0 when there
// is none): an outlier promoted into the live timeline keeps its NID and takes a newly
// allocated position, which a restart must not hand out again.
func MaxEventNID(ctx context.Context, q storage.Querier) (int64, error) {
	var n, p sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(event_nid), MAX(stream_pos) FROM room_events`).Scan(&n, &p); err != nil {
		return 0, fmt.Errorf("max event nid: %w", err)
	}
	return max(n.Int64, p.Int64), nil
}

// NextEventNIDs takes n values from the PostgreSQL sequence behind room_events.event_nid.
// They are increasing and never reused, also across processes.
func NextEventNIDs(ctx context.Context, q storage.Querier, n int) ([]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT nextval(pg_get_serial_sequence('room_events', 'event_nid')) FROM generate_series(1, $1)`, n)
	if err != nil {
		return nil, fmt.Errorf("allocate event nids: %w", err)
	}
	defer rows.Close()
	out := make([]int64, 0, n)
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// placeholders returns "$start, $start+1, ..." for n values.
func placeholders(start, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(start + i))
	}
	return b.String()
}

// chunk calls fn with slices of at most size elements.
func chunk[T any](items []T, size int, fn func([]T) error) error {
	for len(items) > 0 {
		n := min(len(items), size)
		if err := fn(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

func toArgs[T any](items []T) []any {
	args := make([]any, len(items))
	for i, v := range items {
		args[i] = v
	}
	return args
}

// inChunk is how many values go in one IN (...) list.
const inChunk = 500
