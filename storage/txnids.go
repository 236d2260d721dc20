package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// TransactionResponse returns the response recorded for a client transaction ID of a
// device in scope (e.g. "send:!room:server"); found is false when the ID is unused or
// its request is still in progress (claimed by ClaimTransaction, not completed).
func TransactionResponse(ctx context.Context, q Querier, userID, deviceID, scope, txnID string) (response string, found bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT response FROM transaction_ids
		WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4 AND response <> ''`,
		userID, deviceID, scope, txnID).Scan(&response)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	return response, true, nil
}

// RecordTransaction records the response of a client transaction ID so that a replay
// returns it. It returns the response actually stored: the first one recorded wins.
func RecordTransaction(ctx context.Context, db *DB, userID, deviceID, scope, txnID, response string) (string, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING`,
		userID, deviceID, scope, txnID, response, NowMS())
	if err != nil {
		return "", fmt.Errorf("record transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return response, nil
	}
	stored, _, err := TransactionResponse(ctx, db, userID, deviceID, scope, txnID)
	return stored, err
}

// DeleteTransactionsBefore forgets the transaction IDs recorded before ts (ms), for
// housekeeping; it returns how many were removed.
func DeleteTransactionsBefore(ctx context.Context, db *DB, ts int64) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM transaction_ids WHERE created_ts < $1`, ts)
	if err != nil {
		return 0, fmt.Errorf("delete old transaction IDs: %w", err)
	}
	return res.RowsAffected()
}

// ClaimTransaction takes a client transaction ID for a request about to run, so that a
// replay handled concurrently (by another process sharing the database) waits for it
// instead of running again. It returns claimed true when the caller must run the request
// and then call CompleteTransaction (or ReleaseTransaction if it failed); otherwise the
// recorded response, or "" while another request holds the ID. A claim older than
// staleBeforeMS (a process that died mid-request) is taken over.
func ClaimTransaction(ctx context.Context, db *DB, userID, deviceID, scope, txnID string, staleBeforeMS int64) (claimed bool, response string, err error) {
	now := NowMS()
	res, err := db.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts)
		VALUES ($1, $2, $3, $4, '', $5) ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING`,
		userID, deviceID, scope, txnID, now)
	if err != nil {
		return false, "", fmt.Errorf("claim transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, "", err
	} else if n == 1 {
		return true, "", nil
	}
	var created int64
	err = db.QueryRowContext(ctx, `SELECT response, created_ts FROM transaction_ids
		WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
		userID, deviceID, scope, txnID).Scan(&response, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return false, "", nil // released meanwhile: the caller tries again
	}
	if err != nil {
		return false, "", fmt.Errorf("transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	if response != "" || created >= staleBeforeMS {
		return false, response, nil
	}
	// Placeholders are numbered in order of appearance (SQLite binds them by position).
	res, err = db.ExecContext(ctx, `UPDATE transaction_ids SET created_ts = $1
		WHERE user_id = $2 AND device_id = $3 AND scope = $4 AND txn_id = $5 AND response = '' AND created_ts = $6`,
		now, userID, deviceID, scope, txnID, created)
	if err != nil {
		return false, "", fmt.Errorf("take over transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, "", err
}

// CompleteTransaction records the response of a claimed transaction ID.
func CompleteTransaction(ctx context.Context, db *DB, userID, deviceID, scope, txnID, response string) error {
	_, err := db.ExecContext(ctx, `UPDATE transaction_ids SET response = $1
		WHERE user_id = $2 AND device_id = $3 AND scope = $4 AND txn_id = $5`,
		response, userID, deviceID, scope, txnID)
	if err != nil {
		return fmt.Errorf("complete transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	return nil
}

// ReleaseTransaction gives back a claimed transaction ID whose request failed, so that
// the client may retry it.
func ReleaseTransaction(ctx context.Context, db *DB, userID, deviceID, scope, txnID string) error {
	_, err := db.ExecContext(ctx, `DELETE FROM transaction_ids
		WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4 AND response = ''`,
		userID, deviceID, scope, txnID)
	if err != nil {
		return fmt.Errorf("release transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	return nil
}
