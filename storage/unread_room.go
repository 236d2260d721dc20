package storage

import (
	"context"
	"fmt"
)

// UserUnreadCount is one user's unread notification count in one thread of a room
// (ThreadID "" is the main timeline).
type UserUnreadCount struct {
	UserID        string
	ThreadID      string
	Notifications int
	Highlights    int
}

// RoomUnreadNotificationCounts returns the unread counts of every user of a room that
// has any, by thread: one query for all the members /sync wakes for a new event.
func RoomUnreadNotificationCounts(ctx context.Context, q Querier, roomID string) ([]UserUnreadCount, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)
		FROM push_notifications WHERE room_id = $1 AND is_read = FALSE GROUP BY user_id, thread_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("unread counts of room %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []UserUnreadCount
	for rows.Next() {
		var c UserUnreadCount
		if err := rows.Scan(&c.UserID, &c.ThreadID, &c.Notifications, &c.Highlights); err != nil {
			return nil, fmt.Errorf("unread counts of room %s: %w", roomID, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
