package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// InsertFilter stores a user's filter (JSON) and returns its ID. Uploading a filter
// identical to one the user already has returns the existing ID, so clients that
// upload their filter at every start do not grow the table.
func InsertFilter(ctx context.Context, tx *Tx, userID string, filter []byte) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT filter_id FROM filters WHERE user_id = $1 AND filter = $2 ORDER BY filter_id LIMIT 1`,
		userID, string(filter)).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("find filter of %s: %w", userID, err)
	}
	err = tx.QueryRowContext(ctx, `INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`,
		userID, string(filter)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert filter of %s: %w", userID, err)
	}
	return id, nil
}

// GetFilter returns a user's filter as stored; ErrNotFound if the user has no filter with that ID.
func GetFilter(ctx context.Context, q Querier, userID string, filterID int64) ([]byte, error) {
	var filter string
	err := q.QueryRowContext(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, filterID).Scan(&filter)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get filter %d of %s: %w", filterID, userID, err)
	}
	return []byte(filter), nil
}
