package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// End-to-end encryption key storage: device identity keys, one-time keys, fallback keys.
// Verification of the keys' signatures happens above (clientapi/keys); these functions
// store what was verified and keep the invariants that need the database: each one-time key is handed out at most once.

// ErrKeyConflict is returned when a one-time key ID is uploaded again with other content.
var ErrKeyConflict = errors.New("key ID already used with different content")

// DeviceKeys is the identity-key record of one device.
type DeviceKeys struct {
	UserID   string
	DeviceID string
	// KeyJSON is the canonical JSON of the device_keys object as uploaded (signed by the device).
	KeyJSON    json.RawMessage
	Ed25519    string
	Curve25519 string
	// DisplayName is the device's display name (filled by QueryDeviceKeys).
	DisplayName *string
}

// OneTimeKey is a one-time or fallback key: "<Algorithm>:<KeyID>" and its JSON value.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	KeyJSON   json.RawMessage
}

// FullKeyID returns "<algorithm>:<key_id>".
func (k OneTimeKey) FullKeyID() string { return k.Algorithm + ":" + k.KeyID }

// GetDeviceKeys loads the identity keys of a device; ErrNotFound when none were uploaded.
func GetDeviceKeys(ctx context.Context, q Querier, userID, deviceID string) (DeviceKeys, error) {
	k := DeviceKeys{UserID: userID, DeviceID: deviceID}
	var js string
	err := q.QueryRowContext(ctx, `SELECT key_json, ed25519_key, curve25519_key FROM e2e_device_keys
		WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&js, &k.Ed25519, &k.Curve25519)
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	if err != nil {
		return k, fmt.Errorf("get device keys %s/%s: %w", userID, deviceID, err)
	}
	k.KeyJSON = json.RawMessage(js)
	return k, nil
}

// PutDeviceKeys stores the identity keys of a device. changed is false when the very same
// JSON was already stored. Other JSON with the same identity keys (new algorithms, extra
// signatures) or new identity keys replace the stored ones.
func PutDeviceKeys(ctx context.Context, tx *Tx, k DeviceKeys) (changed bool, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO e2e_device_keys (user_id, device_id, key_json, ed25519_key, curve25519_key, updated_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id) DO NOTHING`,
		k.UserID, k.DeviceID, string(k.KeyJSON), k.Ed25519, k.Curve25519, NowMS())
	if err != nil {
		return false, fmt.Errorf("put device keys %s/%s: %w", k.UserID, k.DeviceID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	old, err := GetDeviceKeys(ctx, tx, k.UserID, k.DeviceID)
	if err != nil {
		return false, err
	}
	if bytes.Equal(old.KeyJSON, k.KeyJSON) && old.Ed25519 == k.Ed25519 && old.Curve25519 == k.Curve25519 {
		return false, nil
	}
	// New identity keys for a known device replace the old ones, as Synapse does: the
	// server cannot judge key material (clients verify it and flag a device whose keys
	// changed), and clients that lost their crypto store re-upload for the same device.
	_, err = tx.ExecContext(ctx, `UPDATE e2e_device_keys SET key_json = $1, ed25519_key = $2, curve25519_key = $3, updated_ts = $4
		WHERE user_id = $5 AND device_id = $6`,
		string(k.KeyJSON), k.Ed25519, k.Curve25519, NowMS(), k.UserID, k.DeviceID)
	if err != nil {
		return false, fmt.Errorf("update device keys %s/%s: %w", k.UserID, k.DeviceID, err)
	}
	return true, nil
}

// maxInList bounds the number of values in one IN (...) list; longer lists are split.
const maxInList = 500

// placeholders returns "$first, $first+1, ..." for n values.
func placeholders(first, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(first + i))
	}
	return b.String()
}

// chunks calls fn with consecutive slices of at most maxInList values.
func chunks(values []string, fn func(part []string) error) error {
	for len(values) > 0 {
		n := min(len(values), maxInList)
		if err := fn(values[:n]); err != nil {
			return err
		}
		values = values[n:]
	}
	return nil
}

func stringArgs(prefix []any, values []string) []any {
	args := make([]any, 0, len(prefix)+len(values))
	args = append(args, prefix...)
	for _, v := range values {
		args = append(args, v)
	}
	return args
}

