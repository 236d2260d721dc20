package test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestDelayedEvents covers MSC4140: scheduling message and state events, listing,
// cancel / restart / send, replacement by newer state, bad input, and schedules
// surviving a restart (one due while the server was down fires when it is back).
func TestDelayedEvents(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		room := "/_matrix/client/v3/rooms/" + esc(roomID.String())
		const api = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
		list := func(tok string) []map[string]any {
			t.Helper()
			st, body := s.Do(t, "GET", api, tok, nil)
			if st != 200 {
				t.Fatalf("list: %d %v", st, body)
			}
			raw, _ := body["delayed_events"].([]any)
			var out []map[string]any
			for _, e := range raw {
				out = append(out, e.(map[string]any))
			}
			return out
		}
		schedule := func(method, path string, content map[string]any, delay string) string {
			t.Helper()
			st, body := s.Do(t, method, path+"?org.matrix.msc4140.delay="+delay, alice.AccessToken, content)
			id, _ := body["delay_id"].(string)
			if st != 200 || id == "" {
				t.Fatalf("schedule %s: %d %v", path, st, body)
			}
			return id
		}
		stateOf := func(key string) (int, map[string]any) {
			return s.Do(t, "GET", room+"/state/org.example.call/"+key, alice.AccessToken, nil)
		}
		waitFor := func(what string, cond func() bool) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for !cond() {
				if time.Now().After(deadline) {
					t.Fatalf("timed out waiting for %s", what)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}

		if got := list(alice.AccessToken); len(got) != 0 {
			t.Fatalf("delayed events before any: %v", got)
		}
		if st, _ := s.Do(t, "GET", api, "", nil); st != 401 {
			t.Fatalf("listing without a token: %d, want 401", st)
		}

		// A delayed message: a retry with the same transaction ID gets the same delay ID,
		// only its sender sees it, and it is sent when due.
		msgID := schedule("PUT", room+"/send/m.room.message/txn1", map[string]any{"msgtype": "m.text", "body": "later"}, "300")
		if again := schedule("PUT", room+"/send/m.room.message/txn1", map[string]any{"msgtype": "m.text", "body": "later"}, "300"); again != msgID {
			t.Fatalf("retry got delay ID %s, want %s", again, msgID)
		}
		if got := list(bob.AccessToken); len(got) != 0 {
			t.Fatalf("bob sees alice's delayed events: %v", got)
		}
		waitFor("the delayed message", func() bool {
			resp, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				if ev.Content.Raw["body"] == "later" {
					return ev.Sender == alice.UserID
				}
			}
			return false
		})
		waitFor("the sent message to leave the list", func() bool { return len(list(alice.AccessToken)) == 0 })

		// Cancel (no access token needed: the delay ID is the credential).
		id := schedule("PUT", room+"/state/org.example.call/cancelled", map[string]any{"v": 1}, "600000")
		got := list(alice.AccessToken)
		if len(got) != 1 || got[0]["delay_id"] != id || got[0]["state_key"] != "cancelled" || got[0]["type"] != "org.example.call" ||
			got[0]["delay"] != 600000.0 || got[0]["room_id"] != roomID.String() {
			t.Fatalf("listed: %v", got)
		}
		if st, body := s.Do(t, "POST", api+"/"+id+"/cancel", "", map[string]any{}); st != 200 {
			t.Fatalf("cancel: %d %v", st, body)
		}
		if got := list(alice.AccessToken); len(got) != 0 {
			t.Fatalf("cancelled event still listed: %v", got)
		}
		if st, _ := stateOf("cancelled"); st != 404 {
			t.Fatalf("cancelled state was set: %d", st)
		}
		st, body := s.Do(t, "POST", api+"/"+id+"/send", "", map[string]any{})
		udExpect(t, "send after cancel", st, body, 404, "M_NOT_FOUND")

		// Send now, with the action in the body.
		id = schedule("PUT", room+"/state/org.example.call/now", map[string]any{"v": 2}, "600000")
		if st, body := s.Do(t, "POST", api+"/"+id, "", map[string]any{"action": "send"}); st != 200 {
			t.Fatalf("send: %d %v", st, body)
		}
		if st, body := stateOf("now"); st != 200 || body["v"] != 2.0 {
			t.Fatalf("state after send: %d %v", st, body)
		}

		// Restart moves the timer on.
		id = schedule("PUT", room+"/state/org.example.call/restarted", map[string]any{}, "600000")
		before := list(alice.AccessToken)[0]["running_since"].(float64)
		time.Sleep(20 * time.Millisecond)
		if st, body := s.Do(t, "POST", api+"/"+id+"/restart", "", map[string]any{}); st != 200 {
			t.Fatalf("restart: %d %v", st, body)
		}
		if after := list(alice.AccessToken)[0]["running_since"].(float64); after <= before {
			t.Fatalf("running_since %v after restart, was %v", after, before)
		}

		// Newer state for the same key cancels the delayed one.
		if _, err := alice.SendStateEvent(ctx, roomID, event.Type{Type: "org.example.call", Class: event.StateEventType}, "restarted", map[string]any{"v": 3}); err != nil {
			t.Fatal(err)
		}
		if got := list(alice.AccessToken); len(got) != 0 {
			t.Fatalf("delayed state replaced by newer state still listed: %v", got)
		}

		// Bad input.
		st, body = s.Do(t, "PUT", room+"/send/m.room.message/bad1?org.matrix.msc4140.delay=soon", alice.AccessToken, map[string]any{"body": "x"})
		udExpect(t, "delay not a number", st, body, 400, "M_INVALID_PARAM")
		st, body = s.Do(t, "PUT", room+"/send/m.room.message/bad2?org.matrix.msc4140.delay=-5", alice.AccessToken, map[string]any{"body": "x"})
		udExpect(t, "negative delay", st, body, 400, "M_INVALID_PARAM")
		st, body = s.Do(t, "PUT", room+"/send/m.room.message/bad3?org.matrix.msc4140.delay=99999999999999", alice.AccessToken, map[string]any{"body": "x"})
		udExpect(t, "delay too long", st, body, 400, "M_MAX_DELAY_EXCEEDED")
		st, body = s.Do(t, "PUT", room+"/send/m.room.message/bad4?org.matrix.msc4140.delay=1000", carol.AccessToken, map[string]any{"body": "x"})
		udExpect(t, "not in the room", st, body, 403, "M_FORBIDDEN")
		st, body = s.Do(t, "POST", api+"/nosuchid/cancel", "", map[string]any{})
		udExpect(t, "unknown delay ID", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "POST", api+"/nosuchid/explode", "", map[string]any{})
		udExpect(t, "unknown action in the path", st, body, 404, "M_UNRECOGNIZED")
		st, body = s.Do(t, "POST", api+"/nosuchid", "", map[string]any{})
		udExpect(t, "no action", st, body, 400, "M_MISSING_PARAM")
		st, body = s.Do(t, "POST", api+"/nosuchid", "", map[string]any{"action": "explode"})
		udExpect(t, "unknown action in the body", st, body, 400, "M_INVALID_PARAM")
		if got := list(alice.AccessToken); len(got) != 0 {
			t.Fatalf("refused requests scheduled something: %v", got)
		}

		// Schedules survive a restart; one that came due meanwhile fires when it is back.
		schedule("PUT", room+"/state/org.example.call/due", map[string]any{"v": 4}, "200")
		late := schedule("PUT", room+"/state/org.example.call/late", map[string]any{"v": 5}, "600000")
		s.Stop()
		time.Sleep(300 * time.Millisecond)
		s.Restart()
		waitFor("the schedule due during the restart", func() bool {
			st, body := stateOf("due")
			return st == 200 && body["v"] == 4.0
		})
		if got := list(alice.AccessToken); len(got) != 1 || got[0]["delay_id"] != late {
			t.Fatalf("after restart: %v, want only %s", got, late)
		}
	})
}
