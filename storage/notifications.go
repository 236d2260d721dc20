package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
)

// Notification is an event that notified a user.
type Notification struct {
	// ID is the notification's position in the user's list (its stream position): the
	// pagination token of GET /notifications.
	ID        int64
	UserID    string
	RoomID    string
	EventID   string
	StreamPos int64
	// ThreadID is the thread root for events in a thread, "" otherwise.
	ThreadID  string
	Actions   json.RawMessage
	Highlight bool
	// Read tells whether a read receipt of the user covers the notification (set by
	// NotificationsPage; ignored by InsertNotifications: read state follows receipts).
	Read bool
	TS   int64
}

// notifyChunk is the rows per INSERT statement of notifications on SQLite.
const notifyChunk = 32

// InsertNotifications stores notifications (an event already recorded for a user is
// skipped). Whether they are read follows from the user's receipts (push_receipts).
func InsertNotifications(ctx context.Context, tx *Tx, ns []Notification) error {
	if tx.Dialect() == SQLite {
		// In-process SQLite: statements of notifyChunk rows, prepared once per call (a
		// row per statement spent more in the driver and cgo than in SQLite), and a
		// single-row statement for the rest.
		const cols = `INSERT INTO push_notifications (user_id, stream_pos, room_id, event_id, thread_id, actions, highlight, ts) VALUES `
		const tuple = `(?, ?, ?, ?, ?, ?, ?, ?)`
		const onConflict = ` ON CONFLICT (user_id, stream_pos) DO NOTHING`
		args := make([]any, 0, 8*notifyChunk)
		exec := func(stmt *sql.Stmt, part []Notification) error {
			args = args[:0]
			for _, n := range part {
				args = append(args, n.UserID, n.StreamPos, n.RoomID, n.EventID, n.ThreadID, string(n.Actions), n.Highlight, n.TS)
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("insert notifications: %w", err)
			}
			return nil
		}
		if len(ns) >= notifyChunk {
			stmt, err := tx.PrepareContext(ctx, cols+strings.Repeat(tuple+", ", notifyChunk-1)+tuple+onConflict)
			if err != nil {
				return fmt.Errorf("insert notifications: %w", err)
			}
			defer stmt.Close()
			for len(ns) >= notifyChunk {
				if err := exec(stmt, ns[:notifyChunk]); err != nil {
					return err
				}
				ns = ns[notifyChunk:]
			}
		}
		if len(ns) == 0 {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx, cols+tuple+onConflict)
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		defer stmt.Close()
		for i := range ns {
			if err := exec(stmt, ns[i:i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	// PostgreSQL: the rows as eight arrays, one statement, one round trip.
	n := len(ns)
	users, rooms, events, threads, actions := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	positions, tss := make([]int64, n), make([]int64, n)
	highlights := make([]bool, n)
	for i, x := range ns {
		users[i], rooms[i], events[i], threads[i], actions[i] = x.UserID, x.RoomID, x.EventID, x.ThreadID, string(x.Actions)
		positions[i], tss[i], highlights[i] = x.StreamPos, x.TS, x.Highlight
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO push_notifications (user_id, stream_pos, room_id, event_id, thread_id, actions, highlight, ts)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::bigint[])
		ON CONFLICT (user_id, stream_pos) DO NOTHING`, users, positions, rooms, events, threads, actions, highlights, tss)
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

// UserReceipts returns a user's read receipts by room and scope ("" unthreaded, "main",
// or a thread root).
func UserReceipts(ctx context.Context, q Querier, userID string) (map[string]map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, thread_id, stream_pos FROM push_receipts WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("receipts of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]map[string]int64{}
	for rows.Next() {
		var room, thread string
		var pos int64
		if err := rows.Scan(&room, &thread, &pos); err != nil {
			return nil, fmt.Errorf("receipts of %s: %w", userID, err)
		}
		if out[room] == nil {
			out[room] = map[string]int64{}
		}
		out[room][thread] = pos
	}
	return out, rows.Err()
}

// unreadCond is the SQL condition that the notification row n is unread: no receipt of
// its user covers it, neither an unthreaded one nor one of its scope ("main" for the
// main timeline, the thread root for a thread). Each is one primary-key lookup.
const unreadCond = `n.stream_pos > COALESCE((SELECT r.stream_pos FROM push_receipts r
		WHERE r.user_id = n.user_id AND r.room_id = n.room_id AND r.thread_id = ''), 0)
	AND n.stream_pos > COALESCE((SELECT r.stream_pos FROM push_receipts r
		WHERE r.user_id = n.user_id AND r.room_id = n.room_id
		AND r.thread_id = CASE WHEN n.thread_id = '' THEN 'main' ELSE n.thread_id END), 0)`

// MarkNotificationsRead records a read receipt: the user's notifications of the room up
// to pos are read, all of them for an unthreaded receipt (threadID ""), those of the
// main timeline for "main", those of one thread otherwise. A receipt older than the
// stored one changes nothing. It returns how many notifications became read.
func MarkNotificationsRead(ctx context.Context, tx *Tx, userID, roomID, threadID string, pos int64) (int64, error) {
	before, err := unreadInRoom(ctx, tx, userID, roomID)
	if err != nil {
		return 0, err
	}
	if err := StoreReadReceipt(ctx, tx, userID, roomID, threadID, pos); err != nil {
		return 0, err
	}
	after, err := unreadInRoom(ctx, tx, userID, roomID)
	if err != nil {
		return 0, err
	}
	return before - after, nil
}

// StoreReadReceipt records a read receipt (see MarkNotificationsRead) without counting
// what it reads; an older receipt than the stored one changes nothing.
func StoreReadReceipt(ctx context.Context, q Querier, userID, roomID, threadID string, pos int64) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO push_receipts (user_id, room_id, thread_id, stream_pos) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos = excluded.stream_pos
		WHERE excluded.stream_pos > push_receipts.stream_pos`, userID, roomID, threadID, pos); err != nil {
		return fmt.Errorf("store read receipt: %w", err)
	}
	return nil
}

// unreadInRoom counts a user's unread notifications in a room.
func unreadInRoom(ctx context.Context, q Querier, userID, roomID string) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM push_notifications n WHERE n.user_id = $1 AND n.room_id = $2 AND `+unreadCond,
		userID, roomID).Scan(&n); err != nil {
		return 0, fmt.Errorf("unread notifications of %s in %s: %w", userID, roomID, err)
	}
	return n, nil
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
		rows, err := q.QueryContext(ctx, `SELECT n.room_id, n.thread_id, COUNT(*), SUM(CASE WHEN n.highlight THEN 1 ELSE 0 END)
			FROM push_notifications n WHERE n.user_id = $1 AND `+unreadCond+extra+` GROUP BY n.room_id, n.thread_id`, args...)
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
		return run(` AND n.room_id IN (`+placeholders(2, len(part))+`)`, stringArgs([]any{userID}, part))
	})
	return out, err
}

// UnreadNotification is one unread notification of a user, as unread counts need it.
type UnreadNotification struct {
	RoomID    string
	ThreadID  string
	StreamPos int64
	Highlight bool
}

// UnreadNotificationsOf returns a user's unread notifications in stream order: what the
// push service's in-memory counts of the user start from.
func UnreadNotificationsOf(ctx context.Context, q Querier, userID string) ([]UnreadNotification, error) {
	rows, err := q.QueryContext(ctx, `SELECT n.room_id, n.thread_id, n.stream_pos, n.highlight
		FROM push_notifications n WHERE n.user_id = $1 AND `+unreadCond+` ORDER BY n.stream_pos`, userID)
	if err != nil {
		return nil, fmt.Errorf("unread notifications of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []UnreadNotification
	for rows.Next() {
		var u UnreadNotification
		if err := rows.Scan(&u.RoomID, &u.ThreadID, &u.StreamPos, &u.Highlight); err != nil {
			return nil, fmt.Errorf("unread notifications of %s: %w", userID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// TotalUnreadNotifications counts a user's unread notifications over all rooms.
func TotalUnreadNotifications(ctx context.Context, q Querier, userID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM push_notifications n WHERE n.user_id = $1 AND `+unreadCond, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unread notifications of %s: %w", userID, err)
	}
	return n, nil
}

// NotificationsPage returns a user's notifications, newest first, with IDs (stream
// positions) below before (0: from the newest), at most limit, only highlights when
// asked.
func NotificationsPage(ctx context.Context, q Querier, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	query := `SELECT n.stream_pos, n.room_id, n.event_id, n.thread_id, n.actions, n.highlight,
		CASE WHEN ` + unreadCond + ` THEN 0 ELSE 1 END, n.ts FROM push_notifications n WHERE n.user_id = $1`
	args := []any{userID}
	if before > 0 {
		args = append(args, before)
		query += fmt.Sprintf(` AND n.stream_pos < $%d`, len(args))
	}
	if onlyHighlight {
		query += ` AND n.highlight = TRUE`
	}
	args = append(args, limit)
	query += fmt.Sprintf(` ORDER BY n.stream_pos DESC LIMIT $%d`, len(args))
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("notifications of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n := Notification{UserID: userID}
		var actions string
		var read int
		if err := rows.Scan(&n.StreamPos, &n.RoomID, &n.EventID, &n.ThreadID, &actions, &n.Highlight, &read, &n.TS); err != nil {
			return nil, err
		}
		n.ID, n.Read, n.Actions = n.StreamPos, read == 1, json.RawMessage(actions)
		out = append(out, n)
	}
	return out, rows.Err()
}

// PruneNotifications deletes read notifications older than a timestamp (ms).
func PruneNotifications(ctx context.Context, db *DB, olderThanTS int64) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM push_notifications WHERE (user_id, stream_pos) IN (
		SELECT n.user_id, n.stream_pos FROM push_notifications n WHERE n.ts < $1 AND NOT (`+unreadCond+`))`, olderThanTS)
	if err != nil {
		return 0, fmt.Errorf("prune notifications: %w", err)
	}
	return res.RowsAffected()
}
