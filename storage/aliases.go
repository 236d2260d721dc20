package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrAliasExists is returned by CreateRoomAlias when the alias is already taken.
var ErrAliasExists = errors.New("room alias already exists")

// RoomAlias is a local room alias.
type RoomAlias struct {
	Alias   string
	RoomID  string
	Creator string
}

// CreateRoomAlias maps a local alias to a room; ErrAliasExists when it is taken.
func CreateRoomAlias(ctx context.Context, q Querier, alias, roomID, creator string) error {
	res, err := q.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator, created_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (alias) DO NOTHING`, alias, roomID, creator, NowMS())
	if err != nil {
		return fmt.Errorf("create room alias %s: %w", alias, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrAliasExists
	}
	return nil
}

// SetRoomAlias is CreateRoomAlias on the database: what createRoom calls for
// room_alias_name (ErrAliasExists when taken).
func SetRoomAlias(ctx context.Context, db *DB, alias, roomID, creator string) error {
	return CreateRoomAlias(ctx, db, alias, roomID, creator)
}

// GetRoomAlias returns the mapping of a local alias; ErrNotFound when there is none.
func GetRoomAlias(ctx context.Context, q Querier, alias string) (RoomAlias, error) {
	a := RoomAlias{Alias: alias}
	err := q.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&a.RoomID, &a.Creator)
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("get room alias %s: %w", alias, err)
	}
	return a, nil
}

// DeleteRoomAlias removes a local alias; ErrNotFound when there was none.
func DeleteRoomAlias(ctx context.Context, q Querier, alias string) error {
	res, err := q.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	if err != nil {
		return fmt.Errorf("delete room alias %s: %w", alias, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RoomAliases returns the local aliases of a room, sorted.
func RoomAliases(ctx context.Context, q Querier, roomID string) ([]string, error) {
	out, err := QueryStrings(ctx, q, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room aliases of %s: %w", roomID, err)
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// MoveRoomAliases points every local alias of one room to another (room upgrades).
func MoveRoomAliases(ctx context.Context, q Querier, fromRoomID, toRoomID string) error {
	if _, err := q.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, toRoomID, fromRoomID); err != nil {
		return fmt.Errorf("move room aliases of %s: %w", fromRoomID, err)
	}
	return nil
}
