package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// TransactionResponse returns the response recorded for a client transaction ID of a
// device in scope (e.g. "send:!room:server"); found is false when the ID is unused.
func TransactionResponse(ctx context.Context, q Querier, userID, deviceID, scope, txnID string) (response string, found bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT response FROM transaction_ids
		WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
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
