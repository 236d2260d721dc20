package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// TransactionResponse returns the response recorded for a client transaction ID of a
// device in scope (e.g. "send:!room:server"); found is false when the ID is unused (or
// only claimed by an older version of Myelin that died before answering).
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

// InsertTransactionResponse records the response of a client transaction ID in the
// caller's transaction, the one that applies the request, so that the request's effect
// and its record commit together (a replay after a crash finds the record whenever it
// finds the effect). It returns false when the ID already has a response (a replay that
// raced the first request); a row without a response (a claim left by an older version
// of Myelin) is overwritten.
func InsertTransactionResponse(ctx context.Context, q Querier, userID, deviceID, scope, txnID, response string) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, scope, txn_id)
		DO UPDATE SET response = excluded.response, created_ts = excluded.created_ts WHERE transaction_ids.response = ''`,
		userID, deviceID, scope, txnID, response, NowMS())
	if err != nil {
		return false, fmt.Errorf("record transaction %s of %s/%s: %w", txnID, userID, deviceID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
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
