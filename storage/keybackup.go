package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// BackupVersion is a server-side room key backup of a user (/room_keys/version).
type BackupVersion struct {
	UserID    string
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	// Etag changes whenever the keys stored in the version change.
	Etag int64
}

// BackupSession is the backed-up key of one megolm session.
type BackupSession struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// BetterThan reports whether s should replace old, by the spec's rules: a verified key
// beats an unverified one; then the lower first_message_index wins; then the lower
// forwarded_count. When all three are equal the stored key is kept.
func (s BackupSession) BetterThan(old BackupSession) bool {
	if s.IsVerified != old.IsVerified {
		return s.IsVerified
	}
	if s.FirstMessageIndex != old.FirstMessageIndex {
		return s.FirstMessageIndex < old.FirstMessageIndex
	}
	return s.ForwardedCount < old.ForwardedCount
}

// CreateBackupVersion creates a new backup version for a user, which becomes the latest,
// and returns its number. Numbers are never reused, even after a version is deleted.
func CreateBackupVersion(ctx context.Context, tx *Tx, userID, algorithm string, authData json.RawMessage) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data, etag, deleted, created_ts)
		SELECT CAST($1 AS TEXT), COALESCE(MAX(version), 0) + 1, CAST($2 AS TEXT), CAST($3 AS TEXT), 0, FALSE, CAST($4 AS BIGINT) FROM e2e_backup_versions WHERE user_id = $1
		RETURNING version`, userID, algorithm, string(authData), NowMS()).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("create backup version for %s: %w", userID, err)
	}
	return v, nil
}

func scanBackupVersion(row *sql.Row, userID string) (BackupVersion, error) {
	b := BackupVersion{UserID: userID}
	var auth string
	err := row.Scan(&b.Version, &b.Algorithm, &auth, &b.Etag)
	if errors.Is(err, sql.ErrNoRows) {
		return b, ErrNotFound
	}
	if err != nil {
		return b, fmt.Errorf("get backup version of %s: %w", userID, err)
	}
	b.AuthData = json.RawMessage(auth)
	return b, nil
}

// GetBackupVersion loads a version; ErrNotFound when it does not exist or was deleted.
func GetBackupVersion(ctx context.Context, q Querier, userID string, version int64) (BackupVersion, error) {
	return scanBackupVersion(q.QueryRowContext(ctx, `SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions
		WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, version), userID)
}

// LatestBackupVersion loads the user's latest version that is not deleted; ErrNotFound when none.
func LatestBackupVersion(ctx context.Context, q Querier, userID string) (BackupVersion, error) {
	return scanBackupVersion(q.QueryRowContext(ctx, `SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions
		WHERE user_id = $1 AND deleted = FALSE ORDER BY version DESC LIMIT 1`, userID), userID)
}

// UpdateBackupAuthData replaces the auth_data of a version; ErrNotFound when it does not exist.
func UpdateBackupAuthData(ctx context.Context, tx *Tx, userID string, version int64, authData json.RawMessage) error {
	res, err := tx.ExecContext(ctx, `UPDATE e2e_backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3 AND deleted = FALSE`,
		string(authData), userID, version)
	if err != nil {
		return fmt.Errorf("update backup version %d of %s: %w", version, userID, err)
	}
	return requireRow(res)
}

// BackupVersionExisted reports whether the version was ever created (deleted or not).
func BackupVersionExisted(ctx context.Context, q Querier, userID string, version int64) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2e_backup_versions WHERE user_id = $1 AND version = $2`, userID, version).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check backup version %d of %s: %w", version, userID, err)
	}
	return n > 0, nil
}

// DeleteBackupVersion marks a version deleted and deletes its keys. It returns ErrNotFound
// when the version never existed; deleting an already deleted version succeeds.
func DeleteBackupVersion(ctx context.Context, tx *Tx, userID string, version int64) error {
	res, err := tx.ExecContext(ctx, `UPDATE e2e_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2`, userID, version)
	if err != nil {
		return fmt.Errorf("delete backup version %d of %s: %w", version, userID, err)
	}
	if err := requireRow(res); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM e2e_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
		return fmt.Errorf("delete keys of backup version %d of %s: %w", version, userID, err)
	}
	return nil
}

// CountBackupSessions returns the number of keys stored in a version.
func CountBackupSessions(ctx context.Context, q Querier, userID string, version int64) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2e_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count keys of backup version %d of %s: %w", version, userID, err)
	}
	return n, nil
}

// bumpBackupEtag changes the etag of a version and returns the new one.
func bumpBackupEtag(ctx context.Context, tx *Tx, userID string, version int64) (int64, error) {
	var etag int64
	err := tx.QueryRowContext(ctx, `UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 RETURNING etag`,
		userID, version).Scan(&etag)
	if err != nil {
		return 0, fmt.Errorf("bump etag of backup version %d of %s: %w", version, userID, err)
	}
	return etag, nil
}

// PutBackupSessions stores keys in a version, keeping for each session whichever of the
// stored and the new key is better (BackupSession.BetterThan). It returns the version's
// etag afterwards, changed only when some key was written.
func PutBackupSessions(ctx context.Context, tx *Tx, userID string, version int64, sessions []BackupSession) (etag int64, err error) {
	written := 0
	for _, s := range sessions {
		var old BackupSession
		var data string
		err := tx.QueryRowContext(ctx, `SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2e_backup_sessions
			WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, version, s.RoomID, s.SessionID).
			Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified, &data)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO e2e_backup_sessions (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				userID, version, s.RoomID, s.SessionID, s.FirstMessageIndex, s.ForwardedCount, s.IsVerified, string(s.SessionData))
		case err != nil:
		case s.BetterThan(old):
			_, err = tx.ExecContext(ctx, `UPDATE e2e_backup_sessions SET first_message_index = $1, forwarded_count = $2, is_verified = $3, session_data = $4
				WHERE user_id = $5 AND version = $6 AND room_id = $7 AND session_id = $8`,
				s.FirstMessageIndex, s.ForwardedCount, s.IsVerified, string(s.SessionData), userID, version, s.RoomID, s.SessionID)
		default:
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("put backup key %s/%s of %s: %w", s.RoomID, s.SessionID, userID, err)
		}
		written++
	}
	if written == 0 {
		v, err := GetBackupVersion(ctx, tx, userID, version)
		return v.Etag, err
	}
	return bumpBackupEtag(ctx, tx, userID, version)
}

// GetBackupSessions returns the keys of a version: all of them (roomID ""), those of a
// room (sessionID ""), or one session's. Ordered by room and session.
func GetBackupSessions(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) ([]BackupSession, error) {
	query := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2e_backup_sessions
		WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		query += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			query += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("get backup keys of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []BackupSession
	for rows.Next() {
		var s BackupSession
		var data string
		if err := rows.Scan(&s.RoomID, &s.SessionID, &s.FirstMessageIndex, &s.ForwardedCount, &s.IsVerified, &data); err != nil {
			return nil, fmt.Errorf("get backup keys of %s: %w", userID, err)
		}
		s.SessionData = json.RawMessage(data)
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteBackupSessions deletes keys of a version: all of them (roomID ""), those of a
// room (sessionID ""), or one session's. It returns the version's etag afterwards.
func DeleteBackupSessions(ctx context.Context, tx *Tx, userID string, version int64, roomID, sessionID string) (int64, error) {
	query := `DELETE FROM e2e_backup_sessions WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		query += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			query += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("delete backup keys of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		v, err := GetBackupVersion(ctx, tx, userID, version)
		return v.Etag, err
	}
	return bumpBackupEtag(ctx, tx, userID, version)
}
