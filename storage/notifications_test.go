package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestPushRulesDocument(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetPushRules(ctx, db, "@a:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no rules yet: %v", err)
		}
		for _, doc := range []string{`{"v":1}`, `{"v":2}`} {
			if err := db.WithTx(ctx, func(tx *storage.Tx) error {
				if err := storage.LockPushRules(ctx, tx, "@a:test"); err != nil {
					return err
				}
				return storage.PutPushRules(ctx, tx, "@a:test", doc)
			}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := storage.GetPushRulesOf(ctx, db, []string{"@a:test", "@b:test"})
		if err != nil || len(got) != 1 || got["@a:test"] != `{"v":2}` {
			t.Fatalf("rules of users: %v %v", got, err)
		}
	})
}

func TestNotificationCountsAndReceipts(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice, bob, room, other = "@alice:test", "@bob:test", "!r:test", "!o:test"
		n := func(user, room, ev string, pos int64, thread string, hl bool) storage.Notification {
			return storage.Notification{UserID: user, RoomID: room, EventID: ev, StreamPos: pos, ThreadID: thread,
				Actions: json.RawMessage(`["notify"]`), Highlight: hl, TS: pos}
		}
		insert := func(ns ...storage.Notification) {
			t.Helper()
			if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.InsertNotifications(ctx, tx, ns) }); err != nil {
				t.Fatal(err)
			}
		}
		insert(n(alice, room, "$1", 1, "", false), n(bob, room, "$1", 1, "", false),
			n(alice, room, "$2", 2, "", true), n(alice, room, "$3", 3, "$2", false), n(alice, room, "$4", 4, "$2", true),
			n(alice, other, "$5", 5, "", false))
		insert(n(alice, room, "$1", 1, "", true)) // duplicate: ignored
		counts := func(user string, rooms []string) map[string]storage.UnreadCount {
			t.Helper()
			rows, err := storage.UnreadNotificationCounts(ctx, db, user, rooms)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]storage.UnreadCount{}
			for _, r := range rows {
				out[r.RoomID+"|"+r.ThreadID] = r
			}
			return out
		}
		c := counts(alice, []string{room})
		if c[room+"|"].Notifications != 2 || c[room+"|"].Highlights != 1 || c[room+"|$2"].Notifications != 2 || c[room+"|$2"].Highlights != 1 || len(c) != 2 {
			t.Fatalf("alice's counts: %+v", c)
		}
		if total, _ := storage.TotalUnreadNotifications(ctx, db, alice); total != 5 {
			t.Fatalf("total unread %d, want 5", total)
		}
		mark := func(user, room, thread string, pos int64) {
			t.Helper()
			if err := db.WithTx(ctx, func(tx *storage.Tx) error {
				_, err := storage.MarkNotificationsRead(ctx, tx, user, room, thread, pos)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		// A main-timeline receipt leaves the thread unread.
		mark(alice, room, "main", 4)
		c = counts(alice, nil)
		if _, ok := c[room+"|"]; ok || c[room+"|$2"].Notifications != 2 || c[other+"|"].Notifications != 1 {
			t.Fatalf("after main receipt: %+v", c)
		}
		// A thread receipt up to $3 reads $3 only.
		mark(alice, room, "$2", 3)
		if c = counts(alice, []string{room}); c[room+"|$2"].Notifications != 1 || c[room+"|$2"].Highlights != 1 {
			t.Fatalf("after thread receipt: %+v", c)
		}
		// An older receipt does not move the stored position back.
		mark(alice, room, "", 4)
		mark(alice, room, "", 1)
		rs, err := storage.ReceiptsAtOrAfter(ctx, db, room, 4)
		if err != nil || len(rs) != 2 {
			t.Fatalf("receipts at or after 4: %+v %v", rs, err)
		}
		if c = counts(alice, []string{room}); len(c) != 0 {
			t.Fatalf("after unthreaded receipt: %+v", c)
		}
		// Bob's counts are his own.
		if c = counts(bob, nil); c[room+"|"].Notifications != 1 {
			t.Fatalf("bob's counts: %+v", c)
		}
		// Pages, newest first, with read flags.
		page, err := storage.NotificationsPage(ctx, db, alice, 0, 2, false)
		if err != nil || len(page) != 2 || page[0].EventID != "$5" || page[0].Read || page[1].EventID != "$4" || !page[1].Read {
			t.Fatalf("first page: %+v %v", page, err)
		}
		page, _ = storage.NotificationsPage(ctx, db, alice, page[1].ID, 10, false)
		if len(page) != 3 || page[2].EventID != "$1" {
			t.Fatalf("second page: %+v", page)
		}
		page, _ = storage.NotificationsPage(ctx, db, alice, 0, 10, true)
		if len(page) != 2 || page[0].EventID != "$4" || page[1].EventID != "$2" {
			t.Fatalf("highlights: %+v", page)
		}
		// Read: alice's $1-$4 and the replayed copy of $1 (written, never counted).
		if n, err := storage.PruneNotifications(ctx, db, 100); err != nil || n != 5 {
			t.Fatalf("prune read notifications: %d %v", n, err)
		}
		// The unread ones stay: alice's $5 (written with the pruned ones) and bob's $1.
		if page, _ = storage.NotificationsPage(ctx, db, alice, 0, 10, false); len(page) != 1 || page[0].EventID != "$5" || page[0].Read {
			t.Fatalf("alice's notifications after pruning: %+v", page)
		}
		if c = counts(bob, nil); c[room+"|"].Notifications != 1 {
			t.Fatalf("bob's counts after pruning: %+v", c)
		}
	})
}

