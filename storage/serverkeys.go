package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ServerKey is one signing key of a server. Public is unpadded base64.
type ServerKey struct {
	ServerName   string
	KeyID        string
	Public       string
	ValidUntilTS int64 // 0 for an old key
	ExpiredTS    int64 // 0 while the key is current
}

// UpsertServerKeys stores keys fetched from a server or notary. A stored key keeps the
// later valid_until_ts, and an expired_ts once set is kept.
func UpsertServerKeys(ctx context.Context, q Querier, keys []ServerKey, nowMS int64) error {
	for _, k := range keys {
		_, err := q.ExecContext(ctx, `INSERT INTO server_signing_keys
			(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				public_key = excluded.public_key,
				valid_until_ts = CASE WHEN excluded.valid_until_ts > server_signing_keys.valid_until_ts
					THEN excluded.valid_until_ts ELSE server_signing_keys.valid_until_ts END,
				expired_ts = CASE WHEN excluded.expired_ts <> 0 THEN excluded.expired_ts ELSE server_signing_keys.expired_ts END,
				fetched_ts = excluded.fetched_ts`,
			k.ServerName, k.KeyID, k.Public, k.ValidUntilTS, k.ExpiredTS, nowMS)
		if err != nil {
			return fmt.Errorf("store key %s %s: %w", k.ServerName, k.KeyID, err)
		}
	}
	return nil
}

// LookupServerKey returns one stored key; ErrNotFound when unknown.
func LookupServerKey(ctx context.Context, q Querier, serverName, keyID string) (ServerKey, error) {
	k := ServerKey{ServerName: serverName, KeyID: keyID}
	err := q.QueryRowContext(ctx, `SELECT public_key, valid_until_ts, expired_ts FROM server_signing_keys
		WHERE server_name = $1 AND key_id = $2`, serverName, keyID).Scan(&k.Public, &k.ValidUntilTS, &k.ExpiredTS)
	if errors.Is(err, sql.ErrNoRows) {
		return ServerKey{}, ErrNotFound
	}
	if err != nil {
		return ServerKey{}, fmt.Errorf("look up key %s %s: %w", serverName, keyID, err)
	}
	return k, nil
}

// StoreServerKeyResponse keeps the latest signed key response of a server, unless the
// stored one is valid for longer.
func StoreServerKeyResponse(ctx context.Context, q Querier, serverName string, keyJSON []byte, validUntilTS, nowMS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO server_key_responses (server_name, key_json, valid_until_ts, fetched_ts)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (server_name) DO UPDATE SET key_json = excluded.key_json,
			valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts
		WHERE excluded.valid_until_ts >= server_key_responses.valid_until_ts`,
		serverName, string(keyJSON), validUntilTS, nowMS)
	if err != nil {
		return fmt.Errorf("store key response of %s: %w", serverName, err)
	}
	return nil
}

// ServerKeyResponse returns the stored signed key response of a server and its
// valid_until_ts; ErrNotFound when none is stored.
func ServerKeyResponse(ctx context.Context, q Querier, serverName string) ([]byte, int64, error) {
	var js string
	var until int64
	err := q.QueryRowContext(ctx, `SELECT key_json, valid_until_ts FROM server_key_responses WHERE server_name = $1`,
		serverName).Scan(&js, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look up key response of %s: %w", serverName, err)
	}
	return []byte(js), until, nil
}

// RetireOwnSigningKey records one of our keys as no longer used since expiredTS.
func RetireOwnSigningKey(ctx context.Context, q Querier, keyID, public string, expiredTS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO own_old_signing_keys (key_id, public_key, expired_ts) VALUES ($1, $2, $3)
		ON CONFLICT (key_id) DO NOTHING`, keyID, public, expiredTS)
	if err != nil {
		return fmt.Errorf("retire signing key %s: %w", keyID, err)
	}
	return nil
}

// OwnOldSigningKeys lists our retired keys (ServerName left empty).
func OwnOldSigningKeys(ctx context.Context, q Querier) ([]ServerKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT key_id, public_key, expired_ts FROM own_old_signing_keys ORDER BY expired_ts`)
	if err != nil {
		return nil, fmt.Errorf("list old signing keys: %w", err)
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		var k ServerKey
		if err := rows.Scan(&k.KeyID, &k.Public, &k.ExpiredTS); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
