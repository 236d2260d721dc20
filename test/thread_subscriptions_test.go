package test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestThreadSubscriptions covers MSC4306: manual and automatic subscriptions, the
// conflict rule after an unsubscription, and refusals.
func TestThreadSubscriptions(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		eve := udRegister(t, s, "eve")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		root := rmSend(t, alice, roomID, "root")
		other := rmSend(t, alice, roomID, "another root")
		reply := func(to id.EventID) id.EventID {
			t.Helper()
			resp, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{
				"msgtype": "m.text", "body": "reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": to},
			})
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID
		}
		path := func(rootID id.EventID) string {
			return "/_matrix/client/unstable/io.element.msc4306/rooms/" + esc(roomID.String()) + "/thread/" + esc(rootID.String()) + "/subscription"
		}
		do := func(method string, body any) (int, map[string]any) {
			return s.Do(t, method, path(root), alice.AccessToken, body)
		}
		r1 := reply(root)
		otherReply := reply(other)

		st, body := do("GET", nil)
		udExpect(t, "GET before subscribing", st, body, 404, "M_NOT_FOUND")
		if st, body := do("PUT", map[string]any{"automatic": r1}); st != 200 {
			t.Fatalf("automatic subscribe: %d %v", st, body)
		}
		if st, body := do("GET", nil); st != 200 || body["automatic"] != true {
			t.Fatalf("after automatic subscribe: %d %v", st, body)
		}
		// A manual subscription overrides an automatic one and is not downgraded.
		if st, body := do("PUT", map[string]any{}); st != 200 {
			t.Fatalf("manual subscribe: %d %v", st, body)
		}
		if st, body := do("PUT", map[string]any{"automatic": r1}); st != 200 {
			t.Fatalf("automatic over manual: %d %v", st, body)
		}
		if st, body := do("GET", nil); st != 200 || body["automatic"] != false {
			t.Fatalf("manual subscription was downgraded: %d %v", st, body)
		}

		// Events outside the thread cannot cause a subscription.
		st, body = do("PUT", map[string]any{"automatic": root})
		udExpect(t, "root as cause", st, body, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		st, body = do("PUT", map[string]any{"automatic": otherReply})
		udExpect(t, "reply in another thread as cause", st, body, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")

		// After unsubscribing, only newer events can subscribe automatically.
		r2 := reply(root)
		if st, body := do("DELETE", nil); st != 200 {
			t.Fatalf("unsubscribe: %d %v", st, body)
		}
		if st, body := do("DELETE", nil); st != 200 {
			t.Fatalf("unsubscribe again: %d %v", st, body)
		}
		r3 := reply(root)
		for _, old := range []id.EventID{r1, r2} {
			st, body = do("PUT", map[string]any{"automatic": old})
			udExpect(t, "automatic with an event older than the unsubscription", st, body, 409, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
		}
		st, body = do("GET", nil)
		udExpect(t, "GET after refused subscriptions", st, body, 404, "M_NOT_FOUND")
		if st, body := do("PUT", map[string]any{"automatic": r3}); st != 200 {
			t.Fatalf("automatic with a newer event: %d %v", st, body)
		}

		// Unknown threads, threads the user cannot see, bad bodies.
		st, body = s.Do(t, "PUT", path("$nope:hs1.test"), alice.AccessToken, map[string]any{})
		udExpect(t, "unknown thread", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "PUT", path(root), eve.AccessToken, map[string]any{})
		udExpect(t, "thread in a room the user is not in", st, body, 404, "M_NOT_FOUND")
		st, body = do("PUT", map[string]any{"automatic": 5})
		udExpect(t, "automatic not a string", st, body, 400, "M_BAD_JSON")
	})
}
