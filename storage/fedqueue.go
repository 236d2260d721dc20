package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kinds of federation queue rows.
const (
	QueuePDU = "pdu"
	QueueEDU = "edu"
)

// FederationSenderEvents names the federation sender's stored position in the room
// event stream: the events up to it are queued for their destinations.
const FederationSenderEvents = "room_events"

// QueuedItem is one row of a destination's outgoing federation queue: a PDU (EventID)
// or an EDU (EDUType and Content).
type QueuedItem struct {
	ID          int64
	Destination string
	Kind        string
	EventID     string
	EDUType     string
	Content     string
	CreatedTS   int64
}

// EnqueueFederation appends items to their destinations' queues (Destination and Kind
// must be set).
func EnqueueFederation(ctx context.Context, tx *Tx, items []QueuedItem) error {
	now := NowMS()
	for _, it := range items {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue (destination, kind, event_id, edu_type, content, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6)`, it.Destination, it.Kind, it.EventID, it.EDUType, it.Content, now); err != nil {
			return fmt.Errorf("queue %s for %s: %w", it.Kind, it.Destination, err)
		}
	}
	return nil
}

// PeekFederationQueue returns the oldest limit items of a destination's queue, oldest first.
func PeekFederationQueue(ctx context.Context, q Querier, destination string, limit int) ([]QueuedItem, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, kind, event_id, edu_type, content, created_ts FROM federation_queue
		WHERE destination = $1 ORDER BY id LIMIT $2`, destination, limit)
	if err != nil {
		return nil, fmt.Errorf("read federation queue of %s: %w", destination, err)
	}
	defer rows.Close()
	var out []QueuedItem
	for rows.Next() {
		it := QueuedItem{Destination: destination}
		if err := rows.Scan(&it.ID, &it.Kind, &it.EventID, &it.EDUType, &it.Content, &it.CreatedTS); err != nil {
			return nil, fmt.Errorf("read federation queue of %s: %w", destination, err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// DeleteFederationQueued removes delivered (or discarded) items.
func DeleteFederationQueued(ctx context.Context, db *DB, ids []int64) error {
	for len(ids) > 0 {
		n := min(len(ids), maxInList)
		part := ids[:n]
		ids = ids[n:]
		var b strings.Builder
		args := make([]any, len(part))
		for i, id := range part {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("$" + strconv.Itoa(i+1))
			args[i] = id
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM federation_queue WHERE id IN (`+b.String()+`)`, args...); err != nil {
			return fmt.Errorf("delete delivered federation queue items: %w", err)
		}
	}
	return nil
}

// LastFederationQueued returns the ID of the newest item queued for destination, 0 when
// its queue is empty.
func LastFederationQueued(ctx context.Context, q Querier, destination string) (int64, error) {
	var id int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM federation_queue WHERE destination = $1`,
		destination).Scan(&id); err != nil {
		return 0, fmt.Errorf("newest federation queue item of %s: %w", destination, err)
	}
	return id, nil
}

// FederationQueueDestinations returns the destinations with queued items.
func FederationQueueDestinations(ctx context.Context, q Querier) ([]string, error) {
	return QueryStrings(ctx, q, `SELECT DISTINCT destination FROM federation_queue ORDER BY destination`)
}

// FederationSenderPosition returns a stored stream position of the sender (ok false
// when none was stored yet).
func FederationSenderPosition(ctx context.Context, q Querier, name string) (pos int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT pos FROM federation_sender_positions WHERE name = $1`, name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("federation sender position %s: %w", name, err)
	}
	return pos, true, nil
}

// SetFederationSenderPosition stores a stream position of the sender.
func SetFederationSenderPosition(ctx context.Context, tx *Tx, name string, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO federation_sender_positions (name, pos) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET pos = excluded.pos`, name, pos)
	if err != nil {
		return fmt.Errorf("set federation sender position %s: %w", name, err)
	}
	return nil
}

// PreviousDeviceChange returns the stream position of the user's last device change
// (of a device, not of cross-signing keys) before pos, 0 when none.
func PreviousDeviceChange(ctx context.Context, q Querier, userID string, pos int64) (int64, error) {
	var prev sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM e2e_device_list_changes
		WHERE user_id = $1 AND stream_pos < $2 AND device_id <> ''`, userID, pos).Scan(&prev)
	if err != nil {
		return 0, fmt.Errorf("previous device change of %s: %w", userID, err)
	}
	return prev.Int64, nil
}

// MarkSendOnBehalf records that eventID, a membership event of a user of origin
// accepted through send_join/send_leave/send_knock, is ours to send to the other
// servers of the room. Call it before the event enters the room.
func MarkSendOnBehalf(ctx context.Context, q Querier, eventID, origin string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO federation_on_behalf (event_id, origin, created_ts) VALUES ($1, $2, $3)
		ON CONFLICT (event_id) DO NOTHING`, eventID, origin, NowMS())
	if err != nil {
		return fmt.Errorf("mark %s to be sent on behalf of %s: %w", eventID, origin, err)
	}
	return nil
}

// SendOnBehalfOrigin returns the origin recorded by MarkSendOnBehalf for eventID, or
// "" when the event is not ours to send.
func SendOnBehalfOrigin(ctx context.Context, q Querier, eventID string) (string, error) {
	var origin string
	err := q.QueryRowContext(ctx, `SELECT origin FROM federation_on_behalf WHERE event_id = $1`, eventID).Scan(&origin)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read send-on-behalf mark of %s: %w", eventID, err)
	}
	return origin, nil
}

// ForgetSendOnBehalf deletes the marks of events that were queued, and marks older
// than olderThanMS (events that never entered the room).
func ForgetSendOnBehalf(ctx context.Context, q Querier, eventIDs []string, olderThanMS int64) error {
	for _, id := range eventIDs {
		if _, err := q.ExecContext(ctx, `DELETE FROM federation_on_behalf WHERE event_id = $1`, id); err != nil {
			return fmt.Errorf("forget send-on-behalf mark of %s: %w", id, err)
		}
	}
	if olderThanMS > 0 {
		if _, err := q.ExecContext(ctx, `DELETE FROM federation_on_behalf WHERE created_ts < $1`, olderThanMS); err != nil {
			return fmt.Errorf("forget old send-on-behalf marks: %w", err)
		}
	}
	return nil
}
