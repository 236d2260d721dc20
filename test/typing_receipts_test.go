package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ephemeralOf returns the content of the first ephemeral event of a type in a room.
func ephemeralOf(r *mautrix.RespSync, roomID, typ string) map[string]any {
	jr := r.Rooms.Join[id.RoomID(roomID)]
	if jr == nil {
		return nil
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type.Type == typ {
			return ev.Content.Raw
		}
	}
	return nil
}

func typingUsers(r *mautrix.RespSync, roomID string) (users []string, present bool) {
	c := ephemeralOf(r, roomID, "m.typing")
	if c == nil {
		return nil, false
	}
	for _, u := range c["user_ids"].([]any) {
		users = append(users, u.(string))
	}
	return users, true
}

// TestTypingNotifications: typing wakes a room-mate's long-poll, expires after its
// timeout, stops on typing=false; only members may type, only as themselves.
func TestTypingNotifications(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, eve := e.register("alice"), e.register("bob"), e.register("eve")
		roomID := e.sharedRoom(alice, bob)
		r0 := doSync(t, bob, mautrix.ReqSync{})
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, _ := bob.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: r0.NextBatch, Timeout: 10000})
			done <- r
		}()
		time.Sleep(200 * time.Millisecond)
		if _, err := alice.UserTyping(e.ctx, id.RoomID(roomID), true, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		var r1 *mautrix.RespSync
		select {
		case r1 = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("typing did not wake the long-poll")
		}
		if users, _ := typingUsers(r1, roomID); strings.Join(users, ",") != alice.UserID.String() {
			t.Fatalf("typing users = %v", users)
		}
		// The notification expires: the next long-poll returns with nobody typing.
		start := time.Now()
		r2 := doSync(t, bob, mautrix.ReqSync{Since: r1.NextBatch, Timeout: 10000})
		users, present := typingUsers(r2, roomID)
		if !present || len(users) != 0 {
			t.Fatalf("after timeout: typing = %v (present %v)", users, present)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("typing expiry took %v", d)
		}
		// Explicit stop.
		_, _ = alice.UserTyping(e.ctx, id.RoomID(roomID), true, 30*time.Second)
		r3 := doSync(t, bob, mautrix.ReqSync{Since: r2.NextBatch, Timeout: 2000})
		if users, _ := typingUsers(r3, roomID); len(users) != 1 {
			t.Fatalf("typing = %v", users)
		}
		_, _ = alice.UserTyping(e.ctx, id.RoomID(roomID), false, 0)
		r4 := doSync(t, bob, mautrix.ReqSync{Since: r3.NextBatch, Timeout: 2000})
		if users, present := typingUsers(r4, roomID); !present || len(users) != 0 {
			t.Fatalf("after stop: typing = %v", users)
		}
		// Non-members and other users are refused.
		if _, err := eve.UserTyping(e.ctx, id.RoomID(roomID), true, time.Second); !isHTTPStatus(err, 403) {
			t.Errorf("non-member typing: %v", err)
		}
		var out map[string]any
		_, err := alice.MakeRequest(e.ctx, "PUT", alice.BuildClientURL("v3", "rooms", roomID, "typing", bob.UserID.String()), map[string]any{"typing": true}, &out)
		if !isHTTPStatus(err, 403) {
			t.Errorf("typing as another user: %v", err)
		}
	})
}

