package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Cross-signing key types, as in the keys' "usage".
const (
	CrossSigningMaster      = "master"
	CrossSigningSelfSigning = "self_signing"
	CrossSigningUserSigning = "user_signing"
)

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	UserID string
	Type   string // CrossSigningMaster, CrossSigningSelfSigning or CrossSigningUserSigning
	// PublicKey is the unpadded base64 ed25519 public key (also the key's ID after "ed25519:").
	PublicKey string
	// KeyJSON is the canonical JSON of the key object as uploaded, with the signatures it carried.
	KeyJSON json.RawMessage
}

// KeySignature is a signature uploaded for a device key or a master key.
type KeySignature struct {
	TargetUserID string
	// TargetKeyID is a device ID or a master public key.
	TargetKeyID  string
	SignerUserID string
	// SignerKeyID is "ed25519:<device ID or public key>".
	SignerKeyID string
	Signature   string
}

// GetCrossSigningKeys returns a user's cross-signing keys by type (empty map when none).
func GetCrossSigningKeys(ctx context.Context, q Querier, userID string) (map[string]CrossSigningKey, error) {
	all, err := QueryCrossSigningKeys(ctx, q, []string{userID})
	if err != nil {
		return nil, err
	}
	if m := all[userID]; m != nil {
		return m, nil
	}
	return map[string]CrossSigningKey{}, nil
}

// QueryCrossSigningKeys returns the cross-signing keys of several users: user → type → key.
func QueryCrossSigningKeys(ctx context.Context, q Querier, userIDs []string) (map[string]map[string]CrossSigningKey, error) {
	out := map[string]map[string]CrossSigningKey{}
	err := chunks(userIDs, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys
			WHERE user_id IN (`+placeholders(1, len(part))+`)`, stringArgs(nil, part)...)
		if err != nil {
			return fmt.Errorf("query cross-signing keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k CrossSigningKey
			var js string
			if err := rows.Scan(&k.UserID, &k.Type, &k.PublicKey, &js); err != nil {
				return fmt.Errorf("query cross-signing keys: %w", err)
			}
			k.KeyJSON = json.RawMessage(js)
			if out[k.UserID] == nil {
				out[k.UserID] = map[string]CrossSigningKey{}
			}
			out[k.UserID][k.Type] = k
		}
		return rows.Err()
	})
	return out, err
}

// PutCrossSigningKey stores (or replaces) a cross-signing key. Replacing a key with a new
// public key drops the signatures that no longer mean anything: those uploaded for an old
// master key, and those made with an old self-signing or user-signing key.
func PutCrossSigningKey(ctx context.Context, tx *Tx, k CrossSigningKey) error {
	var oldPub string
	err := tx.QueryRowContext(ctx, `SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = $2`,
		k.UserID, k.Type).Scan(&oldPub)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("get %s key of %s: %w", k.Type, k.UserID, err)
	}
	if oldPub != "" && oldPub != k.PublicKey {
		query := `DELETE FROM e2e_key_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`
		arg := "ed25519:" + oldPub
		if k.Type == CrossSigningMaster {
			query = `DELETE FROM e2e_key_signatures WHERE target_user_id = $1 AND target_key_id = $2`
			arg = oldPub
		}
		if _, err := tx.ExecContext(ctx, query, k.UserID, arg); err != nil {
			return fmt.Errorf("drop signatures of old %s key of %s: %w", k.Type, k.UserID, err)
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json, updated_ts = excluded.updated_ts`,
		k.UserID, k.Type, k.PublicKey, string(k.KeyJSON), NowMS())
	if err != nil {
		return fmt.Errorf("put %s key of %s: %w", k.Type, k.UserID, err)
	}
	return nil
}

// PutKeySignatures stores signatures, replacing an earlier signature by the same signer key.
func PutKeySignatures(ctx context.Context, tx *Tx, sigs []KeySignature) error {
	for _, s := range sigs {
		_, err := tx.ExecContext(ctx, `INSERT INTO e2e_key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
			s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
		if err != nil {
			return fmt.Errorf("put signature of %s %s by %s: %w", s.TargetUserID, s.TargetKeyID, s.SignerUserID, err)
		}
	}
	return nil
}

// QueryKeySignatures returns the uploaded signatures of the keys of the given users,
// ordered by target and signer.
func QueryKeySignatures(ctx context.Context, q Querier, targetUserIDs []string) ([]KeySignature, error) {
	var out []KeySignature
	err := chunks(targetUserIDs, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
			FROM e2e_key_signatures WHERE target_user_id IN (`+placeholders(1, len(part))+`)`, stringArgs(nil, part)...)
		if err != nil {
			return fmt.Errorf("query key signatures: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var s KeySignature
			if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
				return fmt.Errorf("query key signatures: %w", err)
			}
			out = append(out, s)
		}
		return rows.Err()
	})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.TargetUserID != b.TargetUserID {
			return a.TargetUserID < b.TargetUserID
		}
		if a.TargetKeyID != b.TargetKeyID {
			return a.TargetKeyID < b.TargetKeyID
		}
		if a.SignerUserID != b.SignerUserID {
			return a.SignerUserID < b.SignerUserID
		}
		return a.SignerKeyID < b.SignerKeyID
	})
	return out, err
}

// InsertCrossSigningKeyIfAbsent stores a cross-signing key only when the user has no key
// of that type yet, and reports whether it did. Concurrent callers cannot both succeed.
func InsertCrossSigningKeyIfAbsent(ctx context.Context, tx *Tx, k CrossSigningKey) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key_type) DO NOTHING`,
		k.UserID, k.Type, k.PublicKey, string(k.KeyJSON), NowMS())
	if err != nil {
		return false, fmt.Errorf("insert %s key of %s: %w", k.Type, k.UserID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
