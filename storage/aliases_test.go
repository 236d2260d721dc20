package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestRoomAliasesStorage(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.CreateRoomAlias(ctx, db, "#a:test", "!r1:test", "@alice:test"); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetRoomAlias(ctx, db, "#a:test", "!r2:test", "@bob:test"); !errors.Is(err, storage.ErrAliasExists) {
			t.Fatalf("duplicate: %v", err)
		}
		if err := storage.CreateRoomAlias(ctx, db, "#b:test", "!r1:test", "@bob:test"); err != nil {
			t.Fatal(err)
		}
		a, err := storage.GetRoomAlias(ctx, db, "#a:test")
		if err != nil || a.RoomID != "!r1:test" || a.Creator != "@alice:test" {
			t.Fatalf("get: %+v %v", a, err)
		}
		if _, err := storage.GetRoomAlias(ctx, db, "#none:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("get unknown: %v", err)
		}
		list, err := storage.RoomAliases(ctx, db, "!r1:test")
		if err != nil || strings.Join(list, ",") != "#a:test,#b:test" {
			t.Fatalf("list: %v %v", list, err)
		}
		if err := storage.MoveRoomAliases(ctx, db, "!r1:test", "!r2:test"); err != nil {
			t.Fatal(err)
		}
		if list, _ := storage.RoomAliases(ctx, db, "!r1:test"); len(list) != 0 {
			t.Fatalf("old room keeps aliases: %v", list)
		}
		if a, _ := storage.GetRoomAlias(ctx, db, "#b:test"); a.RoomID != "!r2:test" || a.Creator != "@bob:test" {
			t.Fatalf("moved: %+v", a)
		}
		if err := storage.DeleteRoomAlias(ctx, db, "#a:test"); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteRoomAlias(ctx, db, "#a:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestPublishedRoomsStorage(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, r := range []string{"!b:test", "!a:test", "!b:test"} {
			if err := storage.SetRoomPublished(ctx, db, r, true); err != nil {
				t.Fatal(err)
			}
		}
		ids, err := storage.PublishedRooms(ctx, db)
		if err != nil || strings.Join(ids, ",") != "!a:test,!b:test" {
			t.Fatalf("published: %v %v", ids, err)
		}
		if err := storage.SetRoomPublished(ctx, db, "!a:test", false); err != nil {
			t.Fatal(err)
		}
		if ok, err := storage.IsRoomPublished(ctx, db, "!a:test"); err != nil || ok {
			t.Fatalf("unpublished room: %v %v", ok, err)
		}
		if ok, err := storage.IsRoomPublished(ctx, db, "!b:test"); err != nil || !ok {
			t.Fatalf("published room: %v %v", ok, err)
		}
	})
}

func TestUserDirectoryStorage(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		member := func(roomNID int64, room, user, membership string) {
			t.Helper()
			if _, err := db.ExecContext(ctx, `INSERT INTO room_current_state
				(room_nid, room_id, event_type, state_key, event_nid, event_id, sender, membership)
				VALUES ($1, $2, 'm.room.member', $3, 1, $4, $3, $5)`, roomNID, room, user, "$"+user+room, membership); err != nil {
				t.Fatal(err)
			}
		}
		member(1, "!shared:test", "@me:test", "join")
		member(1, "!shared:test", "@friend:test", "join")
		member(1, "!shared:test", "@gone:test", "leave")
		member(2, "!public:test", "@stranger:test", "join")
		member(3, "!private:test", "@hidden:test", "join")
		member(4, "!open:test", "@opener:test", "join")
		for nid, rule := range map[int64]string{3: "invite", 4: "public"} {
			room := map[int64]string{3: "!private:test", 4: "!open:test"}[nid]
			evID := "$jr" + rule
			if _, err := db.ExecContext(ctx, `INSERT INTO room_current_state
				(room_nid, room_id, event_type, state_key, event_nid, event_id, sender)
				VALUES ($1, $2, 'm.room.join_rules', '', $3, $4, '@x:test')`, nid, room, 100+nid, evID); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO room_events (event_nid, event_id, room_nid, depth, event_type, state_key, sender, origin_server_ts, json)
				VALUES ($1, $2, $3, 1, 'm.room.join_rules', '', '@x:test', 0, $4)`, 100+nid, evID, nid,
				`{"content":{"join_rule":"`+rule+`"},"type":"m.room.join_rules"}`); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO profiles (user_id, displayname) VALUES ('@friend:test', 'Best_Pal')`); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetRoomPublished(ctx, db, "!public:test", true); err != nil {
			t.Fatal(err)
		}
		ids := func(term string, limit int) (string, bool) {
			t.Helper()
			res, limited, err := storage.SearchUserDirectory(ctx, db, "@me:test", term, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range res {
				out = append(out, r.UserID)
			}
			return strings.Join(out, ","), limited
		}
		for term, want := range map[string]string{
			// The searcher shares a room only with themself: not listed.
			"test":     "@friend:test,@opener:test,@stranger:test",
			"best_pal": "@friend:test",
			"PAL":      "@friend:test",
			"_":        "@friend:test",
			"hidden":   "",
			"gone":     "",
			"%":        "",
		} {
			if got, _ := ids(term, 10); got != want {
				t.Errorf("search %q: got %q, want %q", term, got, want)
			}
		}
		if got, limited := ids("test", 2); got != "@friend:test,@opener:test" || !limited {
			t.Fatalf("limit: %q %v", got, limited)
		}
	})
}
