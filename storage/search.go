package storage

import (
	"context"
	"fmt"
	"strings"
)

// SearchEntry is one indexed text of a room event.
type SearchEntry struct {
	EventNID  int64
	EventID   string
	RoomID    string
	StreamPos int64
	// Key is the content key the text came from: content.body, content.name or content.topic.
	Key   string
	Value string
}

// SearchHit is one indexed entry that matched a search.
type SearchHit = SearchEntry

// SearchQuery selects indexed events. Terms are lowercased words of letters and
// digits; an event matches when it holds every term, each as a word prefix.
type SearchQuery struct {
	Terms []string
	Rooms []string
	// Keys limits the content keys searched (all when empty).
	Keys []string
	// Before, when non-zero, keeps the events with a lower stream position (pagination
	// of the newest-first order).
	Before int64
	Limit  int
}

// SearchIndexPosition returns how far the search indexer got in the room event stream.
func SearchIndexPosition(ctx context.Context, q Querier) (int64, error) {
	var pos int64
	if err := q.QueryRowContext(ctx, `SELECT stream_pos FROM search_position WHERE id = 1`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("search index position: %w", err)
	}
	return pos, nil
}

// IndexSearchBatch stores entries, drops the index rows of the redacted events and
// records the stream position the indexer reached, in one transaction.
func IndexSearchBatch(ctx context.Context, tx *Tx, entries []SearchEntry, redacted []string, pos int64) error {
	for _, e := range entries {
		var err error
		if tx.Dialect() == Postgres {
			_, err = tx.ExecContext(ctx, `INSERT INTO search_events (event_nid, event_id, room_id, stream_pos, search_key, value, vector)
				VALUES ($1, $2, $3, $4, $5, $6, to_tsvector('simple', $6)) ON CONFLICT (event_nid) DO NOTHING`,
				e.EventNID, e.EventID, e.RoomID, e.StreamPos, e.Key, e.Value)
		} else {
			var res interface{ RowsAffected() (int64, error) }
			res, err = tx.ExecContext(ctx, `INSERT INTO search_events (event_nid, event_id, room_id, stream_pos, search_key)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_nid) DO NOTHING`,
				e.EventNID, e.EventID, e.RoomID, e.StreamPos, e.Key)
			if err == nil {
				// The FTS row only when the plain row is new: a replayed batch must not
				// index the text twice.
				if n, _ := res.RowsAffected(); n == 1 {
					_, err = tx.ExecContext(ctx, `INSERT INTO search_fts (docid, value) VALUES ($1, $2)`, e.EventNID, e.Value)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("index event %s for search: %w", e.EventID, err)
		}
	}
	for _, id := range redacted {
		if tx.Dialect() == SQLite {
			if _, err := tx.ExecContext(ctx, `DELETE FROM search_fts WHERE docid IN (SELECT event_nid FROM search_events WHERE event_id = $1)`, id); err != nil {
				return fmt.Errorf("unindex redacted event %s: %w", id, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM search_events WHERE event_id = $1`, id); err != nil {
			return fmt.Errorf("unindex redacted event %s: %w", id, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE search_position SET stream_pos = $1 WHERE id = 1 AND stream_pos < $1`, pos); err != nil {
		return fmt.Errorf("record search index position: %w", err)
	}
	return nil
}

// searchWhere returns the FROM and WHERE clauses of a search and their arguments.
// Redacted events never match, even before the indexer saw their redaction.
func searchWhere(d Dialect, sq SearchQuery) (string, []any) {
	var from string
	var args []any
	if d == Postgres {
		parts := make([]string, len(sq.Terms))
		for i, t := range sq.Terms {
			parts[i] = t + ":*"
		}
		args = append(args, strings.Join(parts, " & "))
		from = `search_events s JOIN room_events e ON e.event_nid = s.event_nid
			WHERE s.vector @@ to_tsquery('simple', $1)`
	} else {
		parts := make([]string, len(sq.Terms))
		for i, t := range sq.Terms {
			parts[i] = t + "*"
		}
		args = append(args, strings.Join(parts, " "))
		from = `search_events s JOIN room_events e ON e.event_nid = s.event_nid JOIN search_fts f ON f.docid = s.event_nid
			WHERE s.event_nid IN (SELECT docid FROM search_fts WHERE search_fts MATCH $1)`
	}
	// On SQLite the unary + keeps the planner from walking every indexed event of the
	// user's rooms: the full-text match runs once and its rows are looked up by key.
	roomCol := "s.room_id"
	if d == SQLite {
		roomCol = "+s.room_id"
	}
	from += ` AND e.redacted_by IS NULL AND ` + roomCol + ` IN (` + placeholders(len(args)+1, len(sq.Rooms)) + `)`
	args = stringArgs(args, sq.Rooms)
	if len(sq.Keys) > 0 {
		from += ` AND s.search_key IN (` + placeholders(len(args)+1, len(sq.Keys)) + `)`
		args = stringArgs(args, sq.Keys)
	}
	return from, args
}

// SearchEvents returns the matching events newest first (at most sq.Limit), and how
// many events match in all (ignoring sq.Before and sq.Limit).
func SearchEvents(ctx context.Context, q Querier, d Dialect, sq SearchQuery) ([]SearchHit, int64, error) {
	if len(sq.Terms) == 0 || len(sq.Rooms) == 0 {
		return nil, 0, nil
	}
	from, args := searchWhere(d, sq)
	var count int64
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+from, args...).Scan(&count); err != nil {
		return nil, 0, fmt.Errorf("count search results: %w", err)
	}
	value := "f.value"
	if d == Postgres {
		value = "s.value"
	}
	query := `SELECT s.event_nid, s.event_id, s.room_id, s.stream_pos, s.search_key, ` + value + ` FROM ` + from
	if sq.Before != 0 {
		args = append(args, sq.Before)
		query += fmt.Sprintf(` AND s.stream_pos < $%d`, len(args))
	}
	args = append(args, sq.Limit)
	query += fmt.Sprintf(` ORDER BY s.stream_pos DESC LIMIT $%d`, len(args))
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("search events: %w", err)
	}
	defer rows.Close()
	var hits []SearchHit
	for rows.Next() {
		var h SearchHit
		if err := rows.Scan(&h.EventNID, &h.EventID, &h.RoomID, &h.StreamPos, &h.Key, &h.Value); err != nil {
			return nil, 0, fmt.Errorf("search events: %w", err)
		}
		hits = append(hits, h)
	}
	return hits, count, rows.Err()
}
