package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestAccountDataUpsertAndPositions(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice, bob, room = "@alice:test", "@bob:test", "!room:test"
		put := func(user, room, typ, content string) int64 {
			t.Helper()
			pos, err := storage.SetAccountData(ctx, db, user, room, typ, json.RawMessage(content))
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		get := func(user, room, typ string) string {
			t.Helper()
			c, err := storage.GetAccountData(ctx, db, user, room, typ)
			if errors.Is(err, storage.ErrNotFound) {
				return "<none>"
			}
			if err != nil {
				t.Fatal(err)
			}
			return string(c)
		}
		p1 := put(alice, "", "m.direct", `{"@bob:test":["!a:test"]}`)
		p2 := put(alice, room, "m.tag", `{"tags":{}}`)
		p3 := put(bob, "", "m.direct", `{"x":1}`)
		if !(p1 < p2 && p2 < p3) {
			t.Fatalf("positions do not increase: %d %d %d", p1, p2, p3)
		}
		if got := get(alice, "", "m.direct"); got != `{"@bob:test":["!a:test"]}` {
			t.Fatalf("alice global m.direct: %s", got)
		}
		if got := get(alice, room, "m.tag"); got != `{"tags":{}}` {
			t.Fatalf("alice room m.tag: %s", got)
		}
		// Global and room data of the same type, and other users' data, are separate.
		if got := get(alice, "", "m.tag"); got != "<none>" {
			t.Fatalf("room data leaked into global: %s", got)
		}
		if got := get(alice, "!other:test", "m.tag"); got != "<none>" {
			t.Fatalf("room data leaked into another room: %s", got)
		}
		if got := get(bob, "", "m.direct"); got != `{"x":1}` {
			t.Fatalf("bob m.direct: %s", got)
		}

		// Replacing takes a new position and the latest content wins.
		p4 := put(alice, "", "m.direct", `{"v":2}`)
		if p4 <= p3 {
			t.Fatalf("update did not take a new position: %d <= %d", p4, p3)
		}
		if got := get(alice, "", "m.direct"); got != `{"v":2}` {
			t.Fatalf("after update: %s", got)
		}

		all, err := storage.AccountDataSince(ctx, db, alice, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all[0].Type != "m.tag" || all[0].RoomID != room || all[1].Type != "m.direct" || all[1].StreamPos != p4 ||
			string(all[1].Content) != `{"v":2}` {
			t.Fatalf("alice account data since 0: %+v", all)
		}
		since, err := storage.AccountDataSince(ctx, db, alice, p2, 0)
		if err != nil || len(since) != 1 || since[0].Type != "m.direct" {
			t.Fatalf("since %d: %+v %v", p2, since, err)
		}
		upTo, err := storage.AccountDataSince(ctx, db, alice, 0, p3)
		if err != nil || len(upTo) != 1 || upTo[0].Type != "m.tag" {
			t.Fatalf("up to %d: %+v %v", p3, upTo, err)
		}
		if cur, _ := storage.CurrentStreamPosition(ctx, db, storage.StreamAccountData); cur != p4 {
			t.Fatalf("current account data position %d, want %d", cur, p4)
		}
	})
}

func TestDeleteAllAccountData(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, room := range []string{"", "!r:test"} {
			if _, err := storage.SetAccountData(ctx, db, "@gone:test", room, "m.t", json.RawMessage(`{"a":1}`)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := storage.SetAccountData(ctx, db, "@stays:test", "", "m.t", json.RawMessage(`{"b":2}`)); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteAllAccountData(ctx, db, "@gone:test"); err != nil {
			t.Fatal(err)
		}
		for _, room := range []string{"", "!r:test"} {
			if _, err := storage.GetAccountData(ctx, db, "@gone:test", room, "m.t"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("account data in %q survived: %v", room, err)
			}
		}
		if _, err := storage.GetAccountData(ctx, db, "@stays:test", "", "m.t"); err != nil {
			t.Fatalf("another user's account data was deleted: %v", err)
		}
	})
}
