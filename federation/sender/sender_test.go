package sender

import (
	"context"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestNextTransactionLimits: a transaction is the oldest part of one destination's
// queue, in order, with at most 50 PDUs and 100 EDUs; typing notifications too old to
// matter are dropped from the queue instead of being sent.
func TestNextTransactionLimits(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := &Sender{db: db}
		var items []storage.QueuedItem
		for i := range 180 {
			it := storage.QueuedItem{Destination: "b.test", Kind: storage.QueueEDU, EDUType: "m.receipt", Content: "{}"}
			if i%3 == 0 {
				it = storage.QueuedItem{Destination: "b.test", Kind: storage.QueuePDU, EventID: "$e"}
			}
			items = append(items, it, storage.QueuedItem{Destination: "c.test", Kind: storage.QueuePDU, EventID: "$c"})
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.EnqueueFederation(ctx, tx, items) }); err != nil {
			t.Fatal(err)
		}
		got, err := s.nextTransaction(ctx, "b.test")
		if err != nil {
			t.Fatal(err)
		}
		pdus, edus := 0, 0
		for i, it := range got {
			if it.Destination != "b.test" || (i > 0 && it.ID <= got[i-1].ID) {
				t.Fatalf("item %d: %+v", i, it)
			}
			if it.Kind == storage.QueuePDU {
				pdus++
			} else {
				edus++
			}
		}
		// 150 rows of b.test hold 50 PDUs and 100 EDUs.
		if pdus != MaxTxnPDUs || edus != MaxTxnEDUs {
			t.Fatalf("transaction of %d PDUs and %d EDUs", pdus, edus)
		}

		// An old typing notification at the head of a queue is dropped, a fresh one kept.
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.EnqueueFederation(ctx, tx, []storage.QueuedItem{
				{Destination: "d.test", Kind: storage.QueueEDU, EDUType: "m.typing", Content: `{"typing":true}`},
				{Destination: "d.test", Kind: storage.QueueEDU, EDUType: "m.typing", Content: `{"typing":false}`},
			})
		}); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Minute).UnixMilli()
		if _, err := db.ExecContext(ctx, `UPDATE federation_queue SET created_ts = $1 WHERE destination = 'd.test' AND content = '{"typing":true}'`, old); err != nil {
			t.Fatal(err)
		}
		got, err = s.nextTransaction(ctx, "d.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Content != `{"typing":false}` {
			t.Fatalf("typing transaction: %+v", got)
		}
		left, err := storage.PeekFederationQueue(ctx, db, "d.test", 10)
		if err != nil || len(left) != 1 {
			t.Fatalf("queue after dropping stale typing: %+v %v", left, err)
		}
	})
}

// TestBackoff: the delay doubles per failure from MinBackoff and stops at MaxBackoff
// (plus at most 20% jitter).
func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		failures int
		base     time.Duration
	}{{1, MinBackoff}, {2, 2 * MinBackoff}, {3, 4 * MinBackoff}, {40, MaxBackoff}, {1000, MaxBackoff}} {
		for range 20 {
			if d := backoff(c.failures); d < c.base || d > c.base+c.base/5 {
				t.Fatalf("backoff(%d) = %v, want %v to %v", c.failures, d, c.base, c.base+c.base/5)
			}
		}
	}
}