// QueryDeviceKeys returns the identity keys of existing devices of the given users, with
// their display names. A user mapped to an empty list means all of their devices.
func QueryDeviceKeys(ctx context.Context, q Querier, users map[string][]string) ([]DeviceKeys, error) {
	userIDs := make([]string, 0, len(users))
	for u := range users {
		userIDs = append(userIDs, u)
	}
	sort.Strings(userIDs)
	var out []DeviceKeys
	err := chunks(userIDs, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT k.user_id, k.device_id, k.key_json, k.ed25519_key, k.curve25519_key, d.display_name
			FROM e2e_device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
			WHERE k.user_id IN (`+placeholders(1, len(part))+`) ORDER BY k.user_id, k.device_id`, stringArgs(nil, part)...)
		if err != nil {
			return fmt.Errorf("query device keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k DeviceKeys
			var js string
			var name sql.NullString
			if err := rows.Scan(&k.UserID, &k.DeviceID, &js, &k.Ed25519, &k.Curve25519, &name); err != nil {
				return fmt.Errorf("query device keys: %w", err)
			}
			if want := users[k.UserID]; len(want) > 0 && !containsString(want, k.DeviceID) {
				continue
			}
			k.KeyJSON = json.RawMessage(js)
			if name.Valid {
				k.DisplayName = &name.String
			}
			out = append(out, k)
		}
		return rows.Err()
	})
	return out, err
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// MaxOneTimeKeysPerDevice bounds the unclaimed one-time keys a device may hold per algorithm.
const MaxOneTimeKeysPerDevice = 10000

// ErrTooManyKeys is returned when an upload would exceed MaxOneTimeKeysPerDevice.
var ErrTooManyKeys = errors.New("too many one-time keys")

// InsertOneTimeKeys stores one-time keys of a device. A key ID that is already stored with
// the same content is skipped; with other content the whole call fails with ErrKeyConflict
// (the caller's transaction then rolls back, so nothing is stored).
func InsertOneTimeKeys(ctx context.Context, tx *Tx, userID, deviceID string, keys []OneTimeKey) error {
	now := NowMS()
	algorithms := map[string]bool{}
	for _, k := range keys {
		algorithms[k.Algorithm] = true
		res, err := tx.ExecContext(ctx, `INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`,
			userID, deviceID, k.Algorithm, k.KeyID, string(k.KeyJSON), now)
		if err != nil {
			return fmt.Errorf("insert one-time key %s/%s %s: %w", userID, deviceID, k.FullKeyID(), err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			continue
		}
		var existing string
		err = tx.QueryRowContext(ctx, `SELECT key_json FROM e2e_one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			userID, deviceID, k.Algorithm, k.KeyID).Scan(&existing)
		if err != nil {
			return fmt.Errorf("check one-time key %s/%s %s: %w", userID, deviceID, k.FullKeyID(), err)
		}
		if existing != string(k.KeyJSON) {
			return fmt.Errorf("%w: %s", ErrKeyConflict, k.FullKeyID())
		}
	}
	for alg := range algorithms {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, alg).Scan(&n)
		if err != nil {
			return fmt.Errorf("count one-time keys %s/%s: %w", userID, deviceID, err)
		}
		if n > MaxOneTimeKeysPerDevice {
			return fmt.Errorf("%w: %d %s keys for device %s", ErrTooManyKeys, n, alg, deviceID)
		}
	}
	return nil
}

// SetFallbackKeys stores fallback keys of a device, replacing the previous key of each
// algorithm. Uploading the key already stored again keeps its used flag.
func SetFallbackKeys(ctx context.Context, tx *Tx, userID, deviceID string, keys []OneTimeKey) error {
	for _, k := range keys {
		_, err := tx.ExecContext(ctx, `INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
			VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
				used = CASE WHEN e2e_fallback_keys.key_id = excluded.key_id AND e2e_fallback_keys.key_json = excluded.key_json
					THEN e2e_fallback_keys.used ELSE FALSE END`,
			userID, deviceID, k.Algorithm, k.KeyID, string(k.KeyJSON))
		if err != nil {
			return fmt.Errorf("set fallback key %s/%s %s: %w", userID, deviceID, k.FullKeyID(), err)
		}
	}
	return nil
}

