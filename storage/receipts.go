package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// StreamReceipts is the stream of read receipts.
const StreamReceipts = "receipts"

// Receipt is a user's latest receipt of a type in a room (and thread).
type Receipt struct {
	RoomID string
	Type   string
	UserID string
	// ThreadID is "" for an unthreaded receipt, "main" or a thread root otherwise.
	ThreadID  string
	EventID   string
	TS        int64
	StreamPos int64
}

// PutReceipt stores a receipt, replacing the user's previous one of the same type and
// thread in the room, and returns its position in the receipts stream.
func PutReceipt(ctx context.Context, tx *Tx, r Receipt) (int64, error) {
	pos, err := NextStreamPosition(ctx, tx, StreamReceipts)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, receipt_type, user_id, thread_id)
		DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
		r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, pos)
	if err != nil {
		return 0, fmt.Errorf("put receipt of %s in %s: %w", r.UserID, r.RoomID, err)
	}
	return pos, nil
}

// ReceiptsSince returns the receipts of the given rooms written after position from
// and up to position to (inclusive; to <= 0 means no upper bound), oldest first.
func ReceiptsSince(ctx context.Context, q Querier, roomIDs []string, from, to int64) ([]Receipt, error) {
	var out []Receipt
	err := chunks(roomIDs, func(part []string) error {
		query := `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
			WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN (` + placeholders(3, len(part)) + `) ORDER BY stream_pos`
		upper := to
		if upper <= 0 {
			upper = 1<<62 - 1
		}
		rows, err := q.QueryContext(ctx, query, stringArgs([]any{from, upper}, part)...)
		if err != nil {
			return fmt.Errorf("receipts since %d: %w", from, err)
		}
		defer rows.Close()
		for rows.Next() {
			var r Receipt
			if err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
				return fmt.Errorf("receipts since %d: %w", from, err)
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
}

// GetReceipt returns a user's receipt of a type in a room and thread; ErrNotFound when none.
func GetReceipt(ctx context.Context, q Querier, roomID, receiptType, userID, threadID string) (Receipt, error) {
	r := Receipt{RoomID: roomID, Type: receiptType, UserID: userID, ThreadID: threadID}
	err := q.QueryRowContext(ctx, `SELECT event_id, ts, stream_pos FROM receipts
		WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = $4`,
		roomID, receiptType, userID, threadID).Scan(&r.EventID, &r.TS, &r.StreamPos)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return r, ErrNotFound
		}
		return r, fmt.Errorf("get receipt: %w", err)
	}
	return r, nil
}

// StreamPositions returns the latest committed position of every stream counter
// (streams never used are absent, i.e. position 0), in one query.
func StreamPositions(ctx context.Context, q Querier) (map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT stream, position FROM stream_positions`)
	if err != nil {
		return nil, fmt.Errorf("stream positions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var p int64
		if err := rows.Scan(&s, &p); err != nil {
			return nil, fmt.Errorf("stream positions: %w", err)
		}
		out[s] = p
	}
	return out, rows.Err()
}
