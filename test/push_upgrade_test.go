package test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestPushRulesFollowRoomUpgrade: a user's room rule for a room is copied for its
// replacement when they join it (the upgrader at the upgrade, others when they join),
// for /upgrade and for an upgrade made by hand, and the copy reaches /sync.
func TestPushRulesFollowRoomUpgrade(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		hasRoomRule := func(tok, roomID string) bool {
			status, body := s.Do(t, "GET", prPath("/global/room/"+esc(roomID)), tok, nil)
			if status != 200 {
				return false
			}
			a, _ := body["actions"].([]any)
			return len(a) == 1 && a[0] == "dont_notify"
		}
		for _, manual := range []bool{false, true} {
			old := dirCreate(t, s, alice.AccessToken, map[string]any{"preset": "public_chat", "room_version": "10"})
			dirJoin(t, s, bob.AccessToken, old)
			for _, tok := range []string{alice.AccessToken, bob.AccessToken} {
				status, body := s.Do(t, "PUT", prPath("/global/room/"+esc(old)), tok, map[string]any{"actions": []string{"dont_notify"}})
				prWant(t, "room rule", status, body, 200, "")
			}
			// Bob's /sync position before the upgrade: the copy must come down after it.
			since, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			var newRoom string
			if manual {
				newRoom = dirCreate(t, s, alice.AccessToken, map[string]any{"preset": "public_chat", "room_version": "11",
					"creation_content": map[string]any{"predecessor": map[string]any{"room_id": old}}})
				dirMustState(t, s, alice.AccessToken, old, "m.room.tombstone", "", map[string]any{"body": "moved", "replacement_room": newRoom})
			} else {
				status, body := s.Do(t, "POST", dirV3+"/rooms/"+esc(old)+"/upgrade", alice.AccessToken, map[string]any{"new_version": "11"})
				prWant(t, "upgrade", status, body, 200, "")
				newRoom = body["replacement_room"].(string)
			}
			pnEventually(t, "alice's rule copied at the upgrade", func() bool { return hasRoomRule(alice.AccessToken, newRoom) })
			if hasRoomRule(bob.AccessToken, newRoom) {
				t.Fatal("bob's rule copied before he joined the new room")
			}
			dirJoin(t, s, bob.AccessToken, newRoom)
			pnEventually(t, "bob's rule copied on join", func() bool { return hasRoomRule(bob.AccessToken, newRoom) })
			if !hasRoomRule(bob.AccessToken, old) {
				t.Fatal("the old room's rule is gone")
			}
			// Bob's /sync brings the new ruleset as m.push_rules account data.
			resp, err := bob.SyncRequest(ctx, 5000, since.NextBatch, "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, ev := range resp.AccountData.Events {
				if ev.Type == event.AccountDataPushRules {
					if rs, ok := ev.Content.Raw["global"].(map[string]any); ok {
						for _, r := range rs["room"].([]any) {
							found = found || r.(map[string]any)["rule_id"] == newRoom
						}
					}
				}
			}
			if !found {
				t.Fatalf("manual=%v: the copied rule is not in bob's /sync account data", manual)
			}
			// Carol had no rule: joining creates none.
			dirJoin(t, s, carol.AccessToken, newRoom)
			if hasRoomRule(carol.AccessToken, newRoom) {
				t.Fatal("carol got a rule she never had")
			}
		}
	})
}
