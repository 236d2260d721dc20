package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Stream names of the stream_positions counters. /sync orders each kind of data by
// the positions of its stream.
const (
	StreamAccountData = "account_data"
)

// NextStreamPosition takes the next position of a stream (1 for the first call) inside tx.
//
// The counter is a single row updated in place, so the row stays locked until tx ends:
// transactions that take positions from the same stream are serialised, and commit in
// the order of their positions. A reader that sees position N committed therefore never
// later sees a smaller position appear, which is what /sync's "since" tokens rely on. A
// rolled-back transaction gives its position back. Take the position as late as possible
// in the transaction (just before writing the row that carries it) to keep the lock short.
func NextStreamPosition(ctx context.Context, tx *Tx, stream string) (int64, error) {
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO stream_positions (stream, position) VALUES ($1, 1)
		ON CONFLICT (stream) DO UPDATE SET position = stream_positions.position + 1
		RETURNING position`, stream).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("next position of stream %s: %w", stream, err)
	}
	return pos, nil
}

// CurrentStreamPosition returns the latest committed position of a stream (0 when none was taken yet).
func CurrentStreamPosition(ctx context.Context, q Querier, stream string) (int64, error) {
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT position FROM stream_positions WHERE stream = $1`, stream).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("current position of stream %s: %w", stream, err)
	}
	return pos, nil
}
