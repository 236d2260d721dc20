package roomstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/myelin-chat/myelin/storage"
)

// InsertStateBlock stores an encoded state block and returns its NID.
func InsertStateBlock(ctx context.Context, q storage.Querier, data []byte) (int64, error) {
	var nid int64
	if err := q.QueryRowContext(ctx, `INSERT INTO room_state_blocks (entries) VALUES ($1) RETURNING block_nid`, data).Scan(&nid); err != nil {
		return 0, fmt.Errorf("insert state block: %w", err)
	}
	return nid, nil
}

// StateBlocks loads encoded state blocks by NID.
func StateBlocks(ctx context.Context, q storage.Querier, nids []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(nids))
	err := chunk(nids, inChunk, func(part []int64) error {
		rows, err := q.QueryContext(ctx, `SELECT block_nid, entries FROM room_state_blocks WHERE block_nid IN (`+
			placeholders(1, len(part))+`)`, toArgs(part)...)
		if err != nil {
			return fmt.Errorf("load state blocks: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var nid int64
			var data []byte
			if err := rows.Scan(&nid, &data); err != nil {
				return err
			}
			out[nid] = data
		}
		return rows.Err()
	})
	return out, err
}

// InsertStateSnapshot stores an encoded snapshot (its list of blocks) and returns its NID.
func InsertStateSnapshot(ctx context.Context, q storage.Querier, roomNID int64, data []byte) (int64, error) {
	var nid int64
	if err := q.QueryRowContext(ctx, `INSERT INTO room_state_snapshots (room_nid, blocks) VALUES ($1, $2) RETURNING snapshot_nid`,
		roomNID, data).Scan(&nid); err != nil {
		return 0, fmt.Errorf("insert state snapshot: %w", err)
	}
	return nid, nil
}

// StateSnapshot loads an encoded snapshot; storage.ErrNotFound if unknown.
func StateSnapshot(ctx context.Context, q storage.Querier, nid int64) (roomNID int64, data []byte, err error) {
	err = q.QueryRowContext(ctx, `SELECT room_nid, blocks FROM room_state_snapshots WHERE snapshot_nid = $1`, nid).Scan(&roomNID, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, storage.ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("load state snapshot %d: %w", nid, err)
	}
	return roomNID, data, nil
}

// CurrentStateRow is a row of room_current_state.
type CurrentStateRow struct {
	RoomNID    int64
	RoomID     string
	Type       string
	StateKey   string
	EventNID   int64
	EventID    string
	Sender     string
	Membership string
	Forgotten  bool
}

// UpsertCurrentState sets the current state event of (room, type, state key). A new
// membership clears the forgotten flag.
func UpsertCurrentState(ctx context.Context, q storage.Querier, r CurrentStateRow) error {
	_, err := q.ExecContext(ctx, `INSERT INTO room_current_state
		(room_nid, room_id, event_type, state_key, event_nid, event_id, sender, membership, forgotten)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE)
		ON CONFLICT (room_nid, event_type, state_key) DO UPDATE SET
		event_nid = excluded.event_nid, event_id = excluded.event_id, sender = excluded.sender,
		membership = excluded.membership, forgotten = FALSE`,
		r.RoomNID, r.RoomID, r.Type, r.StateKey, r.EventNID, r.EventID, r.Sender, nullStr(r.Membership))
	if err != nil {
		return fmt.Errorf("upsert current state %s %s/%s: %w", r.RoomID, r.Type, r.StateKey, err)
	}
	return nil
}

