package storage_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestToDeviceInbox(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		send := func(txn string, to ...string) bool {
			var fresh bool
			withTx(t, db, func(tx *storage.Tx) (err error) {
				if fresh, err = storage.ClaimTransactionID(ctx, tx, "@s:hs", "SD", "sendToDevice", txn); err != nil || !fresh {
					return err
				}
				var d []storage.ToDeviceDelivery
				for _, dev := range to {
					d = append(d, storage.ToDeviceDelivery{UserID: "@r:hs", DeviceID: dev, Content: json.RawMessage(`{"txn":"` + txn + `"}`)})
				}
				_, err = storage.InsertToDevice(ctx, tx, "@s:hs", "m.test", d)
				return err
			})
			return fresh
		}
		if !send("t1", "A", "B") || !send("t2", "A") {
			t.Fatal("fresh transaction IDs reported as replays")
		}
		if send("t1", "A", "B") {
			t.Fatal("replayed transaction ID accepted")
		}
		msgs, err := storage.ToDeviceSince(ctx, db, "@r:hs", "A", 0, 10)
		if err != nil || len(msgs) != 2 || msgs[0].Sender != "@s:hs" || msgs[0].Type != "m.test" || string(msgs[1].Content) != `{"txn":"t2"}` {
			t.Fatalf("inbox of A: %+v %v", msgs, err)
		}
		if msgs[0].Pos >= msgs[1].Pos {
			t.Fatalf("positions not increasing: %d %d", msgs[0].Pos, msgs[1].Pos)
		}
		// Limit and since page through the inbox; nothing is deleted until acknowledged.
		page, _ := storage.ToDeviceSince(ctx, db, "@r:hs", "A", 0, 1)
		if len(page) != 1 || page[0].Pos != msgs[0].Pos {
			t.Fatalf("first page %+v", page)
		}
		page, _ = storage.ToDeviceSince(ctx, db, "@r:hs", "A", page[0].Pos, 1)
		if len(page) != 1 || page[0].Pos != msgs[1].Pos {
			t.Fatalf("second page %+v", page)
		}
		if n, err := storage.AckToDevice(ctx, db, "@r:hs", "A", msgs[0].Pos); err != nil || n != 1 {
			t.Fatalf("ack: %d %v", n, err)
		}
		if n, _ := storage.PendingToDeviceCount(ctx, db, "@r:hs", "A"); n != 1 {
			t.Fatalf("pending after ack: %d", n)
		}
		if n, _ := storage.PendingToDeviceCount(ctx, db, "@r:hs", "B"); n != 1 {
			t.Fatalf("B's inbox touched by A's ack: %d", n)
		}
		raw, _ := json.Marshal(msgs[0])
		if string(raw) != `{"sender":"@s:hs","type":"m.test","content":{"txn":"t1"}}` {
			t.Fatalf("sync form: %s", raw)
		}
	})
}
