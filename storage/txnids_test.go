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
		record := func(txn, resp string) bool {
			t.Helper()
			var ok bool
			err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				ok, err = storage.InsertTransactionResponse(ctx, tx, "@a:test", "DEV", "send:!r:test", txn, resp)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !record("t1", `{"event_id":"$1"}`) {
			t.Fatal("first record refused")
		}
		// The first response wins.
		if record("t1", `{"event_id":"$2"}`) {
			t.Fatal("second record accepted")
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
		// A claim without a response (written by older versions) is not an answer and is
		// taken over by the first response recorded.
		if _, err := db.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, response, created_ts)
			VALUES ('@a:test', 'DEV', 'send:!r:test', 'c1', '', 1)`); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", "c1"); found {
			t.Fatal("a claim counts as a response")
		}
		if !record("c1", `{"event_id":"$c1"}`) {
			t.Fatal("claim not taken over")
		}
		if resp, found, _ := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", "c1"); !found || resp != `{"event_id":"$c1"}` {
			t.Fatalf("taken-over claim: %q %v", resp, found)
		}
		n, err := storage.DeleteTransactionsBefore(ctx, db, storage.NowMS()+1000)
		if err != nil || n != 2 {
			t.Fatalf("delete: %d %v", n, err)
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

// Recording several transaction IDs at once reports exactly the ones already recorded
// (PostgreSQL does it in one statement) and records the others.
func TestTransactionIDsBatch(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rec := func(txn string) storage.TxnRecord {
			return storage.TxnRecord{UserID: "@a:test", DeviceID: "DEV", Scope: "send:!r:test", TxnID: txn, Response: `{"event_id":"$` + txn + `"}`}
		}
		batch := func(recs ...storage.TxnRecord) []int {
			t.Helper()
			var conflicts []int
			if err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				conflicts, err = storage.InsertTransactionResponses(ctx, tx, recs)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return conflicts
		}
		if c := batch(rec("a"), rec("b")); len(c) != 0 {
			t.Fatalf("fresh IDs reported as conflicts: %v", c)
		}
		if c := batch(rec("c"), rec("b"), rec("d")); len(c) != 1 || c[0] != 1 {
			t.Fatalf("conflicts %v, want [1]", c)
		}
		for _, txn := range []string{"a", "b", "c", "d"} {
			resp, found, err := storage.TransactionResponse(ctx, db, "@a:test", "DEV", "send:!r:test", txn)
			if err != nil || !found || resp != `{"event_id":"$`+txn+`"}` {
				t.Fatalf("%s: %q %v %v", txn, resp, found, err)
			}
		}
	})
}
