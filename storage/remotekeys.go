package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// RemoteDevice is a cached device of a remote user.
type RemoteDevice struct {
	DeviceID    string
	KeyJSON     string
	DisplayName string
}

// RemoteDeviceList is the cached device list and cross-signing keys of a remote user.
type RemoteDeviceList struct {
	UserID   string
	StreamID int64
	// TrackedFrom is the room event stream position at which the whole list was fetched
	// (0 when unknown); the list is current only if the user shared a room with a local
	// user all along since then.
	TrackedFrom int64
	Devices     []RemoteDevice
	// CrossSigning maps key type (master, self_signing) to the key JSON.
	CrossSigning map[string]string
}

// GetRemoteDeviceList returns the cached device list of a remote user; ErrNotFound when
// none is cached.
func GetRemoteDeviceList(ctx context.Context, q Querier, userID string) (*RemoteDeviceList, error) {
	l := &RemoteDeviceList{UserID: userID, CrossSigning: map[string]string{}}
	err := q.QueryRowContext(ctx, `SELECT stream_id, tracked_from FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&l.StreamID, &l.TrackedFrom)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("remote device list of %s: %w", userID, err)
	}
	rows, err := q.QueryContext(ctx, `SELECT device_id, key_json, display_name FROM remote_device_keys WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("remote devices of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var d RemoteDevice
		if err := rows.Scan(&d.DeviceID, &d.KeyJSON, &d.DisplayName); err != nil {
			return nil, fmt.Errorf("remote devices of %s: %w", userID, err)
		}
		l.Devices = append(l.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	crows, err := q.QueryContext(ctx, `SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("remote cross-signing keys of %s: %w", userID, err)
	}
	defer crows.Close()
	for crows.Next() {
		var typ, js string
		if err := crows.Scan(&typ, &js); err != nil {
			return nil, err
		}
		l.CrossSigning[typ] = js
	}
	return l, crows.Err()
}

// PutRemoteDeviceList replaces the cached device list of a remote user.
func PutRemoteDeviceList(ctx context.Context, tx *Tx, l RemoteDeviceList) error {
	if err := DeleteRemoteDeviceList(ctx, tx, l.UserID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, updated_ts, tracked_from) VALUES ($1, $2, $3, $4)`,
		l.UserID, l.StreamID, NowMS(), l.TrackedFrom); err != nil {
		return fmt.Errorf("cache device list of %s: %w", l.UserID, err)
	}
	for _, d := range l.Devices {
		if err := PutRemoteDevice(ctx, tx, l.UserID, d); err != nil {
			return err
		}
	}
	for typ, js := range l.CrossSigning {
		if err := PutRemoteCrossSigningKey(ctx, tx, l.UserID, typ, js); err != nil {
			return err
		}
	}
	return nil
}

// DeleteRemoteDeviceList forgets the cached device list of a remote user (it is fetched
// again when next needed).
func DeleteRemoteDeviceList(ctx context.Context, tx *Tx, userID string) error {
	for _, stmt := range []string{
		`DELETE FROM remote_device_lists WHERE user_id = $1`,
		`DELETE FROM remote_device_keys WHERE user_id = $1`,
		`DELETE FROM remote_cross_signing_keys WHERE user_id = $1`,
	} {
		if _, err := tx.ExecContext(ctx, stmt, userID); err != nil {
			return fmt.Errorf("forget device list of %s: %w", userID, err)
		}
	}
	return nil
}

// PutRemoteDevice stores or replaces one cached remote device.
func PutRemoteDevice(ctx context.Context, tx *Tx, userID string, d RemoteDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, display_name = excluded.display_name`,
		userID, d.DeviceID, d.KeyJSON, d.DisplayName)
	if err != nil {
		return fmt.Errorf("cache device %s of %s: %w", d.DeviceID, userID, err)
	}
	return nil
}

// DeleteRemoteDevice removes one cached remote device.
func DeleteRemoteDevice(ctx context.Context, tx *Tx, userID, deviceID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("forget device %s of %s: %w", deviceID, userID, err)
	}
	return nil
}

// PutRemoteCrossSigningKey stores or replaces a cached cross-signing key of a remote user.
func PutRemoteCrossSigningKey(ctx context.Context, tx *Tx, userID, keyType, keyJSON string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, keyType, keyJSON)
	if err != nil {
		return fmt.Errorf("cache %s key of %s: %w", keyType, userID, err)
	}
	return nil
}

// SetRemoteDeviceListStream records the origin's stream position of the last update
// applied to a cached device list.
func SetRemoteDeviceListStream(ctx context.Context, tx *Tx, userID string, streamID int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1`,
		userID, streamID, NowMS()); err != nil {
		return fmt.Errorf("update device list stream of %s: %w", userID, err)
	}
	return nil
}
