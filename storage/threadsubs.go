package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ThreadSubscription is a user's subscription to a thread (MSC4306).
type ThreadSubscription struct {
	Subscribed bool
	Automatic  bool
	// UnsubscribedAt is the event stream position when the user last unsubscribed.
	UnsubscribedAt int64
}

// GetThreadSubscription returns a user's subscription record for a thread; the zero
// value when there is none.
func GetThreadSubscription(ctx context.Context, q Querier, userID, roomID, rootID string) (ThreadSubscription, error) {
	var s ThreadSubscription
	err := q.QueryRowContext(ctx, `SELECT subscribed, automatic, unsubscribed_at FROM thread_subscriptions
		WHERE user_id = $1 AND room_id = $2 AND root_event_id = $3`, userID, roomID, rootID).Scan(&s.Subscribed, &s.Automatic, &s.UnsubscribedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return ThreadSubscription{}, nil
	}
	if err != nil {
		return s, fmt.Errorf("thread subscription of %s to %s: %w", userID, rootID, err)
	}
	return s, nil
}

// PutThreadSubscription writes a user's subscription record for a thread.
func PutThreadSubscription(ctx context.Context, q Querier, userID, roomID, rootID string, s ThreadSubscription) error {
	_, err := q.ExecContext(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, root_event_id, subscribed, automatic, unsubscribed_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id, room_id, root_event_id) DO UPDATE SET subscribed = excluded.subscribed,
			automatic = excluded.automatic, unsubscribed_at = excluded.unsubscribed_at`,
		userID, roomID, rootID, s.Subscribed, s.Automatic, s.UnsubscribedAt)
	if err != nil {
		return fmt.Errorf("write thread subscription of %s to %s: %w", userID, rootID, err)
	}
	return nil
}

// LatestEventPosition returns the highest event stream position stored (0 when none).
func LatestEventPosition(ctx context.Context, q Querier) (int64, error) {
	var pos sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM room_events`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("latest event position: %w", err)
	}
	return pos.Int64, nil
}