// DeleteCurrentState removes (room, type, state key) from the current state (state
// resolution can drop a key).
func DeleteCurrentState(ctx context.Context, q storage.Querier, roomNID int64, eventType, stateKey string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM room_current_state WHERE room_nid = $1 AND event_type = $2 AND state_key = $3`,
		roomNID, eventType, stateKey)
	if err != nil {
		return fmt.Errorf("delete current state: %w", err)
	}
	return nil
}

func scanCurrent(rows *sql.Rows) ([]CurrentStateRow, error) {
	defer rows.Close()
	var out []CurrentStateRow
	for rows.Next() {
		var r CurrentStateRow
		var m sql.NullString
		if err := rows.Scan(&r.RoomNID, &r.RoomID, &r.Type, &r.StateKey, &r.EventNID, &r.EventID, &r.Sender, &m, &r.Forgotten); err != nil {
			return nil, err
		}
		r.Membership = m.String
		out = append(out, r)
	}
	return out, rows.Err()
}

const currentColumns = `room_nid, room_id, event_type, state_key, event_nid, event_id, sender, membership, forgotten`

// MembershipsOfUser returns the current m.room.member rows of a user in every room,
// optionally only those with the given membership.
func MembershipsOfUser(ctx context.Context, q storage.Querier, userID, membership string) ([]CurrentStateRow, error) {
	query := `SELECT ` + currentColumns + ` FROM room_current_state WHERE event_type = 'm.room.member' AND state_key = $1`
	args := []any{userID}
	if membership != "" {
		query += ` AND membership = $2`
		args = append(args, membership)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", userID, err)
	}
	out, err := scanCurrent(rows)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", userID, err)
	}
	return out, nil
}

// MembersOfRoom returns the current m.room.member rows of a room, filtered by
// membership (only) and notMembership (excluded) when they are non-empty.
func MembersOfRoom(ctx context.Context, q storage.Querier, roomNID int64, membership, notMembership string) ([]CurrentStateRow, error) {
	query := `SELECT ` + currentColumns + ` FROM room_current_state WHERE room_nid = $1 AND event_type = 'm.room.member'`
	args := []any{roomNID}
	if membership != "" {
		args = append(args, membership)
		query += fmt.Sprintf(` AND membership = $%d`, len(args))
	}
	if notMembership != "" {
		args = append(args, notMembership)
		query += fmt.Sprintf(` AND membership <> $%d`, len(args))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("members of room %d: %w", roomNID, err)
	}
	out, err := scanCurrent(rows)
	if err != nil {
		return nil, fmt.Errorf("members of room %d: %w", roomNID, err)
	}
	return out, nil
}

// CurrentStateRows returns every current state row of a room.
func CurrentStateRows(ctx context.Context, q storage.Querier, roomNID int64) ([]CurrentStateRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+currentColumns+` FROM room_current_state WHERE room_nid = $1`, roomNID)
	if err != nil {
		return nil, fmt.Errorf("current state of room %d: %w", roomNID, err)
	}
	out, err := scanCurrent(rows)
	if err != nil {
		return nil, fmt.Errorf("current state of room %d: %w", roomNID, err)
	}
	return out, nil
}

// SetForgotten marks the user's membership row of a room as forgotten. It reports
// false when the user has no membership row there.
func SetForgotten(ctx context.Context, q storage.Querier, roomNID int64, userID string) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE room_current_state SET forgotten = TRUE
		WHERE room_nid = $1 AND event_type = 'm.room.member' AND state_key = $2`, roomNID, userID)
	if err != nil {
		return false, fmt.Errorf("forget room: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// IsForgotten reports whether the user forgot the room (false when the user has no
// membership row there).
func IsForgotten(ctx context.Context, q storage.Querier, roomNID int64, userID string) (bool, error) {
	var forgotten bool
	err := q.QueryRowContext(ctx, `SELECT forgotten FROM room_current_state
		WHERE room_nid = $1 AND event_type = 'm.room.member' AND state_key = $2`, roomNID, userID).Scan(&forgotten)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("is room forgotten: %w", err)
	}
	return forgotten, nil
}

// InsertPendingRedaction remembers a redaction whose target is not known yet.
func InsertPendingRedaction(ctx context.Context, q storage.Querier, redactionID, targetID string, roomNID int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO room_pending_redactions (redaction_event_id, redacts_event_id, room_nid)
		VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, redactionID, targetID, roomNID)
	if err != nil {
		return fmt.Errorf("insert pending redaction: %w", err)
	}
	return nil
}

// PendingRedactionsOf returns the IDs of redactions waiting for the target event.
func PendingRedactionsOf(ctx context.Context, q storage.Querier, targetID string) ([]string, error) {
	out, err := storage.QueryStrings(ctx, q, `SELECT redaction_event_id FROM room_pending_redactions WHERE redacts_event_id = $1`, targetID)
	if err != nil {
		return nil, fmt.Errorf("pending redactions: %w", err)
	}
	return out, nil
}

// DeletePendingRedaction forgets a pending redaction once applied or refused.
func DeletePendingRedaction(ctx context.Context, q storage.Querier, redactionID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM room_pending_redactions WHERE redaction_event_id = $1`, redactionID)
	if err != nil {
		return fmt.Errorf("delete pending redaction: %w", err)
	}
	return nil
}

// SharesRoomWithServerSince reports whether userID has been joined to some room together
// with a user of server since position pos at the latest (both current join events,
// compared by event NID, which is also the stream position, at or before pos; pos < 0
// means any time). A later join event (a rejoin, or a profile change) does not count,
// which errs on the side of "not since".
func SharesRoomWithServerSince(ctx context.Context, q storage.Querier, userID, server string, pos int64) (bool, error) {
	if pos < 0 {
		pos = 1<<63 - 1
	}
	suffix := ":" + server
	var one int
	// (SQLite numbers $N parameters by first appearance: they appear in order.)
	err := q.QueryRowContext(ctx, `SELECT 1 FROM room_current_state u
		JOIN room_current_state l ON l.room_nid = u.room_nid AND l.event_type = 'm.room.member'
		WHERE u.event_type = 'm.room.member' AND u.state_key = $1 AND u.membership = 'join' AND u.event_nid <= $2
		AND l.membership = 'join' AND l.event_nid <= $2
		AND length(l.state_key) > $3 AND substr(l.state_key, length(l.state_key) - $3 + 1) = $4
		LIMIT 1`, userID, pos, len(suffix), suffix).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rooms shared by %s with %s: %w", userID, server, err)
	}
	return true, nil
}
