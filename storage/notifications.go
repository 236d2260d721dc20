package storage

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// noteEntry is one notification in a push_notification_sets row.
type noteEntry struct {
	Pos       int64           `json:"p"`
	Room      string          `json:"r"`
	Event     string          `json:"e"`
	Thread    string          `json:"t,omitempty"`
	Actions   json.RawMessage `json:"a"`
	Highlight bool            `json:"h,omitempty"`
	TS        int64           `json:"ts"`
}

// InsertNotifications stores notifications: one row per user holding all of that
// user's notifications given (a replayed set is skipped). Whether they are read
// follows from the user's receipts (push_receipts).
func InsertNotifications(ctx context.Context, tx *Tx, ns []Notification) error {
	byUser := map[string][]noteEntry{}
	var users []string
	for _, n := range ns {
		if _, ok := byUser[n.UserID]; !ok {
			users = append(users, n.UserID)
		}
		actions := n.Actions
		if len(actions) == 0 {
			actions = json.RawMessage(`[]`)
		}
		byUser[n.UserID] = append(byUser[n.UserID], noteEntry{Pos: n.StreamPos, Room: n.RoomID, Event: n.EventID,
			Thread: n.ThreadID, Actions: actions, Highlight: n.Highlight, TS: n.TS})
	}
	k := len(users)
	firsts, lasts, lastTSs := make([]int64, k), make([]int64, k), make([]int64, k)
	entries := make([]string, k)
	for i, u := range users {
		es := byUser[u]
		slices.SortStableFunc(es, func(a, b noteEntry) int { return cmp.Compare(a.Pos, b.Pos) })
		firsts[i], lasts[i], entries[i] = es[0].Pos, es[len(es)-1].Pos, string(appendEntries(nil, es))
		for _, e := range es {
			lastTSs[i] = max(lastTSs[i], e.TS)
		}
	}
	if tx.Dialect() == Postgres {
		// The rows as arrays: one statement, one round trip.
		_, err := tx.ExecContext(ctx, `INSERT INTO push_notification_sets (user_id, first_pos, last_pos, last_ts, entries)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
			ON CONFLICT (user_id, first_pos, last_pos) DO NOTHING`, users, firsts, lasts, lastTSs, entries)
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO push_notification_sets (user_id, first_pos, last_pos, last_ts, entries)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, first_pos, last_pos) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("insert notifications: %w", err)
	}
	defer stmt.Close()
	for i, u := range users {
		if _, err := stmt.ExecContext(ctx, u, firsts[i], lasts[i], lastTSs[i], entries[i]); err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
	}
	return nil
}

