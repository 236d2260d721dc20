package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// AccountData is one piece of a user's account data: global when RoomID is "".
type AccountData struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData creates or replaces a user's account data of a type (roomID "" for
// global data) and returns the new position it takes in the account_data stream.
func PutAccountData(ctx context.Context, tx *Tx, userID, roomID, dataType string, content json.RawMessage) (int64, error) {
	pos, err := NextStreamPosition(ctx, tx, StreamAccountData)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, dataType, string(content), pos)
	if err != nil {
		return 0, fmt.Errorf("put account data %s for %s: %w", dataType, userID, err)
	}
	return pos, nil
}

// SetAccountData is PutAccountData in a transaction of its own.
func SetAccountData(ctx context.Context, db *DB, userID, roomID, dataType string, content json.RawMessage) (pos int64, err error) {
	err = db.WithTx(ctx, func(tx *Tx) error {
		pos, err = PutAccountData(ctx, tx, userID, roomID, dataType, content)
		return err
	})
	return pos, err
}

// deletedContent is what a deleted piece of account data holds (MSC3391): the row stays
// with a new stream position so that incremental syncs tell clients it is gone.
const deletedContent = "{}"

// DeleteAccountData deletes a user's account data of a type (MSC3391: it is replaced by
// empty content, which reads as absent) and returns its new stream position, or 0 when
// there was nothing to delete.
func DeleteAccountData(ctx context.Context, tx *Tx, userID, roomID, dataType string) (int64, error) {
	content, err := GetAccountData(ctx, tx, userID, roomID, dataType)
	if errors.Is(err, ErrNotFound) || string(content) == deletedContent {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return PutAccountData(ctx, tx, userID, roomID, dataType, json.RawMessage(deletedContent))
}

// GetAccountData returns the content of a user's account data; ErrNotFound if there is
// none or it was deleted (empty content, MSC3391).
func GetAccountData(ctx context.Context, q Querier, userID, roomID, dataType string) (json.RawMessage, error) {
	var content string
	err := q.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3`,
		userID, roomID, dataType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) || content == deletedContent {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get account data %s for %s: %w", dataType, userID, err)
	}
	return json.RawMessage(content), nil
}

// AccountDataSince returns a user's account data (global and per room) written after
// position from and up to position to (inclusive), oldest first; to <= 0 means no upper bound.
// Each type appears once, with its latest content. From the stream's start (from <= 0,
// an initial sync) deleted data is left out; after it, a deletion shows as empty content.
func AccountDataSince(ctx context.Context, q Querier, userID string, from, to int64) ([]AccountData, error) {
	query := `SELECT room_id, data_type, content, stream_pos FROM account_data WHERE user_id = $1 AND stream_pos > $2`
	args := []any{userID, from}
	if from <= 0 {
		query += ` AND content <> '` + deletedContent + `'`
	}
	if to > 0 {
		query += ` AND stream_pos <= $3`
		args = append(args, to)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY stream_pos`, args...)
	if err != nil {
		return nil, fmt.Errorf("account data of %s since %d: %w", userID, from, err)
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var content string
		if err := rows.Scan(&a.RoomID, &a.Type, &content, &a.StreamPos); err != nil {
			return nil, fmt.Errorf("account data of %s since %d: %w", userID, from, err)
		}
		a.Content = json.RawMessage(content)
		out = append(out, a)
	}
	return out, rows.Err()
}
