package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// StreamToDevice is the stream of send-to-device messages.
const StreamToDevice = "to_device"

// ToDeviceMessage is a message waiting in a device's inbox, as /sync delivers it
// ({"sender", "type", "content"}), with its position in the to_device stream.
type ToDeviceMessage struct {
	Pos     int64           `json:"-"`
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// ToDeviceDelivery is one message for one device.
type ToDeviceDelivery struct {
	UserID   string
	DeviceID string
	Content  json.RawMessage
}

// ClaimTransactionID records that a device used a client transaction ID in scope. It
// returns false when the ID was used before, in which case the request is a replay and
// must not take effect again. Call it in the transaction that applies the request, so a
// failed request leaves the ID unused.
func ClaimTransactionID(ctx context.Context, tx *Tx, userID, deviceID, scope, txnID string) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts)
		VALUES ($1, $2, $3, $4, '{}', $5) ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING`,
		userID, deviceID, scope, txnID, NowMS())
	if err != nil {
		return false, fmt.Errorf("claim transaction ID of %s/%s: %w", userID, deviceID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// InsertToDevice puts messages of one sender and type into the recipients' inboxes and
// returns the highest stream position taken (0 when there was nothing to deliver).
func InsertToDevice(ctx context.Context, tx *Tx, sender, eventType string, deliveries []ToDeviceDelivery) (int64, error) {
	var last int64
	now := NowMS()
	for _, d := range deliveries {
		pos, err := NextStreamPosition(ctx, tx, StreamToDevice)
		if err != nil {
			return 0, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO e2e_to_device_inbox (stream_pos, user_id, device_id, sender, event_type, content, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, pos, d.UserID, d.DeviceID, sender, eventType, string(d.Content), now)
		if err != nil {
			return 0, fmt.Errorf("insert to-device message for %s/%s: %w", d.UserID, d.DeviceID, err)
		}
		last = pos
	}
	return last, nil
}

// ToDeviceSince returns up to limit messages of a device's inbox after position since,
// oldest first. A device's messages stay in the inbox until AckToDevice removes them, so
// a /sync response that was lost is delivered again.
func ToDeviceSince(ctx context.Context, q Querier, userID, deviceID string, since int64, limit int) ([]ToDeviceMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := q.QueryContext(ctx, `SELECT stream_pos, sender, event_type, content FROM e2e_to_device_inbox
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 ORDER BY stream_pos LIMIT $4`, userID, deviceID, since, limit)
	if err != nil {
		return nil, fmt.Errorf("to-device messages of %s/%s: %w", userID, deviceID, err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		var m ToDeviceMessage
		var content string
		if err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &content); err != nil {
			return nil, fmt.Errorf("to-device messages of %s/%s: %w", userID, deviceID, err)
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// AckToDevice deletes a device's messages up to position upTo (inclusive): the device has
// received them, shown by a later request with a since token past them. It returns how
// many were deleted.
func AckToDevice(ctx context.Context, q Querier, userID, deviceID string, upTo int64) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM e2e_to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`,
		userID, deviceID, upTo)
	if err != nil {
		return 0, fmt.Errorf("acknowledge to-device messages of %s/%s: %w", userID, deviceID, err)
	}
	return res.RowsAffected()
}

// PendingToDeviceCount returns how many messages wait in a device's inbox.
func PendingToDeviceCount(ctx context.Context, q Querier, userID, deviceID string) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2e_to_device_inbox WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count to-device messages of %s/%s: %w", userID, deviceID, err)
	}
	return n, nil
}

// DeviceIDsOfUsers returns the device IDs of several users (user → sorted device IDs;
// users without devices are absent).
func DeviceIDsOfUsers(ctx context.Context, q Querier, userIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	err := chunks(userIDs, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, device_id FROM devices WHERE user_id IN (`+placeholders(1, len(part))+`)
			ORDER BY user_id, device_id`, stringArgs(nil, part)...)
		if err != nil {
			return fmt.Errorf("list devices: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, d string
			if err := rows.Scan(&u, &d); err != nil {
				return fmt.Errorf("list devices: %w", err)
			}
			out[u] = append(out[u], d)
		}
		return rows.Err()
	})
	return out, err
}