func TestPushersAndQueue(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p := storage.Pusher{UserID: "@a:test", DeviceID: "D1", Kind: "http", AppID: "app", PushKey: "k", AppDisplayName: "A",
			DeviceDisplayName: "Phone", Lang: "en", Data: json.RawMessage(`{"url":"https://x/_matrix/push/v1/notify"}`)}
		upsert := func(p storage.Pusher, appendOthers bool) {
			t.Helper()
			if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.UpsertPusher(ctx, tx, p, appendOthers) }); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, created_ts) VALUES ('@a:test', 'D1', 1), ('@b:test', 'D1', 1)`); err != nil {
			t.Fatal(err)
		}
		upsert(p, false)
		p.Lang = "de"
		upsert(p, false) // update in place
		ps, err := storage.PushersOfUser(ctx, db, "@a:test")
		if err != nil || len(ps) != 1 || ps[0].Lang != "de" {
			t.Fatalf("pushers: %+v %v", ps, err)
		}
		b := p
		b.UserID = "@b:test"
		upsert(b, true) // append: a's pusher stays
		if ps, _ := storage.PushersOfUsers(ctx, db, []string{"@a:test", "@b:test"}); len(ps) != 2 {
			t.Fatalf("after append: %+v", ps)
		}
		upsert(b, false) // no append: a's pusher with the same key goes
		if ps, _ := storage.PushersOfUser(ctx, db, "@a:test"); len(ps) != 0 {
			t.Fatalf("not removed without append: %+v", ps)
		}
		bp, _ := storage.PushersOfUser(ctx, db, "@b:test")
		if err := storage.EnqueuePush(ctx, db, bp[0].ID, json.RawMessage(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		due, err := storage.DuePushes(ctx, db, storage.NowMS()+1, 10)
		if err != nil || len(due) != 1 || string(due[0].Payload) != `{"x":1}` {
			t.Fatalf("due: %+v %v", due, err)
		}
		// Only one of two senders claims it.
		lease := storage.NowMS() + 30_000
		ok1, err1 := storage.ClaimPush(ctx, db, due[0].ID, due[0].NextAttemptTS, lease)
		ok2, err2 := storage.ClaimPush(ctx, db, due[0].ID, due[0].NextAttemptTS, lease)
		if err1 != nil || err2 != nil || !ok1 || ok2 {
			t.Fatalf("claims: %v %v %v %v", ok1, ok2, err1, err2)
		}
		if err := storage.ReschedulePush(ctx, db, due[0].ID, 1, storage.NowMS()+60_000); err != nil {
			t.Fatal(err)
		}
		if due, _ := storage.DuePushes(ctx, db, storage.NowMS()+1, 10); len(due) != 0 {
			t.Fatalf("rescheduled push still due: %+v", due)
		}
		if next, _ := storage.NextPushDue(ctx, db); next <= storage.NowMS() {
			t.Fatalf("next due %d", next)
		}
		// Removing the pusher drops its queue.
		if err := storage.DeletePusherByID(ctx, db, bp[0].ID); err != nil {
			t.Fatal(err)
		}
		if next, _ := storage.NextPushDue(ctx, db); next != 0 {
			t.Fatalf("queue not emptied: %d", next)
		}
		if _, err := storage.PusherByID(ctx, db, bp[0].ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted pusher: %v", err)
		}
		if ok, _ := storage.DeletePusher(ctx, db, "@b:test", "app", "k"); ok {
			t.Fatal("deleted a pusher twice")
		}
		// A pusher goes with its device.
		upsert(b, false)
		if _, err := db.ExecContext(ctx, `DELETE FROM devices WHERE user_id = '@b:test'`); err != nil {
			t.Fatal(err)
		}
		if ps, _ := storage.PushersOfUsers(ctx, db, []string{"@b:test"}); len(ps) != 0 {
			t.Fatalf("pusher of a deleted device still listed: %+v", ps)
		}
		if err := storage.DeleteOrphanPushers(ctx, db, "@b:test"); err != nil {
			t.Fatal(err)
		}
		var left int
		_ = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushers`).Scan(&left)
		if left != 0 {
			t.Fatalf("%d pushers left after deleting orphans", left)
		}
	})
}

