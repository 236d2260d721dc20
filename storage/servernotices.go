package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ServerNoticeRoom returns the user's server notice room; ErrNotFound when the user
// never got a notice.
func ServerNoticeRoom(ctx context.Context, q Querier, userID string) (string, error) {
	var roomID string
	err := q.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("server notice room of %s: %w", userID, err)
	}
	return roomID, nil
}

// SetServerNoticeRoom records the user's server notice room.
func SetServerNoticeRoom(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id, created_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, created_ts = excluded.created_ts`, userID, roomID, NowMS())
	if err != nil {
		return fmt.Errorf("set server notice room of %s: %w", userID, err)
	}
	return nil
}

// IsServerNoticeRoom reports whether roomID is userID's server notice room.
func IsServerNoticeRoom(ctx context.Context, q Querier, userID, roomID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM server_notice_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("is server notice room: %w", err)
	}
	return n > 0, nil
}
