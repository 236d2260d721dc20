package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// InsertOpenIDToken stores the hash of an OpenID token valid until expiresTS (ms), and
// purges tokens that have expired by then so the table does not grow without bound.
func InsertOpenIDToken(ctx context.Context, tx *Tx, hash, userID string, expiresTS, nowMS int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowMS); err != nil {
		return fmt.Errorf("purge expired openid tokens: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		hash, userID, expiresTS)
	if err != nil {
		return fmt.Errorf("insert openid token for %s: %w", userID, err)
	}
	return nil
}

// LookupOpenIDToken returns the user an OpenID token (by hash) was issued to;
// ErrNotFound if the token is unknown or expired at nowMS.
func LookupOpenIDToken(ctx context.Context, q Querier, hash string, nowMS int64) (userID string, err error) {
	err = q.QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`, hash, nowMS).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("look up openid token: %w", err)
	}
	return userID, nil
}
