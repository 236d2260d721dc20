package test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestHierarchy(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		space := func(name, preset string) string {
			return dirCreate(t, s, at, map[string]any{"preset": preset, "name": name, "creation_content": map[string]any{"type": "m.space"}})
		}
		// root (public space)
		//  ├─ a (public, suggested, order "a")
		//  ├─ b (private: bob cannot see it, order "b")
		//  ├─ sub (public space, order "c")
		//  │   └─ d (public)
		//  └─ unknown room (not on this server: left out)
		root := space("Root", "public_chat")
		a := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "A", "topic": "room a"})
		b := dirCreate(t, s, at, map[string]any{"preset": "private_chat", "name": "B"})
		sub := space("Sub", "public_chat")
		d := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "D"})
		child := func(parent, c, order string, suggested bool) {
			content := map[string]any{"via": []string{"hs1.test"}, "suggested": suggested}
			if order != "" {
				content["order"] = order
			}
			dirMustState(t, s, at, parent, "m.space.child", c, content)
		}
		child(root, sub, "c", false)
		child(root, b, "b", false)
		child(root, a, "a", true)
		child(root, "!elsewhere:other.test", "d", true)
		child(sub, d, "", false)
		// A child event without via does not count.
		dirMustState(t, s, at, root, "m.space.child", d, map[string]any{})
		// Only spaces have children: a's child link is ignored.
		e := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "E"})
		child(a, e, "", true)

		get := func(token, roomID, query string) (int, map[string]any) {
			return s.Do(t, "GET", dirV1+"/rooms/"+esc(roomID)+"/hierarchy"+query, token, nil)
		}
		ids := func(body map[string]any) string {
			return strings.Join(dirField(dirChunk(t, body, "rooms"), "room_id"), ",")
		}
		join := func(ids ...string) string { return strings.Join(ids, ",") }

		// Alice sees everything, depth first in child order.
		status, body := get(at, root, "")
		if status != 200 || ids(body) != join(root, a, b, sub, d) || body["next_batch"] != nil {
			t.Fatalf("alice: %d %v", status, body)
		}
		rooms := dirChunk(t, body, "rooms")
		if rooms[0]["room_type"] != "m.space" || rooms[0]["name"] != "Root" || len(dirChunk(t, rooms[0], "children_state")) != 4 {
			t.Fatalf("root entry: %v", rooms[0])
		}
		cs := dirChunk(t, rooms[0], "children_state")[0]
		if cs["type"] != "m.space.child" || cs["state_key"] != sub && cs["state_key"] != a && cs["state_key"] != b || cs["sender"] != "@alice:hs1.test" || cs["origin_server_ts"] == nil {
			t.Fatalf("children_state entry: %v", cs)
		}
		if rooms[1]["topic"] != "room a" || rooms[1]["join_rule"] != "public" || rooms[1]["num_joined_members"] != 1.0 {
			t.Fatalf("room a entry: %v", rooms[1])
		}
		if cs, ok := rooms[1]["children_state"].([]any); !ok || len(cs) != 0 {
			t.Fatalf("children_state of a plain room: %v", rooms[1])
		}

		// Bob is in none of them: the private room is left out.
		status, body = get(bt, root, "")
		if status != 200 || ids(body) != join(root, a, sub, d) {
			t.Fatalf("bob: %d %v", status, body)
		}
		// Once invited, he may see it.
		if _, err := alice.InviteUser(ctx, id.RoomID(b), &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		status, body = get(bt, root, "")
		if status != 200 || ids(body) != join(root, a, b, sub, d) {
			t.Fatalf("bob invited: %d %v", status, body)
		}

		// max_depth and suggested_only.
		status, body = get(at, root, "?max_depth=1")
		if status != 200 || ids(body) != join(root, a, b, sub) {
			t.Fatalf("max_depth=1: %d %v", status, body)
		}
		status, body = get(at, root, "?max_depth=0")
		if status != 200 || ids(body) != root {
			t.Fatalf("max_depth=0: %d %v", status, body)
		}
		status, body = get(at, root, "?suggested_only=true")
		if status != 200 || ids(body) != join(root, a) {
			t.Fatalf("suggested_only: %d %v", status, body)
		}
		// ... and children_state lists the suggested children only.
		if n := len(dirChunk(t, dirChunk(t, body, "rooms")[0], "children_state")); n != 2 {
			t.Fatalf("suggested_only: root has %d children_state entries, want 2", n)
		}

		// Pagination.
		status, body = get(at, root, "?limit=2")
		next, _ := body["next_batch"].(string)
		if status != 200 || ids(body) != join(root, a) || next == "" {
			t.Fatalf("page 1: %d %v", status, body)
		}
		status, body = get(at, root, "?limit=2&from="+url.QueryEscape(next))
		next2, _ := body["next_batch"].(string)
		if status != 200 || ids(body) != join(b, sub) || next2 == "" {
			t.Fatalf("page 2: %d %v", status, body)
		}
		status, body = get(at, root, "?limit=2&from="+url.QueryEscape(next2))
		if status != 200 || ids(body) != d || body["next_batch"] != nil {
			t.Fatalf("page 3: %d %v", status, body)
		}
		status, body = get(at, root, "?limit=2&max_depth=1&from="+url.QueryEscape(next))
		udExpect(t, "max_depth changed while paginating", status, body, 400, "M_INVALID_PARAM")
		status, body = get(at, root, "?from=garbage")
		udExpect(t, "bad from token", status, body, 400, "M_INVALID_PARAM")
		status, body = get(at, root, "?limit=0")
		udExpect(t, "limit 0", status, body, 400, "M_INVALID_PARAM")
		status, body = get(at, root, "?max_depth=-1")
		udExpect(t, "negative max_depth", status, body, 400, "M_INVALID_PARAM")

		// A private space is closed to outsiders, unknown rooms too.
		private := space("Private", "private_chat")
		child(private, a, "", false)
		status, body = get(bt, private, "")
		udExpect(t, "private space", status, body, 403, "M_FORBIDDEN")
		status, body = get(bt, "!unknown:hs1.test", "")
		udExpect(t, "unknown space", status, body, 403, "M_FORBIDDEN")
		// mautrix parses the answer.
		resp, err := alice.Hierarchy(ctx, id.RoomID(private), &mautrix.ReqHierarchy{})
		if err != nil || len(resp.Rooms) != 2 || resp.Rooms[1].RoomID.String() != a {
			t.Fatalf("mautrix hierarchy: %+v %v", resp, err)
		}
	})
}