// appendEntries appends the JSON of entries (as encoding/json would write it, without
// its reflection: this runs for every notified user of every message).
func appendEntries(b []byte, es []noteEntry) []byte {
	b = append(b, '[')
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"p":`...)
		b = strconv.AppendInt(b, e.Pos, 10)
		b = append(b, `,"r":`...)
		b = appendJSONString(b, e.Room)
		b = append(b, `,"e":`...)
		b = appendJSONString(b, e.Event)
		if e.Thread != "" {
			b = append(b, `,"t":`...)
			b = appendJSONString(b, e.Thread)
		}
		b = append(b, `,"a":`...)
		b = append(b, e.Actions...) // JSON already (InsertNotifications puts [] for none)
		if e.Highlight {
			b = append(b, `,"h":true`...)
		}
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, e.TS, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			js, _ := json.Marshal(s)
			return append(b, js...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// noteSet is one decoded row of push_notification_sets.
type noteSet struct {
	id       int64
	firstPos int64
	entries  []noteEntry
}

// notificationSetsOf reads a user's rows, newest first, with first_pos at or after from
// and below before (0: no bound), at most limit (0: all).
func notificationSetsOf(ctx context.Context, q Querier, userID string, from, before int64, limit int) ([]noteSet, error) {
	query := `SELECT id, first_pos, entries FROM push_notification_sets WHERE user_id = $1`
	args := []any{userID}
	if from > 0 {
		args = append(args, from)
		query += fmt.Sprintf(` AND first_pos >= $%d`, len(args))
	}
	if before > 0 {
		args = append(args, before)
		query += fmt.Sprintf(` AND first_pos < $%d`, len(args))
	}
	query += ` ORDER BY first_pos DESC, last_pos DESC`
	if limit > 0 {
		args = append(args, limit)
		query += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("notifications of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []noteSet
	for rows.Next() {
		var set noteSet
		var js string
		if err := rows.Scan(&set.id, &set.firstPos, &js); err != nil {
			return nil, fmt.Errorf("notifications of %s: %w", userID, err)
		}
		if err := json.Unmarshal([]byte(js), &set.entries); err != nil {
			return nil, fmt.Errorf("notifications of %s: row %d: %w", userID, set.id, err)
		}
		out = append(out, set)
	}
	return out, rows.Err()
}

// receiptsRead tells whether a user's receipts (by room and scope) read a notification.
func receiptsRead(receipts map[string]map[string]int64, roomID, threadID string, pos int64) bool {
	rs := receipts[roomID]
	if rs == nil {
		return false
	}
	scope := threadID
	if scope == "" {
		scope = "main"
	}
	return pos <= rs[""] || pos <= rs[scope]
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
	us, err := UnreadNotificationsOf(ctx, q, userID)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, u := range us {
		if u.RoomID == roomID {
			n++
		}
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
	us, err := UnreadNotificationsOf(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, r := range roomIDs {
		want[r] = true
	}
	type key struct{ room, thread string }
	idx := map[key]int{}
	var out []UnreadCount
	for _, u := range us {
		if roomIDs != nil && !want[u.RoomID] {
			continue
		}
		k := key{u.RoomID, u.ThreadID}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, UnreadCount{RoomID: u.RoomID, ThreadID: u.ThreadID})
		}
		out[i].Notifications++
		if u.Highlight {
			out[i].Highlights++
		}
	}
	return out, nil
}

// UnreadNotification is one unread notification of a user, as unread counts need it.
type UnreadNotification struct {
	RoomID    string
	ThreadID  string
	StreamPos int64
	Highlight bool
}

// UnreadNotificationsOf returns a user's unread notifications in stream order: what the
// push service's in-memory counts of the user start from. It reads the user's sets from
// their read mark on (push_unread_from: every set starting before it holds only read
// notifications) and moves the mark up to the first set it finds with an unread
// notification, past all of them when none is, so that the next load skips what is read
// now. Sets must be written in stream order per user (ForgetUnreadFrom otherwise).
func UnreadNotificationsOf(ctx context.Context, q Querier, userID string) ([]UnreadNotification, error) {
	var from int64
	if err := q.QueryRowContext(ctx, `SELECT first_pos FROM push_unread_from WHERE user_id = $1`, userID).Scan(&from); err != nil &&
		!errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("read mark of %s: %w", userID, err)
	}
	sets, err := notificationSetsOf(ctx, q, userID, from, 0, 0)
	if err != nil {
		return nil, err
	}
	receipts, err := UserReceipts(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	seen := map[int64]bool{}
	var out []UnreadNotification
	// The new mark: the first set (by first_pos) with an unread notification, or past
	// the last set when all are read.
	mark, firstUnread := from, int64(-1)
	// In the order written, so that of a replayed notification the first one counts.
	slices.SortFunc(sets, func(a, b noteSet) int { return cmp.Compare(a.id, b.id) })
	for _, set := range sets {
		mark = max(mark, set.firstPos+1)
		for _, e := range set.entries {
			read := receiptsRead(receipts, e.Room, e.Thread, e.Pos)
			if !read && (firstUnread < 0 || set.firstPos < firstUnread) {
				firstUnread = set.firstPos
			}
			if seen[e.Pos] {
				continue
			}
			seen[e.Pos] = true
			if !read {
				out = append(out, UnreadNotification{RoomID: e.Room, ThreadID: e.Thread, StreamPos: e.Pos, Highlight: e.Highlight})
			}
		}
	}
	if firstUnread >= 0 {
		mark = firstUnread
	}
	if mark > from {
		if _, err := q.ExecContext(ctx, `INSERT INTO push_unread_from (user_id, first_pos) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET first_pos = excluded.first_pos
			WHERE excluded.first_pos > push_unread_from.first_pos`, userID, mark); err != nil {
			return nil, fmt.Errorf("move the read mark of %s: %w", userID, err)
		}
	}
	slices.SortFunc(out, func(a, b UnreadNotification) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	return out, nil
}

// SetUnreadFrom moves the read marks (UnreadNotificationsOf) of users who have read
// every notification to pos, a position no set written later starts below (it never
// moves a mark back).
func SetUnreadFrom(ctx context.Context, tx *Tx, userIDs []string, pos int64) error {
	const upsert = ` ON CONFLICT (user_id) DO UPDATE SET first_pos = excluded.first_pos
		WHERE excluded.first_pos > push_unread_from.first_pos`
	if len(userIDs) == 0 {
		return nil
	}
	if tx.Dialect() == Postgres {
		if _, err := tx.ExecContext(ctx, `INSERT INTO push_unread_from (user_id, first_pos)
			SELECT u, $2 FROM unnest($1::text[]) AS u`+upsert, userIDs, pos); err != nil {
			return fmt.Errorf("move read marks: %w", err)
		}
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO push_unread_from (user_id, first_pos) VALUES ($1, $2)`+upsert)
	if err != nil {
		return fmt.Errorf("move read marks: %w", err)
	}
	defer stmt.Close()
	for _, u := range userIDs {
		if _, err := stmt.ExecContext(ctx, u, pos); err != nil {
			return fmt.Errorf("move read marks: %w", err)
		}
	}
	return nil
}

