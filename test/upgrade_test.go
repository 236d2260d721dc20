package test

import (
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/test/harness"
)

// dirStateContent reads a state event's content (status 200 required).
func dirStateContent(t *testing.T, s *harness.Server, token, roomID, evType, stateKey string) map[string]any {
	t.Helper()
	status, body := s.Do(t, "GET", dirV3+"/rooms/"+esc(roomID)+"/state/"+esc(evType)+"/"+esc(stateKey), token, nil)
	if status != 200 {
		t.Fatalf("state %s in %s: %d %v", evType, roomID, status, body)
	}
	return body
}

func TestUpgradeRoom(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		old := dirCreate(t, s, at, map[string]any{
			"preset": "public_chat", "room_version": "10", "name": "Old name", "topic": "Old topic",
			"initial_state": []any{
				map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
				map[string]any{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://hs1.test/avatar"}},
				map[string]any{"type": "m.room.server_acl", "content": map[string]any{"allow": []string{"*"}, "deny": []string{"evil.test"}, "allow_ip_literals": false}},
			},
			"power_level_content_override": map[string]any{"users": map[string]any{"@alice:hs1.test": 100, "@bob:hs1.test": 10}},
		})
		dirJoin(t, s, bt, old)
		aliasPath := dirV3 + "/directory/room/" + url.PathEscape("#lobby:hs1.test")
		if status, body := s.Do(t, "PUT", aliasPath, at, map[string]any{"room_id": old}); status != 200 {
			t.Fatalf("alias: %d %v", status, body)
		}
		dirMustState(t, s, at, old, "m.room.canonical_alias", "", map[string]any{"alias": "#lobby:hs1.test"})
		if status, body := s.Do(t, "PUT", dirV3+"/directory/list/room/"+esc(old), at, map[string]any{"visibility": "public"}); status != 200 {
			t.Fatalf("publish: %d %v", status, body)
		}
		dirSend(t, s, bt, old, "m.room.message", map[string]any{"msgtype": "m.text", "body": "before"})
		udRegister(t, s, "mallory")
		if status, body := s.Do(t, "POST", dirV3+"/rooms/"+esc(old)+"/ban", at, map[string]any{"user_id": "@mallory:hs1.test", "reason": "spam"}); status != 200 {
			t.Fatalf("ban: %d %v", status, body)
		}
		dirMustState(t, s, at, old, "m.space.child", "!child:hs1.test", map[string]any{"via": []string{"hs1.test"}})

		// Failures change nothing.
		up := dirV3 + "/rooms/" + esc(old) + "/upgrade"
		status, body := s.Do(t, "POST", up, bt, map[string]any{"new_version": "11"})
		udExpect(t, "upgrade without power", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", up, at, map[string]any{"new_version": "999"})
		udExpect(t, "unsupported version", status, body, 400, "M_UNSUPPORTED_ROOM_VERSION")
		status, body = s.Do(t, "POST", up, at, map[string]any{})
		udExpect(t, "missing new_version", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", dirV3+"/rooms/"+esc("!unknown:hs1.test")+"/upgrade", at, map[string]any{"new_version": "11"})
		udExpect(t, "unknown room", status, body, 404, "M_NOT_FOUND")
		carol := udRegister(t, s, "carol")
		status, body = s.Do(t, "POST", up, carol.AccessToken, map[string]any{"new_version": "11"})
		udExpect(t, "upgrade by a non-member", status, body, 403, "M_FORBIDDEN")

		status, body = s.Do(t, "POST", up, at, map[string]any{"new_version": "11"})
		newID, _ := body["replacement_room"].(string)
		if status != 200 || newID == "" || newID == old {
			t.Fatalf("upgrade: %d %v", status, body)
		}

		// The new room: predecessor, version, state carried over.
		create := dirStateContent(t, s, at, newID, "m.room.create", "")
		pred, _ := create["predecessor"].(map[string]any)
		if create["room_version"] != "11" || pred == nil || pred["room_id"] != old || pred["event_id"] == nil {
			t.Fatalf("new create: %v", create)
		}
		for typ, want := range map[string][2]string{
			"m.room.name":               {"name", "Old name"},
			"m.room.topic":              {"topic", "Old topic"},
			"m.room.join_rules":         {"join_rule", "public"},
			"m.room.history_visibility": {"history_visibility", "world_readable"},
			"m.room.avatar":             {"url", "mxc://hs1.test/avatar"},
			"m.room.canonical_alias":    {"alias", "#lobby:hs1.test"},
		} {
			if c := dirStateContent(t, s, at, newID, typ, ""); c[want[0]] != want[1] {
				t.Fatalf("new room %s: %v", typ, c)
			}
		}
		if acl := dirStateContent(t, s, at, newID, "m.room.server_acl", ""); len(dirStrings(acl["deny"])) != 1 {
			t.Fatalf("server ACL: %v", acl)
		}
		if c := dirStateContent(t, s, at, newID, "m.room.member", "@mallory:hs1.test"); c["membership"] != "ban" || c["reason"] != "spam" {
			t.Fatalf("ban not carried over: %v", c)
		}
		if c := dirStateContent(t, s, at, newID, "m.space.child", "!child:hs1.test"); len(dirStrings(c["via"])) != 1 {
			t.Fatalf("space child not carried over: %v", c)
		}
		pl := dirStateContent(t, s, at, newID, "m.room.power_levels", "")
		users, _ := pl["users"].(map[string]any)
		if users["@alice:hs1.test"] != 100.0 || users["@bob:hs1.test"] != 10.0 {
			t.Fatalf("new power levels: %v", pl)
		}

		// The old room: tombstone, restricted power levels, no canonical alias.
		tomb := dirStateContent(t, s, at, old, "m.room.tombstone", "")
		if tomb["replacement_room"] != newID {
			t.Fatalf("tombstone: %v", tomb)
		}
		oldPL := dirStateContent(t, s, at, old, "m.room.power_levels", "")
		if ed, _ := oldPL["events_default"].(float64); ed < 50 {
			t.Fatalf("old power levels not restricted: %v", oldPL)
		}
		if inv, _ := oldPL["invite"].(float64); inv < 50 {
			t.Fatalf("old invite level not restricted: %v", oldPL)
		}
		dirTxn++
		status, body = s.Do(t, "PUT", dirV3+"/rooms/"+esc(old)+"/send/m.room.message/uptxn", bt, map[string]any{"msgtype": "m.text", "body": "after"})
		udExpect(t, "speaking in the old room", status, body, 403, "M_FORBIDDEN")
		if c := dirStateContent(t, s, at, old, "m.room.canonical_alias", ""); c["alias"] != nil {
			t.Fatalf("old canonical alias kept: %v", c)
		}

		// The alias and the directory entry moved.
		status, body = s.Do(t, "GET", aliasPath, bt, nil)
		if status != 200 || body["room_id"] != newID {
			t.Fatalf("alias after upgrade: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/directory/list/room/"+esc(newID), "", nil)
		if body["visibility"] != "public" {
			t.Fatalf("new room not published: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/directory/list/room/"+esc(old), "", nil)
		if body["visibility"] != "private" {
			t.Fatalf("old room still published: %d %v", status, body)
		}

		// Bob follows; then alice upgrades again to v12, where creators have no power level entry.
		dirJoin(t, s, bt, newID)
		status, body = s.Do(t, "POST", dirV3+"/rooms/"+esc(newID)+"/upgrade", at, map[string]any{"new_version": "12", "additional_creators": []string{"@carol:hs1.test"}})
		v12, _ := body["replacement_room"].(string)
		if status != 200 || v12 == "" {
			t.Fatalf("upgrade to 12: %d %v", status, body)
		}
		create = dirStateContent(t, s, at, v12, "m.room.create", "")
		if create["room_version"] != "12" || len(dirStrings(create["additional_creators"])) != 1 {
			t.Fatalf("v12 create: %v", create)
		}
		// A v12 room's predecessor names the old room only (event_id is deprecated).
		if pred, _ := create["predecessor"].(map[string]any); pred == nil || pred["room_id"] != newID || pred["event_id"] != nil {
			t.Fatalf("v12 predecessor: %v", create["predecessor"])
		}
		pl = dirStateContent(t, s, at, v12, "m.room.power_levels", "")
		users, _ = pl["users"].(map[string]any)
		if _, listed := users["@alice:hs1.test"]; listed || users["@bob:hs1.test"] != 10.0 {
			t.Fatalf("v12 power levels: %v", pl)
		}
		if c := dirStateContent(t, s, at, v12, "m.room.member", "@mallory:hs1.test"); c["membership"] != "ban" {
			t.Fatalf("ban not carried over to v12: %v", c)
		}
		if c := dirStateContent(t, s, at, v12, "m.room.name", ""); c["name"] != "Old name" {
			t.Fatalf("v12 name: %v", c)
		}
	})
}
