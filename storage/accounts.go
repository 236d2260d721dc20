package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrNotFound is returned when a requested row does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when a row that must be new already exists.
var ErrExists = errors.New("already exists")

// Account is a local user account.
type Account struct {
	UserID       string
	PasswordHash string
	IsAdmin      bool
	AccountType  string
	Deactivated  bool
	CreatedTS    int64
}

// Device is one login session of a user.
type Device struct {
	UserID            string
	DeviceID          string
	DisplayName       *string
	CreatedTS         int64
	LastSeenTS        int64
	LastSeenIP        string
	LastSeenUserAgent string
}

// AccessToken is the stored form of an access token (its hash, never the token).
type AccessToken struct {
	TokenHash        string
	UserID           string
	DeviceID         string
	CreatedTS        int64
	ExpiresTS        int64 // 0: never
	RefreshTokenHash string
}

// InsertAccount creates an account and its empty profile; ErrExists if the user ID is taken.
func InsertAccount(ctx context.Context, q Querier, a Account) error {
	if a.AccountType == "" {
		a.AccountType = "user"
	}
	_, err := q.ExecContext(ctx, `INSERT INTO accounts (user_id, password_hash, is_admin, account_type, deactivated, created_ts)
		VALUES ($1, $2, $3, $4, FALSE, $5)`, a.UserID, a.PasswordHash, a.IsAdmin, a.AccountType, a.CreatedTS)
	if IsUniqueViolation(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert account %s: %w", a.UserID, err)
	}
	return nil
}

// GetAccount loads an account; ErrNotFound if there is none.
func GetAccount(ctx context.Context, q Querier, userID string) (Account, error) {
	var a Account
	err := q.QueryRowContext(ctx, `SELECT user_id, password_hash, is_admin, account_type, deactivated, created_ts
		FROM accounts WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.PasswordHash, &a.IsAdmin, &a.AccountType, &a.Deactivated, &a.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("get account %s: %w", userID, err)
	}
	return a, nil
}

// AccountExists reports whether the user ID is taken (including deactivated accounts, which are never reused).
func AccountExists(ctx context.Context, q Querier, userID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE user_id = $1`, userID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check account %s: %w", userID, err)
	}
	return n > 0, nil
}

// SetPasswordHash replaces an account's password hash.
func SetPasswordHash(ctx context.Context, q Querier, userID, hash string) error {
	res, err := q.ExecContext(ctx, `UPDATE accounts SET password_hash = $1 WHERE user_id = $2`, hash, userID)
	if err != nil {
		return fmt.Errorf("set password %s: %w", userID, err)
	}
	return requireRow(res)
}

// SetDeactivated marks an account deactivated and clears its password.
func SetDeactivated(ctx context.Context, q Querier, userID string) error {
	res, err := q.ExecContext(ctx, `UPDATE accounts SET deactivated = TRUE, password_hash = '' WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("deactivate %s: %w", userID, err)
	}
	return requireRow(res)
}

func requireRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// InsertDevice creates a device, or updates the display name of an existing one when
// a client logs in again with the same device ID.
func InsertDevice(ctx context.Context, q Querier, d Device) error {
	_, err := q.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip, last_seen_user_agent = excluded.last_seen_user_agent`,
		d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent)
	if err != nil {
		return fmt.Errorf("insert device %s/%s: %w", d.UserID, d.DeviceID, err)
	}
	return nil
}

const deviceColumns = `user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent`

func scanDevice(s interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var name sql.NullString
	err := s.Scan(&d.UserID, &d.DeviceID, &name, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP, &d.LastSeenUserAgent)
	if name.Valid {
		d.DisplayName = &name.String
	}
	return d, err
}

// GetDevice loads one device; ErrNotFound if there is none.
func GetDevice(ctx context.Context, q Querier, userID, deviceID string) (Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("get device %s/%s: %w", userID, deviceID, err)
	}
	return d, nil
}

// ListDevices returns all devices of a user, oldest first.
func ListDevices(ctx context.Context, q Querier, userID string) ([]Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY created_ts, device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices %s: %w", userID, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// SetDeviceDisplayName renames a device; ErrNotFound if it does not exist.
func SetDeviceDisplayName(ctx context.Context, q Querier, userID, deviceID string, name *string) error {
	res, err := q.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, name, userID, deviceID)
	if err != nil {
		return fmt.Errorf("rename device %s/%s: %w", userID, deviceID, err)
	}
	return requireRow(res)
}

