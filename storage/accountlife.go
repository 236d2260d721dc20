package storage

import (
	"context"
	"fmt"
)

// Account lifecycle writes that touch other per-user tables: the profile a new account
// starts with, and what deactivation erases.

// InitProfile gives a new account its profile row with an initial display name (nil for none).
// An existing row is left as it is.
func InitProfile(ctx context.Context, q Querier, userID string, displayName *string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, NULL)
		ON CONFLICT (user_id) DO NOTHING`, userID, displayName)
	if err != nil {
		return fmt.Errorf("init profile %s: %w", userID, err)
	}
	return nil
}

// EraseProfile clears a user's whole profile: display name, avatar and custom fields
// (deactivation with erase).
func EraseProfile(ctx context.Context, q Querier, userID string) error {
	_, err := q.ExecContext(ctx, `UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("erase profile %s: %w", userID, err)
	}
	return DeleteCustomProfileFields(ctx, q, userID)
}

// DeleteAllAccountData removes every global and per-room account data entry of a user
// (deactivation: nothing the user stored for their clients stays behind).
func DeleteAllAccountData(ctx context.Context, q Querier, userID string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM account_data WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete account data of %s: %w", userID, err)
	}
	return nil
}

// DeleteAccessTokensExcept removes every access token of a user but keepHash ("" keeps none)
// and returns the removed hashes. With keepHash "", the user's refresh tokens go too.
func DeleteAccessTokensExcept(ctx context.Context, tx *Tx, userID, keepHash string) ([]string, error) {
	hashes, err := QueryStrings(ctx, tx, `SELECT token_hash FROM access_tokens WHERE user_id = $1 AND token_hash <> $2`, userID, keepHash)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND token_hash <> $2`, userID, keepHash); err != nil {
		return nil, fmt.Errorf("delete access tokens of %s: %w", userID, err)
	}
	if keepHash == "" {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1`, userID); err != nil {
			return nil, fmt.Errorf("delete refresh tokens of %s: %w", userID, err)
		}
	}
	return hashes, nil
}
