package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
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

// TxnRecord is one client transaction ID and its response, for InsertTransactionResponses.
type TxnRecord struct {
	UserID, DeviceID, Scope, TxnID, Response string
}

// InsertTransactionResponses records several responses as InsertTransactionResponse
// does, and returns the indexes of the records whose ID already had a response. On
// PostgreSQL it is one statement (one round trip) for all of them.
func InsertTransactionResponses(ctx context.Context, q Querier, recs []TxnRecord) (conflicts []int, err error) {
	if d, ok := DialectOf(q); !ok || d != Postgres || len(recs) == 1 {
		for i, r := range recs {
			ok, err := InsertTransactionResponse(ctx, q, r.UserID, r.DeviceID, r.Scope, r.TxnID, r.Response)
			if err != nil {
				return nil, err
			}
			if !ok {
				conflicts = append(conflicts, i)
			}
		}
		return conflicts, nil
	}
	for start := 0; start < len(recs); start += 500 {
		part := recs[start:min(start+500, len(recs))]
		var b strings.Builder
		b.WriteString(`INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts) VALUES `)
		args := make([]any, 0, len(part)*5+1)
		args = append(args, NowMS())
		for i, r := range part {
			if i > 0 {
				b.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $1)", n+1, n+2, n+3, n+4, n+5)
			args = append(args, r.UserID, r.DeviceID, r.Scope, r.TxnID, r.Response)
		}
		b.WriteString(` ON CONFLICT (user_id, device_id, scope, txn_id)
			DO UPDATE SET response = excluded.response, created_ts = excluded.created_ts WHERE transaction_ids.response = ''
			RETURNING user_id, device_id, scope, txn_id`)
		rows, err := q.QueryContext(ctx, b.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("record %d transactions: %w", len(part), err)
		}
		written := make(map[TxnRecord]bool, len(part))
		for rows.Next() {
			var r TxnRecord
			if err := rows.Scan(&r.UserID, &r.DeviceID, &r.Scope, &r.TxnID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("record %d transactions: %w", len(part), err)
			}
			written[r] = true
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, fmt.Errorf("record %d transactions: %w", len(part), err)
		}
		rows.Close()
		for i, r := range part {
			if !written[TxnRecord{UserID: r.UserID, DeviceID: r.DeviceID, Scope: r.Scope, TxnID: r.TxnID}] {
				conflicts = append(conflicts, start+i)
			}
		}
	}
	return conflicts, nil
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
