package test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// searchBody is a room_events search in the given rooms.
func searchBody(term, order string, limit int, rooms []string, extra map[string]any) map[string]any {
	crit := map[string]any{"search_term": term, "order_by": order, "keys": []string{"content.body"},
		"filter": map[string]any{"rooms": rooms, "limit": limit}}
	for k, v := range extra {
		crit[k] = v
	}
	return map[string]any{"search_categories": map[string]any{"room_events": crit}}
}

// searchResults returns the event IDs and bodies of a search response.
func searchResults(t *testing.T, body map[string]any) (rooms map[string]any, ids, bodies []string) {
	t.Helper()
	re, ok := body["search_categories"].(map[string]any)["room_events"].(map[string]any)
	if !ok {
		t.Fatalf("no room_events in %v", body)
	}
	for _, r := range re["results"].([]any) {
		ev := r.(map[string]any)["result"].(map[string]any)
		ids = append(ids, ev["event_id"].(string))
		bodies = append(bodies, ev["content"].(map[string]any)["body"].(string))
	}
	return re, ids, bodies
}

func TestSearchRoomEvents(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		room := dirCreate(t, s, alice.AccessToken, map[string]any{"preset": "private_chat"})
		var ids []string
		for i := 0; i < 7; i++ {
			resp, err := alice.SendText(ctx, id.RoomID(room), fmt.Sprintf("Message number %d", i))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, resp.EventID.String())
		}
		// Searched right after sending: the search catches the index up first.
		status, body := s.Do(t, "POST", dirV3+"/search", alice.AccessToken, searchBody("message 4", "recent", 10, []string{room},
			map[string]any{"event_context": map[string]any{"before_limit": 2, "after_limit": 1, "include_profile": true}}))
		udExpect(t, "search", status, body, 200, "")
		re, got, _ := searchResults(t, body)
		if len(got) != 1 || got[0] != ids[4] || re["count"] != float64(1) {
			t.Fatalf("search 'message 4': %v", re)
		}
		c := re["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
		before, after := c["events_before"].([]any), c["events_after"].([]any)
		if len(before) != 2 || len(after) != 1 ||
			before[0].(map[string]any)["event_id"] != ids[3] || before[1].(map[string]any)["event_id"] != ids[2] ||
			after[0].(map[string]any)["event_id"] != ids[5] {
			t.Fatalf("context: %v", c)
		}
		if _, ok := c["profile_info"].(map[string]any)[alice.UserID.String()]; !ok {
			t.Fatalf("profile_info: %v", c)
		}

		// Pagination newest first, 3 per page, by word prefix ("mess").
		var all []string
		batch := ""
		for page := 0; page < 5; page++ {
			path := dirV3 + "/search"
			if batch != "" {
				path += "?next_batch=" + batch
			}
			status, body = s.Do(t, "POST", path, alice.AccessToken, searchBody("mess", "recent", 3, []string{room}, nil))
			udExpect(t, "search page", status, body, 200, "")
			re, got, _ := searchResults(t, body)
			if re["count"] != float64(7) {
				t.Fatalf("count: %v", re)
			}
			all = append(all, got...)
			batch, _ = re["next_batch"].(string)
			if batch == "" {
				break
			}
		}
		if len(all) != 7 || all[0] != ids[6] || all[6] != ids[0] {
			t.Fatalf("paginated results: %v, want %v reversed", all, ids)
		}

		// A redacted event is never returned, by either order.
		if _, err := alice.RedactEvent(ctx, id.RoomID(room), id.EventID(ids[5])); err != nil {
			t.Fatal(err)
		}
		for _, order := range []string{"rank", "recent"} {
			status, body = s.Do(t, "POST", dirV3+"/search", alice.AccessToken, searchBody("number", order, 10, []string{room}, nil))
			udExpect(t, "search after redaction", status, body, 200, "")
			_, got, _ := searchResults(t, body)
			if len(got) != 6 {
				t.Fatalf("%s after redaction: %v", order, got)
			}
			for _, g := range got {
				if g == ids[5] {
					t.Fatalf("%s: redacted event returned", order)
				}
			}
		}

		// Rank order: the message made mostly of the terms comes first.
		if _, err := alice.SendText(ctx, id.RoomID(room), "a long message that mentions a banana once among many other words"); err != nil {
			t.Fatal(err)
		}
		short, err := alice.SendMessageEvent(ctx, id.RoomID(room), event.EventMessage, map[string]any{"msgtype": "m.text", "body": "banana banana"})
		if err != nil {
			t.Fatal(err)
		}
		status, body = s.Do(t, "POST", dirV3+"/search", alice.AccessToken, searchBody("BANANA", "rank", 10, []string{room}, nil))
		udExpect(t, "rank search", status, body, 200, "")
		_, got, _ = searchResults(t, body)
		if len(got) != 2 || got[0] != short.EventID.String() {
			t.Fatalf("rank order: %v", got)
		}

		// Bob, not in the room, finds nothing there; once joined under "shared"
		// visibility he sees the history.
		status, body = s.Do(t, "POST", dirV3+"/search", bob.AccessToken, searchBody("message", "recent", 10, []string{room}, nil))
		udExpect(t, "outsider search", status, body, 200, "")
		if _, got, _ := searchResults(t, body); len(got) != 0 {
			t.Fatalf("outsider sees %v", got)
		}
		if _, err := alice.InviteUser(ctx, id.RoomID(room), &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, id.RoomID(room)); err != nil {
			t.Fatal(err)
		}
		status, body = s.Do(t, "POST", dirV3+"/search", bob.AccessToken, searchBody("message", "recent", 10, nil, nil))
		udExpect(t, "member search", status, body, 200, "")
		if _, got, _ := searchResults(t, body); len(got) != 7 {
			t.Fatalf("member sees %d results, want 7 (6 numbered + the long one)", len(got))
		}

		// Errors: no term, bad order, bad token; served under r0 too.
		status, body = s.Do(t, "POST", dirV3+"/search", alice.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}})
		udExpect(t, "no search_term", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", dirV3+"/search", alice.AccessToken, searchBody("x", "sideways", 10, nil, nil))
		udExpect(t, "bad order_by", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "POST", dirV3+"/search?next_batch=zzz", alice.AccessToken, searchBody("x", "recent", 10, nil, nil))
		udExpect(t, "bad next_batch", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "POST", "/_matrix/client/r0/search", alice.AccessToken, searchBody("number", "recent", 10, []string{room}, nil))
		udExpect(t, "r0 search", status, body, 200, "")
	})
}
