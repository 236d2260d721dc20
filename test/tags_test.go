package test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestTags(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		room := dirCreate(t, s, alice.AccessToken, nil)
		base := dirV3 + "/user/" + esc(alice.UserID.String()) + "/rooms/" + esc(room) + "/tags"

		// No tags yet.
		status, body := s.Do(t, "GET", base, alice.AccessToken, nil)
		if tags, ok := body["tags"].(map[string]any); status != 200 || !ok || len(tags) != 0 {
			t.Fatalf("empty tags: %d %v", status, body)
		}
		// mautrix round trip with an order, and a raw tag without one.
		if err := alice.AddTagWithCustomData(ctx, id.RoomID(room), "u.work", map[string]any{"order": 0.25}); err != nil {
			t.Fatal(err)
		}
		status, body = s.Do(t, "PUT", base+"/m.favourite", alice.AccessToken, map[string]any{})
		udExpect(t, "tag without order", status, body, 200, "")
		status, body = s.Do(t, "PUT", base+"/"+esc("u.with/slash"), alice.AccessToken, map[string]any{"order": 1})
		udExpect(t, "tag with a slash", status, body, 200, "")
		tags, err := alice.GetTags(ctx, id.RoomID(room))
		if err != nil || len(tags.Tags) != 3 || tags.Tags["u.work"].Order != "0.25" || tags.Tags["u.with/slash"].Order != "1" {
			t.Fatalf("get tags: %+v %v", tags, err)
		}
		if _, ok := tags.Tags["m.favourite"]; !ok {
			t.Fatalf("m.favourite missing: %+v", tags)
		}
		// Tags are the m.tag room account data.
		var ad map[string]map[string]any
		if err := alice.GetRoomAccountData(ctx, id.RoomID(room), "m.tag", &ad); err != nil || len(ad["tags"]) != 3 {
			t.Fatalf("m.tag account data: %v %v", ad, err)
		}

		// Bad orders change nothing.
		status, body = s.Do(t, "PUT", base+"/u.bad", alice.AccessToken, map[string]any{"order": 2})
		udExpect(t, "order above 1", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", base+"/u.bad", alice.AccessToken, map[string]any{"order": "high"})
		udExpect(t, "order not a number", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "PUT", base+"/u.bad", alice.AccessToken, "[1]")
		udExpect(t, "body not an object", status, body, 400, "M_BAD_JSON")

		// Only alice reads and writes her tags.
		status, body = s.Do(t, "GET", base, bob.AccessToken, nil)
		udExpect(t, "bob reads alice's tags", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", base+"/u.bob", bob.AccessToken, map[string]any{})
		udExpect(t, "bob writes alice's tags", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "DELETE", base+"/u.work", bob.AccessToken, nil)
		udExpect(t, "bob deletes alice's tags", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", dirV3+"/user/"+esc(alice.UserID.String())+"/rooms/not-a-room/tags", alice.AccessToken, nil)
		udExpect(t, "invalid room ID", status, body, 400, "M_INVALID_PARAM")

		// Concurrent changes of different tags are all kept.
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if err := alice.AddTag(ctx, id.RoomID(room), event.RoomTag(fmt.Sprintf("u.c%d", i)), 0.5); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		if tags, err := alice.GetTags(ctx, id.RoomID(room)); err != nil || len(tags.Tags) != 11 {
			t.Fatalf("after concurrent puts: %d tags %v", len(tags.Tags), err)
		}
		for i := 0; i < 8; i++ {
			if err := alice.RemoveTag(ctx, id.RoomID(room), event.RoomTag(fmt.Sprintf("u.c%d", i))); err != nil {
				t.Fatal(err)
			}
		}

		// Delete one, delete a missing one, and read back after a restart.
		if err := alice.RemoveTag(ctx, id.RoomID(room), "u.work"); err != nil {
			t.Fatal(err)
		}
		status, body = s.Do(t, "DELETE", base+"/u.never", alice.AccessToken, nil)
		udExpect(t, "delete a missing tag", status, body, 200, "")
		s.Restart()
		status, body = s.Do(t, "GET", base, alice.AccessToken, nil)
		got, _ := body["tags"].(map[string]any)
		if status != 200 || len(got) != 2 || got["u.work"] != nil || got["m.favourite"] == nil || got["u.bad"] != nil {
			t.Fatalf("after delete and restart: %d %v", status, body)
		}
	})
}
