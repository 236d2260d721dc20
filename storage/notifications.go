package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// Notification is an event that notified a user.
type Notification struct {
	ID        int64
	UserID    string
	RoomID    string
	EventID   string
	StreamPos int64
	// ThreadID is the thread root for events in a thread, "" otherwise.
	ThreadID  string
	Actions   json.RawMessage
	Highlight bool
	Read      bool
	TS        int64
}

// InsertNotifications stores notifications (an event already recorded for a user is
// skipped).
func InsertNotifications(ctx context.Context, tx *Tx, ns []Notification) error {
	if tx.Dialect() == SQLite {
		// In-process SQLite: one prepared single-row statement beats compiling large
		// multi-row statements; PostgreSQL prefers fewer round trips.
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO push_notifications (user_id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_id, stream_pos) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		defer stmt.Close()
		for _, n := range ns {
			if _, err := stmt.ExecContext(ctx, n.UserID, n.RoomID, n.EventID, n.StreamPos, n.ThreadID, string(n.Actions), n.Highlight, n.Read, n.TS); err != nil {
				return fmt.Errorf("insert notifications: %w", err)
			}
		}
		return nil
	}
	// PostgreSQL: the rows as nine arrays, one statement, one round trip.
	n := len(ns)
	users, rooms, events, threads, actions := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	positions, tss := make([]int64, n), make([]int64, n)
	highlights, reads := make([]bool, n), make([]bool, n)
	for i, x := range ns {
		users[i], rooms[i], events[i], threads[i], actions[i] = x.UserID, x.RoomID, x.EventID, x.ThreadID, string(x.Actions)
		positions[i], tss[i], highlights[i], reads[i] = x.StreamPos, x.TS, x.Highlight, x.Read
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO push_notifications (user_id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::boolean[], $8::boolean[], $9::bigint[])
		ON CONFLICT (user_id, stream_pos) DO NOTHING`, users, rooms, events, positions, threads, actions, highlights, reads, tss)
	if err != nil {
		return fmt.Errorf("insert notifications: %w", err)
	}
	return nil
}

// ReadReceipt is a user's latest read position in a room (ThreadID "" for an
// unthreaded receipt, "main" for the main timeline, else a thread root).
type ReadReceipt struct {
	UserID    string
	ThreadID  string
	StreamPos int64
}

// ReceiptsAtOrAfter returns the read receipts of a room at or after a stream position.
func ReceiptsAtOrAfter(ctx context.Context, q Querier, roomID string, pos int64) ([]ReadReceipt, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, thread_id, stream_pos FROM push_receipts WHERE room_id = $1 AND stream_pos >= $2`, roomID, pos)
	if err != nil {
		return nil, fmt.Errorf("receipts of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []ReadReceipt
	for rows.Next() {
		var r ReadReceipt
		if err := rows.Scan(&r.UserID, &r.ThreadID, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkNotificationsRead records a read receipt and marks the user's notifications of
// the room up to pos as read: all of them for an unthreaded receipt (threadID ""),
// those of the main timeline for "main", those of one thread otherwise. It returns
// how many notifications became read.
func MarkNotificationsRead(ctx context.Context, tx *Tx, userID, roomID, threadID string, pos int64) (int64, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO push_receipts (user_id, room_id, thread_id, stream_pos) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos = excluded.stream_pos
		WHERE excluded.stream_pos > push_receipts.stream_pos`, userID, roomID, threadID, pos); err != nil {
		return 0, fmt.Errorf("store read receipt: %w", err)
	}
	query := `UPDATE push_notifications SET is_read = TRUE WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3 AND is_read = FALSE`
	args := []any{userID, roomID, pos}
	switch threadID {
	case "":
	case "main":
		query += ` AND thread_id = ''`
	default:
		query += ` AND thread_id = $4`
		args = append(args, threadID)
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("mark notifications read: %w", err)
	}
	return res.RowsAffected()
}

// UnreadCount is the number of unread notifications and highlights of a room thread.
type UnreadCount struct {
	RoomID        string
	ThreadID      string
	Notifications int
	Highlights    int
}

// UnreadNotificationCounts returns a user's unread counts per room and thread, for the
// given rooms (all rooms when roomIDs is nil).
func UnreadNotificationCounts(ctx context.Context, q Querier, userID string, roomIDs []string) ([]UnreadCount, error) {
	var out []UnreadCount
	run := func(extra string, args []any) error {
		rows, err := q.QueryContext(ctx, `SELECT room_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)
			FROM push_notifications WHERE user_id = $1 AND is_read = FALSE`+extra+` GROUP BY room_id, thread_id`, args...)
		if err != nil {
			return fmt.Errorf("unread counts of %s: %w", userID, err)
		}
		defer rows.Close()
		for rows.Next() {
			var c UnreadCount
			if err := rows.Scan(&c.RoomID, &c.ThreadID, &c.Notifications, &c.Highlights); err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	}
	if roomIDs == nil {
		return out, run("", []any{userID})
	}
	err := chunks(roomIDs, func(part []string) error {
		return run(` AND room_id IN (`+placeholders(2, len(part))+`)`, stringArgs([]any{userID}, part))
	})
	return out, err
}

// TotalUnreadNotifications counts a user's unread notifications over all rooms.
func TotalUnreadNotifications(ctx context.Context, q Querier, userID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM push_notifications WHERE user_id = $1 AND is_read = FALSE`, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unread notifications of %s: %w", userID, err)
	}
	return n, nil
}

// NotificationsPage returns a user's notifications, newest first, with IDs below
// before (0: from the newest), at most limit, only highlights when asked.
func NotificationsPage(ctx context.Context, q Querier, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	query := `SELECT id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts FROM push_notifications WHERE user_id = $1`
	args := []any{userID}
	if before > 0 {
		args = append(args, before)
		query += fmt.Sprintf(` AND id < $%d`, len(args))
	}
	if onlyHighlight {
		query += ` AND highlight = TRUE`
	}
	args = append(args, limit)
	query += fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("notifications of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n := Notification{UserID: userID}
		var actions string
		if err := rows.Scan(&n.ID, &n.RoomID, &n.EventID, &n.StreamPos, &n.ThreadID, &actions, &n.Highlight, &n.Read, &n.TS); err != nil {
			return nil, err
		}
		n.Actions = json.RawMessage(actions)
		out = append(out, n)
	}
	return out, rows.Err()
}

// PruneNotifications deletes read notifications older than a timestamp (ms).
func PruneNotifications(ctx context.Context, db *DB, olderThanTS int64) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM push_notifications WHERE is_read = TRUE AND ts < $1`, olderThanTS)
	if err != nil {
		return 0, fmt.Errorf("prune notifications: %w", err)
	}
	return res.RowsAffected()
}
