package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// StreamPresence is the stream of presence changes.
const StreamPresence = "presence"

// Presence is a user's stored presence.
type Presence struct {
	UserID string
	// State is online, unavailable or offline.
	State        string
	StatusMsg    string
	LastActiveTS int64
	StreamPos    int64
}

// PutPresence stores a user's presence and returns its new position in the presence stream.
func PutPresence(ctx context.Context, tx *Tx, p Presence) (int64, error) {
	pos, err := NextStreamPosition(ctx, tx, StreamPresence)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts, stream_pos = excluded.stream_pos`,
		p.UserID, p.State, p.StatusMsg, p.LastActiveTS, pos)
	if err != nil {
		return 0, fmt.Errorf("put presence of %s: %w", p.UserID, err)
	}
	return pos, nil
}

// GetPresence returns a user's stored presence; ErrNotFound when none was ever stored.
func GetPresence(ctx context.Context, q Querier, userID string) (Presence, error) {
	p := Presence{UserID: userID}
	err := q.QueryRowContext(ctx, `SELECT state, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1`,
		userID).Scan(&p.State, &p.StatusMsg, &p.LastActiveTS, &p.StreamPos)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("get presence of %s: %w", userID, err)
	}
	return p, nil
}

// PresenceSince returns the presence of the given users (every user when userIDs is
// nil) changed after position from and up to position to (inclusive; to <= 0 means no
// upper bound), oldest first.
func PresenceSince(ctx context.Context, q Querier, userIDs []string, from, to int64) ([]Presence, error) {
	upper := to
	if upper <= 0 {
		upper = 1<<62 - 1
	}
	var out []Presence
	query := func(part []string) error {
		stmt := `SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence
			WHERE stream_pos > $1 AND stream_pos <= $2`
		if part != nil {
			stmt += ` AND user_id IN (` + placeholders(3, len(part)) + `)`
		}
		rows, err := q.QueryContext(ctx, stmt+` ORDER BY stream_pos`, stringArgs([]any{from, upper}, part)...)
		if err != nil {
			return fmt.Errorf("presence since %d: %w", from, err)
		}
		defer rows.Close()
		for rows.Next() {
			var p Presence
			if err := rows.Scan(&p.UserID, &p.State, &p.StatusMsg, &p.LastActiveTS, &p.StreamPos); err != nil {
				return fmt.Errorf("presence since %d: %w", from, err)
			}
			out = append(out, p)
		}
		return rows.Err()
	}
	if userIDs == nil {
		return out, query(nil)
	}
	err := chunks(userIDs, query)
	return out, err
}
