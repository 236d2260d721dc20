package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// DehydratedDevice is a user's dehydrated device (MSC3814): a device without access
// tokens whose keys and to-device inbox a new client of the user can take over.
type DehydratedDevice struct {
	UserID     string
	DeviceID   string
	DeviceData json.RawMessage
	CreatedTS  int64
}

// GetDehydratedDevice returns the user's dehydrated device; ErrNotFound when there is none.
func GetDehydratedDevice(ctx context.Context, q Querier, userID string) (DehydratedDevice, error) {
	d := DehydratedDevice{UserID: userID}
	var data string
	err := q.QueryRowContext(ctx, `SELECT device_id, device_data, created_ts FROM e2e_dehydrated_devices WHERE user_id = $1`, userID).
		Scan(&d.DeviceID, &data, &d.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("get dehydrated device of %s: %w", userID, err)
	}
	d.DeviceData = json.RawMessage(data)
	return d, nil
}

// PutDehydratedDevice records the user's dehydrated device, replacing any previous one
// (whose device the caller deletes).
func PutDehydratedDevice(ctx context.Context, tx *Tx, d DehydratedDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO e2e_dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`,
		d.UserID, d.DeviceID, string(d.DeviceData), d.CreatedTS)
	if err != nil {
		return fmt.Errorf("put dehydrated device of %s: %w", d.UserID, err)
	}
	return nil
}

// DeleteDehydratedDevice forgets the user's dehydrated device record (not the device row).
func DeleteDehydratedDevice(ctx context.Context, tx *Tx, userID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM e2e_dehydrated_devices WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("delete dehydrated device of %s: %w", userID, err)
	}
	return nil
}
