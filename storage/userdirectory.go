package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// UserDirectoryEntry is one result of a user directory search.
type UserDirectoryEntry struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// likePattern turns a search term into a case-insensitive LIKE pattern matching it
// anywhere ('\' escapes the wildcards of the term itself).
func likePattern(term string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(term)) + "%"
}

// SearchUserDirectory finds the users visible to searcher whose user ID or display
// name contains term (case-insensitively): users joined to a room the searcher is
// joined to (other than the searcher: sharing a room with oneself does not make one
// visible, as in Synapse), and users joined to public rooms (published in the room directory, or
// with a public join rule; event JSON is canonical, so the rule is matched as text). It returns at
// most limit entries, ordered by user ID, and whether more matched.
func SearchUserDirectory(ctx context.Context, q Querier, searcher, term string, limit int) ([]UserDirectoryEntry, bool, error) {
	pattern := likePattern(term)
	rows, err := q.QueryContext(ctx, `SELECT u.user_id, p.displayname, p.avatar_url FROM (
			SELECT DISTINCT m.state_key AS user_id FROM room_current_state m
			WHERE m.event_type = 'm.room.member' AND m.membership = 'join' AND (
				(m.state_key <> $1 AND m.room_id IN (SELECT s.room_id FROM room_current_state s
					WHERE s.event_type = 'm.room.member' AND s.state_key = $1 AND s.membership = 'join'))
				OR m.room_id IN (SELECT d.room_id FROM room_directory d)
				OR m.room_id IN (SELECT jr.room_id FROM room_current_state jr
					JOIN room_events je ON je.event_nid = jr.event_nid
					WHERE jr.event_type = 'm.room.join_rules' AND jr.state_key = ''
					AND je.json LIKE '%"join_rule":"public"%'))
		) u
		LEFT JOIN profiles p ON p.user_id = u.user_id
		WHERE LOWER(u.user_id) LIKE $2 ESCAPE '\' OR LOWER(COALESCE(p.displayname, '')) LIKE $2 ESCAPE '\'
		ORDER BY u.user_id
		LIMIT $3`, searcher, pattern, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("search user directory: %w", err)
	}
	defer rows.Close()
	var out []UserDirectoryEntry
	for rows.Next() {
		var e UserDirectoryEntry
		var name, avatar sql.NullString
		if err := rows.Scan(&e.UserID, &name, &avatar); err != nil {
			return nil, false, err
		}
		e.DisplayName, e.AvatarURL = name.String, avatar.String
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	limited := len(out) > limit
	if limited {
		out = out[:limit]
	}
	return out, limited, nil
}
