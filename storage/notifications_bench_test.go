package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// BenchmarkUnreadNotificationsOf loads the unread notifications of a user with a month
// of read notifications (2,000 sets of 10, as a busy user's writes leave them) and 10
// unread ones: what the push service does for each user's first /sync after a start.
func BenchmarkUnreadNotificationsOf(b *testing.B) {
	db := storagetest.Open(b, "sqlite")
	ctx := context.Background()
	const user, room = "@alice:test", "!r:test"
	pos := int64(0)
	for set := 0; set < 2_010; set++ {
		var ns []storage.Notification
		for i := 0; i < 10 && (set < 2_000 || i == 0); i++ {
			pos++
			ns = append(ns, storage.Notification{UserID: user, RoomID: room, EventID: fmt.Sprintf("$e%d", pos), StreamPos: pos,
				Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"default"}]`), TS: pos})
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.InsertNotifications(ctx, tx, ns) }); err != nil {
			b.Fatal(err)
		}
		if set == 1_999 {
			if err := storage.StoreReadReceipt(ctx, db, user, room, "", pos); err != nil {
				b.Fatal(err)
			}
		}
	}
	load := func() {
		us, err := storage.UnreadNotificationsOf(ctx, db, user)
		if err != nil {
			b.Fatal(err)
		}
		if len(us) != 10 {
			b.Fatalf("%d unread, want 10", len(us))
		}
	}
	// The first load reads every set and moves the user's read mark; later loads (after
	// a restart) read from the mark.
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if _, err := db.ExecContext(ctx, `DELETE FROM push_unread_from`); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			load()
		}
	})
	b.Run("later", func(b *testing.B) {
		load()
		for b.Loop() {
			load()
		}
	})
}