// ClaimOneTimeKey hands out the oldest unclaimed one-time key of a device for an algorithm,
// deleting it in the same statement so that no other claim can ever return it. When none
// is left it returns the device's fallback key for the algorithm (marking it used) with
// fallback = true. ErrNotFound when there is neither, or the device does not exist.
//
// On PostgreSQL concurrent claims skip rows locked by each other (FOR UPDATE SKIP LOCKED),
// so they take different keys instead of queueing on the same one; SQLite has one writer.
func ClaimOneTimeKey(ctx context.Context, tx *Tx, userID, deviceID, algorithm string) (key OneTimeKey, fallback bool, err error) {
	lock := ""
	if tx.Dialect() == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	key.Algorithm = algorithm
	var js string
	err = tx.QueryRowContext(ctx, `DELETE FROM e2e_one_time_keys WHERE id = (
			SELECT id FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
				AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.device_id = $2)
			ORDER BY id LIMIT 1`+lock+`)
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&key.KeyID, &js)
	if err == nil {
		key.KeyJSON = json.RawMessage(js)
		return key, false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return key, false, fmt.Errorf("claim one-time key %s/%s: %w", userID, deviceID, err)
	}
	err = tx.QueryRowContext(ctx, `UPDATE e2e_fallback_keys SET used = TRUE
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
			AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.device_id = $2)
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&key.KeyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return key, false, ErrNotFound
	}
	if err != nil {
		return key, false, fmt.Errorf("claim fallback key %s/%s: %w", userID, deviceID, err)
	}
	key.KeyJSON = json.RawMessage(js)
	return key, true, nil
}

// OneTimeKeyCounts returns the number of unclaimed one-time keys of a device per algorithm
// (algorithms without keys are absent), as /keys/upload and /sync report them.
func OneTimeKeyCounts(ctx context.Context, q Querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM e2e_one_time_keys
		WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys %s/%s: %w", userID, deviceID, err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("count one-time keys %s/%s: %w", userID, deviceID, err)
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}

// UnusedFallbackKeyTypes returns the algorithms for which the device has a fallback key
// that has not been handed out yet (/sync's device_unused_fallback_key_types), sorted.
func UnusedFallbackKeyTypes(ctx context.Context, q Querier, userID, deviceID string) ([]string, error) {
	out, err := QueryStrings(ctx, q, `SELECT algorithm FROM e2e_fallback_keys
		WHERE user_id = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("unused fallback keys %s/%s: %w", userID, deviceID, err)
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// DeleteDeviceE2EE removes everything end-to-end encryption keeps for a device: identity,
// one-time and fallback keys, signatures of its keys, its to-device inbox, and its
// dehydrated-device record if it was the user's dehydrated device. When the
// device had identity keys it records a device-list change so that other users' clients
// forget it. Call it in the transaction that deletes the device.
func DeleteDeviceE2EE(ctx context.Context, tx *Tx, userID, deviceID string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("delete device keys %s/%s: %w", userID, deviceID, err)
	}
	hadKeys, _ := res.RowsAffected()
	for _, stmt := range []string{
		`DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM e2e_key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
		`DELETE FROM e2e_to_device_inbox WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM e2e_dehydrated_devices WHERE user_id = $1 AND device_id = $2`,
	} {
		if _, err := tx.ExecContext(ctx, stmt, userID, deviceID); err != nil {
			return fmt.Errorf("delete e2ee data of %s/%s: %w", userID, deviceID, err)
		}
	}
	if hadKeys > 0 {
		if _, err := RecordDeviceListChange(ctx, tx, userID, deviceID, ""); err != nil {
			return err
		}
	}
	return nil
}

// DeleteUserE2EE removes what end-to-end encryption keeps for a user beyond their devices
// (call DeleteDeviceE2EE for each device too): cross-signing keys, signatures made by or
// for the user, server-side key backups and the dehydrated-device record. It records a
// device-list change when the user had cross-signing keys. For account deactivation.
func DeleteUserE2EE(ctx context.Context, tx *Tx, userID string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM e2e_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("delete cross-signing keys of %s: %w", userID, err)
	}
	hadKeys, _ := res.RowsAffected()
	for _, stmt := range []string{
		`DELETE FROM e2e_key_signatures WHERE target_user_id = $1 OR signer_user_id = $1`,
		`DELETE FROM e2e_backup_sessions WHERE user_id = $1`,
		`UPDATE e2e_backup_versions SET deleted = TRUE WHERE user_id = $1`,
		`DELETE FROM e2e_dehydrated_devices WHERE user_id = $1`,
	} {
		if _, err := tx.ExecContext(ctx, stmt, userID); err != nil {
			return fmt.Errorf("delete e2ee data of %s: %w", userID, err)
		}
	}
	if hadKeys > 0 {
		if _, err := RecordDeviceListChange(ctx, tx, userID, "", ""); err != nil {
			return err
		}
	}
	return nil
}