// ForgetUnreadFrom drops the read marks of users (UnreadNotificationsOf): call it in the
// transaction that writes a set for them out of stream order, which may start below
// their mark.
func ForgetUnreadFrom(ctx context.Context, q Querier, userIDs []string) error {
	return chunks(userIDs, func(part []string) error {
		if _, err := q.ExecContext(ctx, `DELETE FROM push_unread_from WHERE user_id IN (`+placeholders(1, len(part))+`)`,
			stringArgs(nil, part)...); err != nil {
			return fmt.Errorf("forget read marks: %w", err)
		}
		return nil
	})
}

// TotalUnreadNotifications counts a user's unread notifications over all rooms.
func TotalUnreadNotifications(ctx context.Context, q Querier, userID string) (int, error) {
	us, err := UnreadNotificationsOf(ctx, q, userID)
	return len(us), err
}

// notificationSetsPage is how many rows NotificationsPage reads at a time.
const notificationSetsPage = 32

// NotificationsPage returns a user's notifications, newest first, with IDs (stream
// positions) below before (0: from the newest), at most limit, only highlights when
// asked.
func NotificationsPage(ctx context.Context, q Querier, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	receipts, err := UserReceipts(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	var out []Notification
	seen := map[int64]bool{}
	setsBefore := before
	for len(out) < limit {
		sets, err := notificationSetsOf(ctx, q, userID, 0, setsBefore, notificationSetsPage)
		if err != nil {
			return nil, err
		}
		for _, set := range sets {
			for _, e := range set.entries {
				if (before > 0 && e.Pos >= before) || seen[e.Pos] {
					continue
				}
				seen[e.Pos] = true
				if onlyHighlight && !e.Highlight {
					continue
				}
				out = append(out, Notification{ID: e.Pos, UserID: userID, RoomID: e.Room, EventID: e.Event, StreamPos: e.Pos,
					ThreadID: e.Thread, Actions: e.Actions, Highlight: e.Highlight, TS: e.TS,
					Read: receiptsRead(receipts, e.Room, e.Thread, e.Pos)})
			}
			setsBefore = set.firstPos
		}
		if len(sets) < notificationSetsPage {
			break
		}
	}
	slices.SortFunc(out, func(a, b Notification) int { return cmp.Compare(b.StreamPos, a.StreamPos) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// PruneNotifications deletes read notifications older than a timestamp (ms) and
// returns how many.
func PruneNotifications(ctx context.Context, db *DB, olderThanTS int64) (int64, error) {
	var deleted int64
	receiptsOf := map[string]map[string]map[string]int64{}
	after := int64(0)
	for {
		type row struct {
			id      int64
			user    string
			entries []noteEntry
		}
		var page []row
		rows, err := db.QueryContext(ctx, `SELECT id, user_id, entries FROM push_notification_sets
			WHERE last_ts < $1 AND id > $2 ORDER BY id LIMIT 500`, olderThanTS, after)
		if err != nil {
			return deleted, fmt.Errorf("prune notifications: %w", err)
		}
		for rows.Next() {
			var r row
			var js string
			if err := rows.Scan(&r.id, &r.user, &js); err != nil {
				rows.Close()
				return deleted, fmt.Errorf("prune notifications: %w", err)
			}
			if err := json.Unmarshal([]byte(js), &r.entries); err != nil {
				continue // unreadable: leave it
			}
			page = append(page, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return deleted, fmt.Errorf("prune notifications: %w", err)
		}
		for _, r := range page {
			after = r.id
			receipts, ok := receiptsOf[r.user]
			if !ok {
				if receipts, err = UserReceipts(ctx, db, r.user); err != nil {
					return deleted, err
				}
				receiptsOf[r.user] = receipts
			}
			kept := r.entries[:0]
			for _, e := range r.entries {
				if !receiptsRead(receipts, e.Room, e.Thread, e.Pos) {
					kept = append(kept, e)
				}
			}
			if n := len(r.entries) - len(kept); n == 0 {
				continue
			} else {
				deleted += int64(n)
			}
			if len(kept) == 0 {
				_, err = db.ExecContext(ctx, `DELETE FROM push_notification_sets WHERE id = $1`, r.id)
			} else {
				js, _ := json.Marshal(kept)
				_, err = db.ExecContext(ctx, `UPDATE push_notification_sets SET entries = $1 WHERE id = $2`, string(js), r.id)
			}
			if err != nil {
				return deleted, fmt.Errorf("prune notifications: %w", err)
			}
		}
		if len(page) < 500 {
			return deleted, nil
		}
	}
}

// PushPosition returns the stream position up to which the push service evaluated room
// events and committed their notifications and pushes; ok is false before the service
// first started.
func PushPosition(ctx context.Context, q Querier) (pos int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT stream_pos FROM push_position WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("push position: %w", err)
	}
	return pos, true, nil
}

// SetPushPosition records the push service's position; call it in the transaction that
// commits the notifications and pushes of the events up to pos. It never moves back.
func SetPushPosition(ctx context.Context, q Querier, pos int64) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO push_position (id, stream_pos) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET stream_pos = excluded.stream_pos
		WHERE excluded.stream_pos > push_position.stream_pos`, pos); err != nil {
		return fmt.Errorf("set push position %d: %w", pos, err)
	}
	return nil
}