func isHTTPStatus(err error, status int) bool {
	var he mautrix.HTTPError
	if err == nil {
		return false
	}
	if h, ok := err.(mautrix.HTTPError); ok {
		he = h
	} else if h, ok := err.(*mautrix.HTTPError); ok {
		he = *h
	} else {
		return strings.Contains(err.Error(), "HTTP "+itoa(status))
	}
	return he.Response != nil && he.Response.StatusCode == status
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// receiptUsers returns the users with a receipt of type on eventID in the m.receipt event.
func receiptUsers(r *mautrix.RespSync, roomID, eventID, typ string) map[string]map[string]any {
	c := ephemeralOf(r, roomID, "m.receipt")
	if c == nil {
		return nil
	}
	ev, _ := c[eventID].(map[string]any)
	users, _ := ev[typ].(map[string]any)
	out := map[string]map[string]any{}
	for u, v := range users {
		out[u], _ = v.(map[string]any)
	}
	return out
}

// TestReceiptsAndReadMarkers: m.read reaches room-mates, m.read.private only its
// sender, m.fully_read is room account data; threaded receipts carry thread_id and
// bad thread IDs are refused; receipts on unknown events are refused.
func TestReceiptsAndReadMarkers(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		ev1 := e.send(alice, roomID, "one")
		ev2 := e.send(alice, roomID, "two")
		ra0 := doSync(t, alice, mautrix.ReqSync{})
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, _ := alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: ra0.NextBatch, Timeout: 10000})
			done <- r
		}()
		time.Sleep(200 * time.Millisecond)
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev1), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		var ra1 *mautrix.RespSync
		select {
		case ra1 = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("receipt did not wake the long-poll")
		}
		if u := receiptUsers(ra1, roomID, ev1, "m.read"); u[bob.UserID.String()] == nil || u[bob.UserID.String()]["ts"] == nil {
			t.Fatalf("alice does not see bob's receipt: %v", ephemeralOf(ra1, roomID, "m.receipt"))
		}
		// Private receipt: bob sees it, alice does not.
		rb0 := doSync(t, bob, mautrix.ReqSync{})
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev2), event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		rb1 := doSync(t, bob, mautrix.ReqSync{Since: rb0.NextBatch})
		if u := receiptUsers(rb1, roomID, ev2, "m.read.private"); u[bob.UserID.String()] == nil {
			t.Fatalf("bob does not see his private receipt: %v", ephemeralOf(rb1, roomID, "m.receipt"))
		}
		ra2 := doSync(t, alice, mautrix.ReqSync{Since: ra1.NextBatch})
		if c := ephemeralOf(ra2, roomID, "m.receipt"); c != nil {
			t.Fatalf("private receipt leaked to alice: %v", c)
		}
		if c := ephemeralOf(doSync(t, alice, mautrix.ReqSync{}), roomID, "m.receipt"); strings.Contains(toJSON(c), "m.read.private") {
			t.Fatalf("private receipt leaked in initial sync: %v", c)
		}
		// Read markers: m.fully_read as room account data, m.read as a receipt.
		if err := bob.SetReadMarkers(e.ctx, id.RoomID(roomID), map[string]any{"m.fully_read": ev2, "m.read": ev2}); err != nil {
			t.Fatal(err)
		}
		rb2 := doSync(t, bob, mautrix.ReqSync{Since: rb1.NextBatch})
		jr := rb2.Rooms.Join[id.RoomID(roomID)]
		found := false
		for _, ad := range jr.AccountData.Events {
			if ad.Type.Type == "m.fully_read" && ad.Content.Raw["event_id"] == ev2 {
				found = true
			}
		}
		if !found {
			t.Errorf("m.fully_read not in room account data: %+v", jr.AccountData.Events)
		}
		if u := receiptUsers(rb2, roomID, ev2, "m.read"); u[bob.UserID.String()] == nil {
			t.Errorf("read_markers m.read not stored")
		}
		// Threaded receipts.
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev2), event.ReceiptTypeRead, map[string]any{"thread_id": "main"}); err != nil {
			t.Fatal(err)
		}
		rb3 := doSync(t, bob, mautrix.ReqSync{Since: rb2.NextBatch})
		if u := receiptUsers(rb3, roomID, ev2, "m.read"); u[bob.UserID.String()]["thread_id"] != "main" {
			t.Errorf("threaded receipt = %v", ephemeralOf(rb3, roomID, "m.receipt"))
		}
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev2), event.ReceiptTypeRead, map[string]any{"thread_id": "not-an-event"}); !isHTTPStatus(err, 400) {
			t.Errorf("bad thread_id: %v", err)
		}
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev2), event.ReceiptTypeRead, map[string]any{"thread_id": ev1}); !isHTTPStatus(err, 400) {
			t.Errorf("event outside the thread accepted: %v", err)
		}
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), "$unknown:sync.test", event.ReceiptTypeRead, nil); !isHTTPStatus(err, 404) {
			t.Errorf("receipt on unknown event: %v", err)
		}
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev2), "m.bogus", nil); !isHTTPStatus(err, 400) {
			t.Errorf("unknown receipt type: %v", err)
		}
	})
}

// TestUnreadNotificationCounts: a message counts as unread for the other member until
// it sends a read receipt for it.
func TestUnreadNotificationCounts(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		e.send(alice, roomID, "ping one")
		last := e.send(alice, roomID, "ping two")
		var n int
		for i := 0; i < 50; i++ { // counts are computed after the event commits
			r := doSync(t, bob, mautrix.ReqSync{})
			if un := r.Rooms.Join[id.RoomID(roomID)].UnreadNotifications; un != nil {
				n = un.NotificationCount
			}
			if n == 2 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n != 2 {
			t.Fatalf("notification_count = %d, want 2", n)
		}
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(last), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		r := doSync(t, bob, mautrix.ReqSync{})
		if un := r.Rooms.Join[id.RoomID(roomID)].UnreadNotifications; un == nil || un.NotificationCount != 0 {
			t.Fatalf("after the receipt: %+v", un)
		}
	})
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestReceiptsOnJoin: a user joining a room gets the receipts already there.
func TestReceiptsOnJoin(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol := e.register("alice"), e.register("bob"), e.register("carol")
		roomID := e.sharedRoom(alice, bob)
		ev := e.send(alice, roomID, "read me")
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(ev), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		rc0 := doSync(t, carol, mautrix.ReqSync{})
		e.membership("join", carol, nil, roomID)
		rc1 := doSync(t, carol, mautrix.ReqSync{Since: rc0.NextBatch, Timeout: 2000})
		if u := receiptUsers(rc1, roomID, ev, "m.read"); u[bob.UserID.String()] == nil {
			t.Fatalf("carol does not get bob's receipt on join: %v", ephemeralOf(rc1, roomID, "m.receipt"))
		}
	})
}