func TestRoomSummary(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		public := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "Open", "room_alias_name": "open",
			"creation_content": map[string]any{"type": "m.space"}})
		private := dirCreate(t, s, at, map[string]any{"preset": "private_chat", "name": "Closed"})
		summary := func(token, idOrAlias string) (int, map[string]any) {
			return s.Do(t, "GET", dirV1+"/room_summary/"+url.PathEscape(idOrAlias), token, nil)
		}

		// Anonymous, by alias: a public room, without membership.
		status, body := summary("", "#open:hs1.test")
		if status != 200 || body["room_id"] != public || body["name"] != "Open" || body["room_type"] != "m.space" ||
			body["join_rule"] != "public" || body["num_joined_members"] != 1.0 || body["membership"] != nil || body["room_version"] == nil {
			t.Fatalf("anonymous public summary: %d %v", status, body)
		}
		// A user who is not in it: membership leave.
		status, body = summary(bt, public)
		if status != 200 || body["membership"] != "leave" {
			t.Fatalf("bob's public summary: %d %v", status, body)
		}
		// The private room: only its members (and invitees).
		status, body = summary("", private)
		udExpect(t, "anonymous private summary", status, body, 404, "M_NOT_FOUND")
		status, body = summary(bt, private)
		udExpect(t, "outsider's private summary", status, body, 404, "M_NOT_FOUND")
		status, body = summary(at, private)
		if status != 200 || body["membership"] != "join" || body["name"] != "Closed" || body["join_rule"] != "invite" {
			t.Fatalf("member's private summary: %d %v", status, body)
		}
		if status, body := s.Do(t, "POST", dirV3+"/rooms/"+esc(private)+"/invite", at, map[string]any{"user_id": "@bob:hs1.test"}); status != 200 {
			t.Fatalf("invite: %d %v", status, body)
		}
		status, body = summary(bt, private)
		if status != 200 || body["membership"] != "invite" {
			t.Fatalf("invitee's private summary: %d %v", status, body)
		}
		// A restricted room names the rooms whose members may join it.
		restricted := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "room_version": "8",
			"initial_state": []any{map[string]any{"type": "m.room.join_rules", "content": map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": public}}}}}})
		status, body = summary(at, restricted)
		if ids, _ := body["allowed_room_ids"].([]any); status != 200 || len(ids) != 1 || ids[0] != public {
			t.Fatalf("restricted summary: %d %v", status, body)
		}
		if status, body = summary(at, public); body["allowed_room_ids"] != nil {
			t.Fatalf("public summary has allowed_room_ids: %v", body)
		}
		// Unknown rooms and aliases.
		status, body = summary(at, "!unknown:hs1.test")
		udExpect(t, "unknown room", status, body, 404, "M_NOT_FOUND")
		status, body = summary(at, "#unknown:hs1.test")
		udExpect(t, "unknown alias", status, body, 404, "M_NOT_FOUND")
		status, body = summary(at, "nonsense")
		udExpect(t, "neither ID nor alias", status, body, 400, "M_INVALID_PARAM")
	})
}
