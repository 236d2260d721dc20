package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// GetPushRules returns a user's stored push rule changes (a JSON document owned by
// syncapi/push); ErrNotFound when the user never changed their rules.
func GetPushRules(ctx context.Context, q Querier, userID string) (string, error) {
	var rules string
	err := q.QueryRowContext(ctx, `SELECT rules FROM push_rules WHERE user_id = $1`, userID).Scan(&rules)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get push rules of %s: %w", userID, err)
	}
	return rules, nil
}

// GetPushRulesOf returns the stored push rule documents of the users that have one.
func GetPushRulesOf(ctx context.Context, q Querier, userIDs []string) (map[string]string, error) {
	out := make(map[string]string)
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		rows, err := q.QueryContext(ctx, `SELECT user_id, rules FROM push_rules WHERE user_id IN (`+placeholders(1, len(chunk))+`)`, stringArgs(nil, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("get push rules: %w", err)
		}
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				rows.Close()
				return nil, fmt.Errorf("get push rules: %w", err)
			}
			out[u] = r
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PutPushRules stores a user's push rule document.
func PutPushRules(ctx context.Context, tx *Tx, userID, rules string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_rules (user_id, rules, updated_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules, updated_ts = excluded.updated_ts`,
		userID, rules, NowMS())
	if err != nil {
		return fmt.Errorf("put push rules of %s: %w", userID, err)
	}
	return nil
}

// LockPushRules serialises read-modify-write cycles of a user's push rules (a no-op
// on SQLite, where write transactions are already serial).
func LockPushRules(ctx context.Context, tx *Tx, userID string) error {
	if tx.Dialect() != Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('push_rules:' || $1))`, userID)
	return err
}
