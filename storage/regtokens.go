package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// RegistrationToken is a token that lets people register when registration.mode is token.
// A use is "pending" while a UIA session holds it and "completed" once an account exists.
type RegistrationToken struct {
	Token string
	// UsesAllowed is nil for unlimited uses.
	UsesAllowed *int64
	Pending     int64
	Completed   int64
	// ExpiryTS (ms) is nil for a token that never expires.
	ExpiryTS *int64
}

// Valid reports whether the token may start another registration at nowMS.
func (t RegistrationToken) Valid(nowMS int64) bool {
	return (t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed) && (t.ExpiryTS == nil || *t.ExpiryTS > nowMS)
}

// validTokenSQL is RegistrationToken.Valid in SQL; it needs the current time as $2.
const validTokenSQL = `(uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)`

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_ts`

func scanRegistrationToken(s interface{ Scan(...any) error }) (RegistrationToken, error) {
	var t RegistrationToken
	var uses, expiry sql.NullInt64
	if err := s.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &expiry); err != nil {
		return t, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTS = &expiry.Int64
	}
	return t, nil
}

// InsertRegistrationToken creates a token; ErrExists if it already exists.
func InsertRegistrationToken(ctx context.Context, q Querier, t RegistrationToken) error {
	_, err := q.ExecContext(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts)
		VALUES ($1, $2, 0, 0, $3)`, t.Token, t.UsesAllowed, t.ExpiryTS)
	if IsUniqueViolation(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert registration token: %w", err)
	}
	return nil
}

// GetRegistrationToken loads a token; ErrNotFound if there is none.
func GetRegistrationToken(ctx context.Context, q Querier, token string) (RegistrationToken, error) {
	t, err := scanRegistrationToken(q.QueryRowContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("get registration token: %w", err)
	}
	return t, nil
}

// ListRegistrationTokens lists tokens ordered by token: all of them when valid is nil, else
// only those whose validity at nowMS equals *valid.
func ListRegistrationTokens(ctx context.Context, q Querier, valid *bool, nowMS int64) ([]RegistrationToken, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	defer rows.Close()
	out := []RegistrationToken{}
	for rows.Next() {
		t, err := scanRegistrationToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list registration tokens: %w", err)
		}
		if valid == nil || t.Valid(nowMS) == *valid {
			out = append(out, t)
		}
	}
	return out, rows.Err()
}

// RegistrationTokenUpdate says which attributes of a token to change.
type RegistrationTokenUpdate struct {
	SetUsesAllowed bool
	UsesAllowed    *int64
	SetExpiry      bool
	ExpiryTS       *int64
}

// UpdateRegistrationToken changes a token's attributes; ErrNotFound if it does not exist.
func UpdateRegistrationToken(ctx context.Context, tx *Tx, token string, u RegistrationTokenUpdate) error {
	if _, err := GetRegistrationToken(ctx, tx, token); err != nil {
		return err
	}
	if u.SetUsesAllowed {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2`, u.UsesAllowed, token); err != nil {
			return fmt.Errorf("update registration token: %w", err)
		}
	}
	if u.SetExpiry {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET expiry_ts = $1 WHERE token = $2`, u.ExpiryTS, token); err != nil {
			return fmt.Errorf("update registration token: %w", err)
		}
	}
	return nil
}

// DeleteRegistrationToken removes a token; ErrNotFound if it does not exist.
func DeleteRegistrationToken(ctx context.Context, q Querier, token string) error {
	res, err := q.ExecContext(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("delete registration token: %w", err)
	}
	return requireRow(res)
}

// RegistrationTokenValid reports whether token exists and is valid at nowMS.
func RegistrationTokenValid(ctx context.Context, q Querier, token string, nowMS int64) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM registration_tokens WHERE token = $1 AND `+validTokenSQL, token, nowMS).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check registration token: %w", err)
	}
	return n > 0, nil
}

// ReserveRegistrationToken counts one pending use of token if it is valid at nowMS, in a
// single statement so that concurrent registrations can never exceed uses_allowed.
// It reports whether the token was valid (and is now reserved).
func ReserveRegistrationToken(ctx context.Context, q Querier, token string, nowMS int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1 AND `+validTokenSQL, token, nowMS)
	if err != nil {
		return false, fmt.Errorf("reserve registration token: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ReleaseRegistrationToken gives back a pending use (its UIA session expired). A deleted
// token is ignored.
func ReleaseRegistrationToken(ctx context.Context, q Querier, token string) error {
	if _, err := q.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, token); err != nil {
		return fmt.Errorf("release registration token: %w", err)
	}
	return nil
}

// ConsumeRegistrationToken turns a pending use into a completed one when the registration
// it allowed succeeds; ErrNotFound if the token was deleted meanwhile.
func ConsumeRegistrationToken(ctx context.Context, q Querier, token string) error {
	res, err := q.ExecContext(ctx, `UPDATE registration_tokens
		SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, completed = completed + 1
		WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("consume registration token: %w", err)
	}
	return requireRow(res)
}

// InsertRegistrationNonce stores the hash of a shared-secret registration nonce.
func InsertRegistrationNonce(ctx context.Context, q Querier, hash string, createdTS int64) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO registration_nonces (nonce_hash, created_ts) VALUES ($1, $2)`, hash, createdTS); err != nil {
		return fmt.Errorf("insert registration nonce: %w", err)
	}
	return nil
}

// TakeRegistrationNonce deletes a nonce and reports whether it existed and was created at or
// after notBeforeTS. Deleting in the same statement makes every nonce single-use, valid or not.
func TakeRegistrationNonce(ctx context.Context, tx *Tx, hash string, notBeforeTS int64) (bool, error) {
	var created int64
	err := tx.QueryRowContext(ctx, `DELETE FROM registration_nonces WHERE nonce_hash = $1 RETURNING created_ts`, hash).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("take registration nonce: %w", err)
	}
	return created >= notBeforeTS, nil
}

// DeleteExpiredRegistrationNonces removes nonces created before beforeTS.
func DeleteExpiredRegistrationNonces(ctx context.Context, q Querier, beforeTS int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM registration_nonces WHERE created_ts < $1`, beforeTS); err != nil {
		return fmt.Errorf("delete expired registration nonces: %w", err)
	}
	return nil
}
