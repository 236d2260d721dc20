package roomstore

import (
	"context"
	"fmt"

	"github.com/myelin-chat/myelin/storage"
)

// nidTable describes one string → NID table.
type nidTable struct{ table, nidCol, valCol string }

var (
	eventTypesTable = nidTable{"room_event_types", "event_type_nid", "event_type"}
	stateKeysTable  = nidTable{"room_state_keys", "state_key_nid", "state_key"}
)

// EnsureEventTypes returns the NIDs of the event types, creating missing ones.
func EnsureEventTypes(ctx context.Context, q storage.Querier, types []string) (map[string]int64, error) {
	return ensureNIDs(ctx, q, eventTypesTable, types)
}

// EnsureStateKeys returns the NIDs of the state keys, creating missing ones.
func EnsureStateKeys(ctx context.Context, q storage.Querier, keys []string) (map[string]int64, error) {
	return ensureNIDs(ctx, q, stateKeysTable, keys)
}

// EventTypeNIDs looks up existing event type NIDs (missing ones are absent from the map).
func EventTypeNIDs(ctx context.Context, q storage.Querier, types []string) (map[string]int64, error) {
	return lookupNIDs(ctx, q, eventTypesTable, types)
}

// StateKeyNIDs looks up existing state key NIDs (missing ones are absent from the map).
func StateKeyNIDs(ctx context.Context, q storage.Querier, keys []string) (map[string]int64, error) {
	return lookupNIDs(ctx, q, stateKeysTable, keys)
}

// EventTypes returns the event types of the NIDs.
func EventTypes(ctx context.Context, q storage.Querier, nids []int64) (map[int64]string, error) {
	return lookupValues(ctx, q, eventTypesTable, nids)
}

// StateKeys returns the state keys of the NIDs.
func StateKeys(ctx context.Context, q storage.Querier, nids []int64) (map[int64]string, error) {
	return lookupValues(ctx, q, stateKeysTable, nids)
}

func ensureNIDs(ctx context.Context, q storage.Querier, t nidTable, vals []string) (map[string]int64, error) {
	for _, v := range vals {
		if _, err := q.ExecContext(ctx, `INSERT INTO `+t.table+` (`+t.valCol+`) VALUES ($1) ON CONFLICT DO NOTHING`, v); err != nil {
			return nil, fmt.Errorf("insert %s %q: %w", t.valCol, v, err)
		}
	}
	out, err := lookupNIDs(ctx, q, t, vals)
	if err != nil {
		return nil, err
	}
	for _, v := range vals {
		if _, ok := out[v]; !ok {
			return nil, fmt.Errorf("%s %q: no NID after insert", t.valCol, v)
		}
	}
	return out, nil
}

func lookupNIDs(ctx context.Context, q storage.Querier, t nidTable, vals []string) (map[string]int64, error) {
	out := make(map[string]int64, len(vals))
	err := chunk(vals, inChunk, func(part []string) error {
		rows, err := q.QueryContext(ctx, `SELECT `+t.nidCol+`, `+t.valCol+` FROM `+t.table+
			` WHERE `+t.valCol+` IN (`+placeholders(1, len(part))+`)`, toArgs(part)...)
		if err != nil {
			return fmt.Errorf("lookup %s: %w", t.valCol, err)
		}
		defer rows.Close()
		for rows.Next() {
			var nid int64
			var v string
			if err := rows.Scan(&nid, &v); err != nil {
				return err
			}
			out[v] = nid
		}
		return rows.Err()
	})
	return out, err
}

func lookupValues(ctx context.Context, q storage.Querier, t nidTable, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	err := chunk(nids, inChunk, func(part []int64) error {
		rows, err := q.QueryContext(ctx, `SELECT `+t.nidCol+`, `+t.valCol+` FROM `+t.table+
			` WHERE `+t.nidCol+` IN (`+placeholders(1, len(part))+`)`, toArgs(part)...)
		if err != nil {
			return fmt.Errorf("lookup %s: %w", t.valCol, err)
		}
		defer rows.Close()
		for rows.Next() {
			var nid int64
			var v string
			if err := rows.Scan(&nid, &v); err != nil {
				return err
			}
			out[nid] = v
		}
		return rows.Err()
	})
	return out, err
}
