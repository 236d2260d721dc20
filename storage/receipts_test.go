package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestReceipts(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		put := func(r storage.Receipt) int64 {
			var pos int64
			withTx(t, db, func(tx *storage.Tx) (err error) {
				pos, err = storage.PutReceipt(ctx, tx, r)
				return err
			})
			return pos
		}
		p1 := put(storage.Receipt{RoomID: "!a:hs", Type: "m.read", UserID: "@u:hs", EventID: "$1", TS: 10})
		p2 := put(storage.Receipt{RoomID: "!b:hs", Type: "m.read", UserID: "@u:hs", EventID: "$2", TS: 11})
		p3 := put(storage.Receipt{RoomID: "!a:hs", Type: "m.read", UserID: "@u:hs", ThreadID: "main", EventID: "$3", TS: 12})
		if !(p1 < p2 && p2 < p3) {
			t.Fatalf("positions not increasing: %d %d %d", p1, p2, p3)
		}
		// Replacing the unthreaded receipt in !a moves it to a new position.
		p4 := put(storage.Receipt{RoomID: "!a:hs", Type: "m.read", UserID: "@u:hs", EventID: "$4", TS: 13})
		rs, err := storage.ReceiptsSince(ctx, db, []string{"!a:hs"}, 0, 0)
		if err != nil || len(rs) != 2 || rs[0].EventID != "$3" || rs[1].EventID != "$4" || rs[1].StreamPos != p4 {
			t.Fatalf("receipts of !a: %+v %v", rs, err)
		}
		rs, err = storage.ReceiptsSince(ctx, db, []string{"!a:hs", "!b:hs"}, p2, p3)
		if err != nil || len(rs) != 1 || rs[0].ThreadID != "main" {
			t.Fatalf("receipts in (p2, p3]: %+v %v", rs, err)
		}
		r, err := storage.GetReceipt(ctx, db, "!b:hs", "m.read", "@u:hs", "")
		if err != nil || r.EventID != "$2" || r.TS != 11 {
			t.Fatalf("get receipt: %+v %v", r, err)
		}
		if _, err := storage.GetReceipt(ctx, db, "!b:hs", "m.read.private", "@u:hs", ""); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing receipt: %v", err)
		}
		pos, err := storage.StreamPositions(ctx, db)
		if err != nil || pos[storage.StreamReceipts] != p4 {
			t.Fatalf("stream positions: %v %v", pos, err)
		}
	})
}

func TestPresenceStore(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetPresence(ctx, db, "@u:hs"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("presence of unknown user: %v", err)
		}
		put := func(p storage.Presence) int64 {
			var pos int64
			withTx(t, db, func(tx *storage.Tx) (err error) {
				pos, err = storage.PutPresence(ctx, tx, p)
				return err
			})
			return pos
		}
		p1 := put(storage.Presence{UserID: "@u:hs", State: "online", StatusMsg: "hi", LastActiveTS: 5})
		p2 := put(storage.Presence{UserID: "@v:hs", State: "unavailable"})
		p3 := put(storage.Presence{UserID: "@u:hs", State: "offline", StatusMsg: "bye", LastActiveTS: 6})
		got, err := storage.GetPresence(ctx, db, "@u:hs")
		if err != nil || got.State != "offline" || got.StatusMsg != "bye" || got.LastActiveTS != 6 || got.StreamPos != p3 {
			t.Fatalf("presence: %+v %v", got, err)
		}
		all, err := storage.PresenceSince(ctx, db, nil, p1, 0)
		if err != nil || len(all) != 2 || all[0].UserID != "@v:hs" || all[1].UserID != "@u:hs" {
			t.Fatalf("presence since p1: %+v %v", all, err)
		}
		some, err := storage.PresenceSince(ctx, db, []string{"@v:hs"}, 0, p2)
		if err != nil || len(some) != 1 || some[0].State != "unavailable" {
			t.Fatalf("presence of @v: %+v %v", some, err)
		}
	})
}
