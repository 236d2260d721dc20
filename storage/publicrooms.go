package storage

import (
	"context"
	"fmt"
)

// SetRoomPublished publishes a room in the public room directory, or removes it.
func SetRoomPublished(ctx context.Context, q Querier, roomID string, public bool) error {
	var err error
	if public {
		_, err = q.ExecContext(ctx, `INSERT INTO room_directory (room_id, published_ts) VALUES ($1, $2)
			ON CONFLICT (room_id) DO NOTHING`, roomID, NowMS())
	} else {
		_, err = q.ExecContext(ctx, `DELETE FROM room_directory WHERE room_id = $1`, roomID)
	}
	if err != nil {
		return fmt.Errorf("set directory visibility of %s: %w", roomID, err)
	}
	return nil
}

// IsRoomPublished reports whether a room is in the public room directory.
func IsRoomPublished(ctx context.Context, q Querier, roomID string) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM room_directory WHERE room_id = $1`, roomID).Scan(&n); err != nil {
		return false, fmt.Errorf("directory visibility of %s: %w", roomID, err)
	}
	return n > 0, nil
}

// PublishedRooms returns the IDs of the rooms in the public room directory, sorted.
func PublishedRooms(ctx context.Context, q Querier) ([]string, error) {
	out, err := QueryStrings(ctx, q, `SELECT room_id FROM room_directory ORDER BY room_id`)
	if err != nil {
		return nil, fmt.Errorf("published rooms: %w", err)
	}
	return out, nil
}
