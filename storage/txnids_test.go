package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestTransactionIDs(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, found, err := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", "t1"); err != nil || found {
			t.Fatalf("unused ID: found=%v err=%v", found, err)
		}
		got, err := storage.RecordTransaction(ctx, db, "@a:test", "DEV", "send:!r:test", "t1", `{"event_id":"$1"}`)
		if err != nil || got != `{"event_id":"$1"}` {
			t.Fatalf("record: %q %v", got, err)
		}
		// The first response wins.
		got, err = storage.RecordTransaction(ctx, db, "@a:test", "DEV", "send:!r:test", "t1", `{"event_id":"$2"}`)
		if err != nil || got != `{"event_id":"$1"}` {
			t.Fatalf("second record: %q %v", got, err)
		}
		// Scoped by user, device and scope.
		for _, k := range [][3]string{{"@b:test", "DEV", "send:!r:test"}, {"@a:test", "DEV2", "send:!r:test"}, {"@a:test", "DEV", "redact:!r:test"}} {
			if _, found, err := storage.TransactionResponse(ctx, db, k[0], k[1], k[2], "t1"); err != nil || found {
				t.Fatalf("%v sees another scope's ID: %v %v", k, found, err)
			}
		}
		if resp, found, err := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", "t1"); err != nil || !found || resp != `{"event_id":"$1"}` {
			t.Fatalf("lookup: %q %v %v", resp, found, err)
		}
		n, err := storage.DeleteTransactionsBefore(ctx, db, storage.NowMS()+1000)
		if err != nil || n != 1 {
			t.Fatalf("delete: %d %v", n, err)
		}
		// Claims: the first caller runs the request, a concurrent replay waits, a failed
		// request gives the ID back, a stale claim is taken over.
		claim := func(txn string, stale int64) (bool, string) {
			t.Helper()
			ok, resp, err := storage.ClaimTransaction(ctx, db, "@a:test", "DEV", "send:!r:test", txn, stale)
			if err != nil {
				t.Fatal(err)
			}
			return ok, resp
		}
		if ok, _ := claim("c1", 0); !ok {
			t.Fatalf("first claim refused")
		}
		if ok, resp := claim("c1", 0); ok || resp != "" {
			t.Fatalf("second claim: %v %q", ok, resp)
		}
		if _, found, _ := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", "c1"); found {
			t.Fatalf("pending claim counts as a response")
		}
		if err := storage.CompleteTransaction(ctx, db, "@a:test", "DEV", "send:!r:test", "c1", `{"event_id":"$c1"}`); err != nil {
			t.Fatal(err)
		}
		if ok, resp := claim("c1", storage.NowMS()+1000); ok || resp != `{"event_id":"$c1"}` {
			t.Fatalf("claim of a completed ID: %v %q", ok, resp)
		}
		if ok, _ := claim("c2", 0); !ok {
			t.Fatal("claim c2")
		}
		if err := storage.ReleaseTransaction(ctx, db, "@a:test", "DEV", "send:!r:test", "c2"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := claim("c2", 0); !ok {
			t.Fatalf("released ID not claimable")
		}
		if ok, _ := claim("c2", storage.NowMS()+1000); !ok {
			t.Fatalf("stale claim not taken over")
		}

		score := int64(-50)
		if err := storage.InsertEventReport(ctx, db, storage.EventReport{RoomID: "!r:test", EventID: "$e", Reporter: "@a:test", Reason: "spam", Score: &score}); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertEventReport(ctx, db, storage.EventReport{RoomID: "!r:test", Reporter: "@b:test"}); err != nil {
			t.Fatal(err)
		}
		reps, err := storage.EventReports(ctx, db, 0, 10)
		if err != nil || len(reps) != 2 || reps[0].Reason != "spam" || *reps[0].Score != -50 || reps[1].Score != nil || reps[1].EventID != "" {
			t.Fatalf("reports: %+v %v", reps, err)
		}
	})
}
