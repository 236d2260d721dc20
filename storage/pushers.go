package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// Pusher is a user's registered pusher (POST /pushers/set).
type Pusher struct {
	ID                int64
	UserID            string
	DeviceID          string
	Kind              string
	AppID             string
	PushKey           string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              json.RawMessage
	CreatedTS         int64
}

const pusherCols = `id, user_id, device_id, kind, app_id, pushkey, app_display_name, device_display_name, profile_tag, lang, data, created_ts`

// pusherLive keeps pushers whose device still exists: a pusher belongs to the device
// that set it and goes away with it (logout, device deletion).
const pusherLive = `(device_id = '' OR EXISTS (SELECT 1 FROM devices d WHERE d.user_id = pushers.user_id AND d.device_id = pushers.device_id))`

func scanPushers(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}) ([]Pusher, error) {
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		var p Pusher
		var data string
		if err := rows.Scan(&p.ID, &p.UserID, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.AppDisplayName,
			&p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.CreatedTS); err != nil {
			return nil, fmt.Errorf("scan pusher: %w", err)
		}
		p.Data = json.RawMessage(data)
		out = append(out, p)
	}
	return out, rows.Err()
}

// UpsertPusher creates or updates the user's pusher with p's app ID and pushkey.
// Unless appendOthers is set, pushers of other users with the same app ID and pushkey
// are removed.
func UpsertPusher(ctx context.Context, tx *Tx, p Pusher, appendOthers bool) error {
	if !appendOthers {
		if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`,
			p.AppID, p.PushKey, p.UserID); err != nil {
			return fmt.Errorf("remove other pushers: %w", err)
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, app_display_name,
		device_display_name, profile_tag, lang, data, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
		app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
		profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data`,
		p.UserID, p.DeviceID, p.Kind, p.AppID, p.PushKey, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang,
		string(p.Data), NowMS())
	if err != nil {
		return fmt.Errorf("upsert pusher: %w", err)
	}
	return nil
}

// DeletePusher removes a user's pusher; it reports whether one existed.
func DeletePusher(ctx context.Context, q Querier, userID, appID, pushKey string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
	if err != nil {
		return false, fmt.Errorf("delete pusher: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// DeletePusherByID removes a pusher (and its queued pushes).
func DeletePusherByID(ctx context.Context, q Querier, id int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM push_queue WHERE pusher_id = $1`, id); err != nil {
		return fmt.Errorf("delete pusher queue: %w", err)
	}
	if _, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	return nil
}

// DeletePushersOfDevice removes the pushers a device created (on logout or device deletion).
func DeletePushersOfDevice(ctx context.Context, q Querier, userID, deviceID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("delete pushers of device: %w", err)
	}
	return nil
}

// PushersOfUser returns a user's pushers, oldest first.
func PushersOfUser(ctx context.Context, q Querier, userID string) ([]Pusher, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers WHERE user_id = $1 AND `+pusherLive+` ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers of %s: %w", userID, err)
	}
	return scanPushers(rows)
}

// PushersOfUsers returns the pushers of any of the given users.
func PushersOfUsers(ctx context.Context, q Querier, userIDs []string) ([]Pusher, error) {
	var out []Pusher
	err := chunks(userIDs, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers WHERE user_id IN (`+placeholders(1, len(part))+`) AND `+pusherLive+` ORDER BY id`,
			stringArgs(nil, part)...)
		if err != nil {
			return fmt.Errorf("pushers of users: %w", err)
		}
		ps, err := scanPushers(rows)
		out = append(out, ps...)
		return err
	})
	return out, err
}

// QueuedPush is a pending push to a gateway.
type QueuedPush struct {
	ID       int64
	PusherID int64
	Payload  json.RawMessage
	Attempts int
	// NextAttemptTS is when it is due (ms).
	NextAttemptTS int64
	CreatedTS     int64
}

// EnqueuePush stores a pending push for a pusher, due now.
func EnqueuePush(ctx context.Context, q Querier, pusherID int64, payload json.RawMessage) error {
	now := NowMS()
	_, err := q.ExecContext(ctx, `INSERT INTO push_queue (pusher_id, payload, attempts, next_attempt_ts, created_ts) VALUES ($1, $2, 0, $3, $3)`,
		pusherID, string(payload), now)
	if err != nil {
		return fmt.Errorf("enqueue push: %w", err)
	}
	return nil
}

// DuePushes returns pending pushes due at or before now, oldest first.
func DuePushes(ctx context.Context, q Querier, now int64, limit int) ([]QueuedPush, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, pusher_id, payload, attempts, next_attempt_ts, created_ts FROM push_queue
		WHERE next_attempt_ts <= $1 ORDER BY id LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("due pushes: %w", err)
	}
	defer rows.Close()
	var out []QueuedPush
	for rows.Next() {
		var p QueuedPush
		var payload string
		if err := rows.Scan(&p.ID, &p.PusherID, &payload, &p.Attempts, &p.NextAttemptTS, &p.CreatedTS); err != nil {
			return nil, err
		}
		p.Payload = json.RawMessage(payload)
		out = append(out, p)
	}
	return out, rows.Err()
}

// NextPushDue returns the earliest due time of pending pushes (0 when none).
func NextPushDue(ctx context.Context, q Querier) (int64, error) {
	var ts *int64
	if err := q.QueryRowContext(ctx, `SELECT MIN(next_attempt_ts) FROM push_queue`).Scan(&ts); err != nil {
		return 0, fmt.Errorf("next push due: %w", err)
	}
	if ts == nil {
		return 0, nil
	}
	return *ts, nil
}

// ReschedulePush records a failed attempt and when to try again.
func ReschedulePush(ctx context.Context, q Querier, id int64, attempts int, nextTS int64) error {
	_, err := q.ExecContext(ctx, `UPDATE push_queue SET attempts = $1, next_attempt_ts = $2 WHERE id = $3`, attempts, nextTS, id)
	if err != nil {
		return fmt.Errorf("reschedule push: %w", err)
	}
	return nil
}

// DeleteQueuedPush removes a pending push.
func DeleteQueuedPush(ctx context.Context, q Querier, id int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM push_queue WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete queued push: %w", err)
	}
	return nil
}

// PusherByID returns a pusher; ErrNotFound when it is gone.
func PusherByID(ctx context.Context, q Querier, id int64) (*Pusher, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers WHERE id = $1 AND `+pusherLive, id)
	if err != nil {
		return nil, fmt.Errorf("pusher %d: %w", id, err)
	}
	ps, err := scanPushers(rows)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, ErrNotFound
	}
	return &ps[0], nil
}

// ClaimPush takes a due push for delivery by moving its due time to leaseUntil, only
// if nobody else claimed it since it was read (several processes share the queue).
// A sender that dies mid-delivery leaves the push due again when the lease ends.
func ClaimPush(ctx context.Context, q Querier, id, dueTS, leaseUntil int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE push_queue SET next_attempt_ts = $1 WHERE id = $2 AND next_attempt_ts = $3`, leaseUntil, id, dueTS)
	if err != nil {
		return false, fmt.Errorf("claim push: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DeleteOrphanPushers removes a user's pushers whose device no longer exists.
func DeleteOrphanPushers(ctx context.Context, q Querier, userID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND NOT `+pusherLive, userID)
	if err != nil {
		return fmt.Errorf("delete orphan pushers: %w", err)
	}
	return nil
}
