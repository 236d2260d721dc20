package storage

import (
	"context"
	"fmt"
)

// StreamDeviceList is the stream of device-list changes (/sync device_lists, /keys/changes).
const StreamDeviceList = "device_list"

// DeviceListChange is one change of a user's devices or keys.
type DeviceListChange struct {
	Pos    int64
	UserID string
	// DeviceID is the device whose keys changed, or "" for a change of cross-signing keys.
	DeviceID string
	// OnlyFor is "" when every user sharing a room with UserID should hear of the change,
	// or the one user who should (a signature that only that user can see).
	OnlyFor string
}

// RecordDeviceListChange appends a change to the device-list stream and returns its position.
// deviceID is "" for cross-signing changes; onlyFor is "" for changes everyone may see.
func RecordDeviceListChange(ctx context.Context, tx *Tx, userID, deviceID, onlyFor string) (int64, error) {
	pos, err := NextStreamPosition(ctx, tx, StreamDeviceList)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO e2e_device_list_changes (stream_pos, user_id, device_id, only_for, created_ts)
		VALUES ($1, $2, $3, $4, $5)`, pos, userID, deviceID, onlyFor, NowMS())
	if err != nil {
		return 0, fmt.Errorf("record device list change of %s: %w", userID, err)
	}
	return pos, nil
}

// DeviceListChangesSince returns the changes after position from, up to position to
// (inclusive; to <= 0 means no upper bound), oldest first.
func DeviceListChangesSince(ctx context.Context, q Querier, from, to int64) ([]DeviceListChange, error) {
	query := `SELECT stream_pos, user_id, device_id, only_for FROM e2e_device_list_changes WHERE stream_pos > $1`
	args := []any{from}
	if to > 0 {
		query += ` AND stream_pos <= $2`
		args = append(args, to)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY stream_pos`, args...)
	if err != nil {
		return nil, fmt.Errorf("device list changes since %d: %w", from, err)
	}
	defer rows.Close()
	var out []DeviceListChange
	for rows.Next() {
		var c DeviceListChange
		if err := rows.Scan(&c.Pos, &c.UserID, &c.DeviceID, &c.OnlyFor); err != nil {
			return nil, fmt.Errorf("device list changes since %d: %w", from, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// DeviceListChangedUsers returns, sorted, the users whose device lists changed after
// position from and up to position to (inclusive; to <= 0 means no upper bound) in a way
// that requester may see: changes for everyone plus those meant only for requester.
// /sync and /keys/changes intersect the result with the users sharing a room with the
// requester (the requester's own changes always count).
func DeviceListChangedUsers(ctx context.Context, q Querier, requester string, from, to int64) ([]string, error) {
	query := `SELECT DISTINCT user_id FROM e2e_device_list_changes WHERE stream_pos > $1 AND (only_for = '' OR only_for = $2)`
	args := []any{from, requester}
	if to > 0 {
		query += ` AND stream_pos <= $3`
		args = append(args, to)
	}
	out, err := QueryStrings(ctx, q, query+` ORDER BY user_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("device list changes since %d: %w", from, err)
	}
	return out, nil
}