// TestNotificationEncoding: whatever the IDs and actions hold, a stored notification
// reads back the same.
func TestNotificationEncoding(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		in := storage.Notification{UserID: "@ü:test", RoomID: `!q"\:test`, EventID: "$é\n<x>", StreamPos: 7, ThreadID: "$t\"",
			Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"default"}]`), Highlight: true, TS: 42}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.InsertNotifications(ctx, tx, []storage.Notification{in}) }); err != nil {
			t.Fatal(err)
		}
		page, err := storage.NotificationsPage(ctx, db, in.UserID, 0, 10, false)
		if err != nil || len(page) != 1 {
			t.Fatalf("page: %+v %v", page, err)
		}
		got := page[0]
		if got.RoomID != in.RoomID || got.EventID != in.EventID || got.ThreadID != in.ThreadID || got.StreamPos != 7 || got.ID != 7 ||
			!got.Highlight || got.TS != 42 || string(got.Actions) != string(in.Actions) || got.Read {
			t.Fatalf("read back %+v", got)
		}
	})
}

// TestPushPosition: absent until first stored, then only moves forward (a late write of
// an older position must not make the push service evaluate events twice).
func TestPushPosition(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if pos, ok, err := storage.PushPosition(ctx, db); err != nil || ok || pos != 0 {
			t.Fatalf("fresh database: %d %v %v", pos, ok, err)
		}
		for _, p := range []int64{10, 25, 20} {
			if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.SetPushPosition(ctx, tx, p) }); err != nil {
				t.Fatal(err)
			}
		}
		if pos, ok, err := storage.PushPosition(ctx, db); err != nil || !ok || pos != 25 {
			t.Fatalf("after 10, 25, 20: %d %v %v, want 25", pos, ok, err)
		}
	})
}

// TestUnreadMark: loading a user's unread notifications moves their read mark to the
// first set with an unread one (past every set when all are read), later loads read
// from it and still see every unread notification, also of sets written later; a set
// written out of stream order is found once the users' marks are forgotten.
func TestUnreadMark(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice, room, other = "@alice:test", "!r:test", "!o:test"
		insert := func(room string, positions ...int64) {
			t.Helper()
			var ns []storage.Notification
			for _, p := range positions {
				ns = append(ns, storage.Notification{UserID: alice, RoomID: room, EventID: fmt.Sprintf("$%d", p), StreamPos: p,
					Actions: json.RawMessage(`["notify"]`), TS: p})
			}
			if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.InsertNotifications(ctx, tx, ns) }); err != nil {
				t.Fatal(err)
			}
		}
		unread := func(wantMark int64, want ...int64) {
			t.Helper()
			us, err := storage.UnreadNotificationsOf(ctx, db, alice)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, u := range us {
				got = append(got, u.StreamPos)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("unread %v, want %v", got, want)
			}
			var mark int64
			if err := db.QueryRowContext(ctx, `SELECT first_pos FROM push_unread_from WHERE user_id = $1`, alice).Scan(&mark); err != nil || mark != wantMark {
				t.Fatalf("read mark %d (%v), want %d", mark, err, wantMark)
			}
		}
		read := func(room string, pos int64) {
			t.Helper()
			if err := storage.StoreReadReceipt(ctx, db, alice, room, "", pos); err != nil {
				t.Fatal(err)
			}
		}
		insert(room, 1, 2, 3)
		insert(room, 4, 5)
		insert(other, 6)
		read(room, 3)
		unread(4, 4, 5, 6)
		read(room, 4) // the set 4-5 still holds an unread one
		unread(4, 5, 6)
		read(room, 5)
		read(other, 6)
		unread(7)
		insert(other, 7)
		insert(room, 9)
		unread(7, 7, 9)
		read(other, 7)
		read(room, 9)
		unread(10)
		// Out of stream order (an out-of-band invite evaluated late): its set starts
		// below the mark, unseen until the user's mark is forgotten.
		insert("!x:test", 8)
		unread(10)
		if err := storage.ForgetUnreadFrom(ctx, db, []string{alice}); err != nil {
			t.Fatal(err)
		}
		unread(8, 8)
	})
}
