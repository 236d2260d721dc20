package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// EventReport is a user's report of a room or of one of its events.
type EventReport struct {
	ID      int64
	RoomID  string
	EventID string // empty for a report of the room
	// Reporter is the user ID of the reporting user.
	Reporter string
	Reason   string
	// Score is the optional -100..0 score of the report (nil when not given).
	Score      *int64
	ReceivedTS int64
}

// InsertEventReport stores a report.
func InsertEventReport(ctx context.Context, db *DB, r EventReport) error {
	var score sql.NullInt64
	if r.Score != nil {
		score = sql.NullInt64{Int64: *r.Score, Valid: true}
	}
	if r.ReceivedTS == 0 {
		r.ReceivedTS = NowMS()
	}
	_, err := db.ExecContext(ctx, `INSERT INTO event_reports (room_id, event_id, reporter, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, r.RoomID, r.EventID, r.Reporter, r.Reason, score, r.ReceivedTS)
	if err != nil {
		return fmt.Errorf("insert report of %s by %s: %w", r.RoomID, r.Reporter, err)
	}
	return nil
}

// EventReports returns up to limit reports after id from (0: from the first), oldest first.
func EventReports(ctx context.Context, q Querier, from int64, limit int) ([]EventReport, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := q.QueryContext(ctx, `SELECT id, room_id, event_id, reporter, reason, score, received_ts FROM event_reports
		WHERE id > $1 ORDER BY id LIMIT $2`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("list reports: %w", err)
	}
	defer rows.Close()
	var out []EventReport
	for rows.Next() {
		var r EventReport
		var score sql.NullInt64
		if err := rows.Scan(&r.ID, &r.RoomID, &r.EventID, &r.Reporter, &r.Reason, &score, &r.ReceivedTS); err != nil {
			return nil, err
		}
		if score.Valid {
			v := score.Int64
			r.Score = &v
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
