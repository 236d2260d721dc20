package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// UIASession is a user-interactive auth session: the stages a client has completed for
// one request (path) of one user ("" while registering).
type UIASession struct {
	ID        string
	UserID    string
	Path      string
	Completed []string
	// RegistrationToken is the token this session reserved (counted as pending), or "".
	RegistrationToken string
	CreatedTS         int64
}

// InsertUIASession stores a new session.
func InsertUIASession(ctx context.Context, q Querier, s UIASession) error {
	completed, err := json.Marshal(nonNil(s.Completed))
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO uia_sessions (session_id, user_id, request_path, completed, registration_token, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.ID, s.UserID, s.Path, string(completed), s.RegistrationToken, s.CreatedTS)
	if IsUniqueViolation(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert uia session: %w", err)
	}
	return nil
}

// GetUIASession loads a session; ErrNotFound if there is none.
func GetUIASession(ctx context.Context, q Querier, id string) (UIASession, error) {
	var s UIASession
	var completed string
	err := q.QueryRowContext(ctx, `SELECT session_id, user_id, request_path, completed, registration_token, created_ts
		FROM uia_sessions WHERE session_id = $1`, id).
		Scan(&s.ID, &s.UserID, &s.Path, &completed, &s.RegistrationToken, &s.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("get uia session: %w", err)
	}
	if err := json.Unmarshal([]byte(completed), &s.Completed); err != nil {
		return s, fmt.Errorf("get uia session: bad completed list: %w", err)
	}
	return s, nil
}

// UpdateUIASession saves a session's completed stages and reserved registration token.
func UpdateUIASession(ctx context.Context, q Querier, s UIASession) error {
	completed, err := json.Marshal(nonNil(s.Completed))
	if err != nil {
		return err
	}
	res, err := q.ExecContext(ctx, `UPDATE uia_sessions SET completed = $1, registration_token = $2 WHERE session_id = $3`,
		string(completed), s.RegistrationToken, s.ID)
	if err != nil {
		return fmt.Errorf("update uia session: %w", err)
	}
	return requireRow(res)
}

// DeleteUIASession removes a session once the request it protected has succeeded. A
// registration token it reserved must have been consumed (ConsumeRegistrationToken) first.
func DeleteUIASession(ctx context.Context, q Querier, id string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id); err != nil {
		return fmt.Errorf("delete uia session: %w", err)
	}
	return nil
}

// DeleteUIASessionsForUser removes every session of a user (deactivation), releasing nothing:
// only registration sessions (user "") reserve registration tokens.
func DeleteUIASessionsForUser(ctx context.Context, q Querier, userID string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM uia_sessions WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete uia sessions of %s: %w", userID, err)
	}
	return nil
}

// DeleteExpiredUIASessions removes sessions created before beforeTS, giving back the pending
// registration-token uses they reserved. It returns how many sessions were removed.
func DeleteExpiredUIASessions(ctx context.Context, tx *Tx, beforeTS int64) (int64, error) {
	tokens, err := QueryStrings(ctx, tx, `SELECT registration_token FROM uia_sessions
		WHERE created_ts < $1 AND registration_token <> ''`, beforeTS)
	if err != nil {
		return 0, err
	}
	for _, tok := range tokens {
		if err := ReleaseRegistrationToken(ctx, tx, tok); err != nil {
			return 0, err
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, beforeTS)
	if err != nil {
		return 0, fmt.Errorf("delete expired uia sessions: %w", err)
	}
	return res.RowsAffected()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
