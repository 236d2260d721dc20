package test

import (
	"context"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestUserDirectory(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		dave := udRegister(t, s, "dave")
		_ = udRegister(t, s, "alicia") // in no room: never found
		if err := alice.SetDisplayName(ctx, "Wonder Woman"); err != nil {
			t.Fatal(err)
		}
		// alice and bob share a private room; carol is in a published room; dave in an
		// unpublished room with a public join rule; erin in a private room of her own.
		erin := udRegister(t, s, "erin")
		dirCreate(t, s, erin.AccessToken, map[string]any{"preset": "private_chat"})
		shared := dirCreate(t, s, alice.AccessToken, map[string]any{"preset": "private_chat", "invite": []string{"@bob:hs1.test"}})
		dirJoin(t, s, bob.AccessToken, shared)
		published := dirCreate(t, s, carol.AccessToken, map[string]any{"preset": "public_chat"})
		if status, body := s.Do(t, "PUT", dirV3+"/directory/list/room/"+esc(published), carol.AccessToken, map[string]any{"visibility": "public"}); status != 200 {
			t.Fatalf("publish: %d %v", status, body)
		}
		dirCreate(t, s, dave.AccessToken, map[string]any{"preset": "public_chat"})

		search := func(token string, body map[string]any) (int, map[string]any) {
			return s.Do(t, "POST", dirV3+"/user_directory/search", token, body)
		}
		users := func(body map[string]any) string {
			return strings.Join(dirField(dirChunk(t, body, "results"), "user_id"), ",")
		}
		status, body := search(bob.AccessToken, map[string]any{"search_term": "ali"})
		if status != 200 || users(body) != "@alice:hs1.test" || body["limited"] != false {
			t.Fatalf("bob searches ali: %d %v", status, body)
		}
		if r := dirChunk(t, body, "results")[0]; r["display_name"] != "Wonder Woman" {
			t.Fatalf("display name: %v", r)
		}
		// By display name, case-insensitively, and with the mautrix client.
		res, err := bob.SearchUserDirectory(ctx, "WONDER", 10)
		if err != nil || len(res.Results) != 1 || res.Results[0].UserID.String() != "@alice:hs1.test" {
			t.Fatalf("search by display name: %+v %v", res, err)
		}
		// Users of published rooms are found by anyone; dave shares nothing with bob.
		status, body = search(bob.AccessToken, map[string]any{"search_term": "carol"})
		if status != 200 || users(body) != "@carol:hs1.test" {
			t.Fatalf("carol: %d %v", status, body)
		}
		status, body = search(bob.AccessToken, map[string]any{"search_term": "dave"})
		if status != 200 || users(body) != "@dave:hs1.test" {
			t.Fatalf("dave: %d %v", status, body)
		}
		status, body = search(bob.AccessToken, map[string]any{"search_term": "erin"})
		if status != 200 || users(body) != "" {
			t.Fatalf("erin: %d %v", status, body)
		}
		status, body = search(erin.AccessToken, map[string]any{"search_term": "bob"})
		if status != 200 || users(body) != "" {
			t.Fatalf("erin searches bob: %d %v", status, body)
		}
		// LIKE wildcards in the term are literal.
		status, body = search(bob.AccessToken, map[string]any{"search_term": "%"})
		if status != 200 || users(body) != "" {
			t.Fatalf("wildcard: %d %v", status, body)
		}
		// limit and limited.
		status, body = search(bob.AccessToken, map[string]any{"search_term": "hs1.test", "limit": 2})
		if status != 200 || len(dirChunk(t, body, "results")) != 2 || body["limited"] != true {
			t.Fatalf("limited: %d %v", status, body)
		}
		// bob is in no public room, so he does not find himself (Complement's "Bob can find
		// Alice by mxid" searches a prefix all its users share and expects only alice).
		status, body = search(bob.AccessToken, map[string]any{"search_term": "hs1.test"})
		if status != 200 || users(body) != "@alice:hs1.test,@carol:hs1.test,@dave:hs1.test" || body["limited"] != false {
			t.Fatalf("all visible: %d %v", status, body)
		}
		// Bad requests.
		status, body = search(bob.AccessToken, map[string]any{})
		udExpect(t, "missing search_term", status, body, 400, "M_MISSING_PARAM")
		status, body = search(bob.AccessToken, map[string]any{"search_term": 5})
		udExpect(t, "search_term not a string", status, body, 400, "M_BAD_JSON")
		status, body = search("", map[string]any{"search_term": "a"})
		udExpect(t, "no token", status, body, 401, "M_MISSING_TOKEN")

		// Leaving the shared room hides alice from bob.
		if status, body := s.Do(t, "POST", dirV3+"/rooms/"+esc(shared)+"/leave", bob.AccessToken, map[string]any{}); status != 200 {
			t.Fatalf("leave: %d %v", status, body)
		}
		status, body = search(bob.AccessToken, map[string]any{"search_term": "ali"})
		if status != 200 || users(body) != "" {
			t.Fatalf("after leaving: %d %v", status, body)
		}
	})
}