// UpdateDeviceLastSeen records when and from where a device was last used.
func UpdateDeviceLastSeen(ctx context.Context, q Querier, userID, deviceID string, ts int64, ip, userAgent string) error {
	_, err := q.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2, last_seen_user_agent = $3
		WHERE user_id = $4 AND device_id = $5`, ts, ip, userAgent, userID, deviceID)
	if err != nil {
		return fmt.Errorf("update device last seen %s/%s: %w", userID, deviceID, err)
	}
	return nil
}

// LocalNotificationSettingsPrefix starts the type of the global account data in which a
// client keeps one device's notification settings (MSC3890); the device ID follows it.
const LocalNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// DeleteDevice removes a device with all its access and refresh tokens and its
// end-to-end encryption data (keys, to-device inbox; other users' clients are told via
// the device-list stream), and returns the hashes of the access tokens removed, so that
// caches can drop them.
func DeleteDevice(ctx context.Context, tx *Tx, userID, deviceID string) ([]string, error) {
	hashes, err := QueryStrings(ctx, tx, `SELECT token_hash FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if err := DeleteDeviceE2EE(ctx, tx, userID, deviceID); err != nil {
		return nil, err
	}
	// A client's per-device notification settings go with the device (MSC3890).
	if _, err := DeleteAccountData(ctx, tx, userID, "", LocalNotificationSettingsPrefix+deviceID); err != nil {
		return nil, err
	}
	for _, stmt := range []string{
		`DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM devices WHERE user_id = $1 AND device_id = $2`,
	} {
		if _, err := tx.ExecContext(ctx, stmt, userID, deviceID); err != nil {
			return nil, fmt.Errorf("delete device %s/%s: %w", userID, deviceID, err)
		}
	}
	return hashes, nil
}

// QueryStrings runs a query selecting one text column and returns its values in order
// (nil when there are none).
func QueryStrings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list token hashes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// InsertAccessToken stores a new access token hash.
func InsertAccessToken(ctx context.Context, q Querier, t AccessToken) error {
	var refresh any
	if t.RefreshTokenHash != "" {
		refresh = t.RefreshTokenHash
	}
	_, err := q.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_hash)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.TokenHash, t.UserID, t.DeviceID, t.CreatedTS, t.ExpiresTS, refresh)
	if err != nil {
		return fmt.Errorf("insert access token for %s/%s: %w", t.UserID, t.DeviceID, err)
	}
	return nil
}

// GetAccessToken loads an access token by hash; ErrNotFound if unknown.
func GetAccessToken(ctx context.Context, q Querier, hash string) (AccessToken, error) {
	var t AccessToken
	var refresh sql.NullString
	err := q.QueryRowContext(ctx, `SELECT token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_hash
		FROM access_tokens WHERE token_hash = $1`, hash).
		Scan(&t.TokenHash, &t.UserID, &t.DeviceID, &t.CreatedTS, &t.ExpiresTS, &refresh)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("get access token: %w", err)
	}
	t.RefreshTokenHash = refresh.String
	return t, nil
}

// DeleteAccessToken removes one access token.
func DeleteAccessToken(ctx context.Context, q Querier, hash string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM access_tokens WHERE token_hash = $1`, hash)
	if err != nil {
		return fmt.Errorf("delete access token: %w", err)
	}
	return nil
}

// InsertRefreshToken stores a new refresh token hash.
func InsertRefreshToken(ctx context.Context, q Querier, hash, userID, deviceID string, createdTS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)`,
		hash, userID, deviceID, createdTS)
	if err != nil {
		return fmt.Errorf("insert refresh token for %s/%s: %w", userID, deviceID, err)
	}
	return nil
}

// TakeRefreshToken deletes a refresh token and returns its owner; ErrNotFound if it is unknown
// or already used. Deleting in the same statement makes each refresh token single-use
// even under concurrent refreshes.
func TakeRefreshToken(ctx context.Context, tx *Tx, hash string) (userID, deviceID string, err error) {
	err = tx.QueryRowContext(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1 RETURNING user_id, device_id`, hash).Scan(&userID, &deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("take refresh token: %w", err)
	}
	return userID, deviceID, nil
}

// DeleteAccessTokensForRefresh removes access tokens that were issued with the given refresh token.
func DeleteAccessTokensForRefresh(ctx context.Context, tx *Tx, refreshHash string) ([]string, error) {
	hashes, err := QueryStrings(ctx, tx, `SELECT token_hash FROM access_tokens WHERE refresh_token_hash = $1`, refreshHash)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_token_hash = $1`, refreshHash); err != nil {
		return nil, fmt.Errorf("delete access tokens for refresh token: %w", err)
	}
	return hashes, nil
}

// DeviceIDs lists the device IDs of a user.
func DeviceIDs(ctx context.Context, q Querier, userID string) ([]string, error) {
	return QueryStrings(ctx, q, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
}
