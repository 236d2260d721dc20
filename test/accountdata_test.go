package test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestAccountData(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		const room = id.RoomID("!room:hs1.test")
		// Room version 12 room IDs have no server name.
		const v12room = id.RoomID("!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ")
		base := "/_matrix/client/v3/user/" + esc(alice.UserID.String())

		// Global account data: set, read, overwrite.
		cfg := map[string]any{"theme": "dark", "n": 1.0, "list": []any{"a", map[string]any{"b": nil}}}
		if err := alice.SetAccountData(ctx, "org.example.config", cfg); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := alice.GetAccountData(ctx, "org.example.config", &got); err != nil || !reflect.DeepEqual(got, cfg) {
			t.Fatalf("get: %v %v", got, err)
		}
		if err := alice.SetAccountData(ctx, "org.example.config", map[string]any{"theme": "light"}); err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := alice.GetAccountData(ctx, "org.example.config", &got); err != nil || !reflect.DeepEqual(got, map[string]any{"theme": "light"}) {
			t.Fatalf("after overwrite: %v %v", got, err)
		}
		// Types with a slash survive the path encoding.
		if err := alice.SetAccountData(ctx, "org.example/slash", map[string]any{"ok": true}); err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := alice.GetAccountData(ctx, "org.example/slash", &got); err != nil || got["ok"] != true {
			t.Fatalf("type with slash: %v %v", got, err)
		}

		// Room account data is separate from global data and from other rooms.
		tags := map[string]any{"tags": map[string]any{"u.work": map[string]any{"order": 0.5}}}
		if err := alice.SetRoomAccountData(ctx, room, "m.tag", tags); err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := alice.GetRoomAccountData(ctx, room, "m.tag", &got); err != nil || !reflect.DeepEqual(got, tags) {
			t.Fatalf("room data: %v %v", got, err)
		}
		err := alice.GetAccountData(ctx, "m.tag", &got)
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("room data visible globally: %d %s", st, code)
		}
		err = alice.GetRoomAccountData(ctx, "!other:hs1.test", "m.tag", &got)
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("room data visible in another room: %d %s", st, code)
		}
		if err := alice.SetRoomAccountData(ctx, v12room, "org.example.v12", map[string]any{"x": 1}); err != nil {
			t.Fatalf("room v12 ID: %v", err)
		}
		err = alice.GetAccountData(ctx, "org.example.unknown", &got)
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("unknown type: %d %s", st, code)
		}

		// Only alice reads and writes her account data.
		err = bob.GetAccountData(ctx, "org.example.config", &got) // bob's own: none
		if st, _ := udErr(t, err); st != 404 {
			t.Fatalf("bob's own unknown type: %d", st)
		}
		status, body := s.Do(t, "GET", base+"/account_data/org.example.config", bob.AccessToken, nil)
		udExpect(t, "bob reading alice's data", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", base+"/account_data/org.example.config", bob.AccessToken, map[string]any{"theme": "pwned"})
		udExpect(t, "bob writing alice's data", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", base+"/rooms/"+esc(string(room))+"/account_data/m.tag", bob.AccessToken, nil)
		udExpect(t, "bob reading alice's room data", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", base+"/rooms/"+esc(string(room))+"/account_data/m.tag", bob.AccessToken, map[string]any{})
		udExpect(t, "bob writing alice's room data", status, body, 403, "M_FORBIDDEN")

		// Bad input is refused and changes nothing.
		bad := []struct {
			name, path string
			body       any
			status     int
			code       string
		}{
			{"array body", "/account_data/org.example.config", `["theme"]`, 400, "M_BAD_JSON"},
			{"string body", "/account_data/org.example.config", `"dark"`, 400, "M_BAD_JSON"},
			{"not JSON", "/account_data/org.example.config", `theme=dark`, 400, "M_NOT_JSON"},
			{"truncated JSON", "/account_data/org.example.config", `{"theme":`, 400, "M_NOT_JSON"},
			{"empty body", "/account_data/org.example.config", []byte{}, 400, "M_NOT_JSON"},
			{"body over the request limit", "/account_data/org.example.config", map[string]string{"x": strings.Repeat("x", 2<<20)}, 413, "M_TOO_LARGE"},
			{"m.push_rules", "/account_data/m.push_rules", map[string]any{"org.example.marker": true}, 405, "M_BAD_JSON"},
			{"m.fully_read in a room", "/rooms/" + esc(string(room)) + "/account_data/m.fully_read", map[string]any{"event_id": "$x"}, 405, "M_BAD_JSON"},
			{"room alias as room ID", "/rooms/" + esc("#room:hs1.test") + "/account_data/m.tag", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"user ID as room ID", "/rooms/" + esc("@alice:hs1.test") + "/account_data/m.tag", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"overlong type", "/account_data/" + strings.Repeat("t", 300), map[string]any{}, 400, "M_INVALID_PARAM"},
		}
		for _, b := range bad {
			status, body := s.Do(t, "PUT", base+b.path, alice.AccessToken, b.body)
			udExpect(t, b.name, status, body, b.status, b.code)
		}
		status, body = s.Do(t, "GET", base+"/rooms/notaroom/account_data/m.tag", alice.AccessToken, nil)
		udExpect(t, "GET with a malformed room ID", status, body, 400, "M_INVALID_PARAM")
		got = nil
		if err := alice.GetAccountData(ctx, "org.example.config", &got); err != nil || !reflect.DeepEqual(got, map[string]any{"theme": "light"}) {
			t.Fatalf("refused writes changed the data: %v %v", got, err)
		}
		status, body = s.Do(t, "GET", base+"/account_data/m.push_rules", alice.AccessToken, nil)
		if status == 200 && body["org.example.marker"] != nil {
			t.Fatalf("a refused m.push_rules write was stored: %v", body)
		}

		// Account data survives a restart.
		s.Restart()
		got = nil
		if err := alice.GetAccountData(ctx, "org.example.config", &got); err != nil || got["theme"] != "light" {
			t.Fatalf("after restart: %v %v", got, err)
		}
		got = nil
		if err := alice.GetRoomAccountData(ctx, room, "m.tag", &got); err != nil || !reflect.DeepEqual(got, tags) {
			t.Fatalf("room data after restart: %v %v", got, err)
		}
	})
}

// TestAccountDataDeletion covers MSC3391 (deleting account data with DELETE or by writing
// empty content) and MSC3890 (a device's local notification settings go with the device).
func TestAccountDataDeletion(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		rid := esc(room.RoomID.String())
		base := "/_matrix/client/v3/user/" + esc(alice.UserID.String())
		unstable := "/_matrix/client/unstable/org.matrix.msc3391/user/" + esc(alice.UserID.String())
		for _, p := range []string{"/account_data/org.example.a", "/account_data/org.example.b",
			"/rooms/" + rid + "/account_data/org.example.a", "/rooms/" + rid + "/account_data/org.example.b"} {
			if st, body := s.Do(t, "PUT", base+p, alice.AccessToken, map[string]any{"v": 1}); st != 200 {
				t.Fatalf("PUT %s: %d %v", p, st, body)
			}
		}
		_, first := s.Do(t, "GET", "/_matrix/client/v3/sync", alice.AccessToken, nil)
		since, _ := first["next_batch"].(string)

		// Deleted with DELETE (global a, room a) and with empty content (global b, room b).
		for _, p := range []string{"/account_data/org.example.a", "/rooms/" + rid + "/account_data/org.example.a"} {
			if st, body := s.Do(t, "DELETE", unstable+p, alice.AccessToken, nil); st != 200 {
				t.Fatalf("DELETE %s: %d %v", p, st, body)
			}
		}
		for _, p := range []string{"/account_data/org.example.b", "/rooms/" + rid + "/account_data/org.example.b"} {
			if st, body := s.Do(t, "PUT", base+p, alice.AccessToken, map[string]any{}); st != 200 {
				t.Fatalf("PUT {} %s: %d %v", p, st, body)
			}
		}
		for _, p := range []string{"/account_data/org.example.a", "/account_data/org.example.b",
			"/rooms/" + rid + "/account_data/org.example.a", "/rooms/" + rid + "/account_data/org.example.b"} {
			st, body := s.Do(t, "GET", base+p, alice.AccessToken, nil)
			udExpect(t, "GET deleted "+p, st, body, 404, "M_NOT_FOUND")
		}
		// Deleting what is not there succeeds; another user's data is refused.
		if st, body := s.Do(t, "DELETE", unstable+"/account_data/org.example.never", alice.AccessToken, nil); st != 200 {
			t.Fatalf("DELETE of absent data: %d %v", st, body)
		}
		bob := udRegister(t, s, "bob")
		st, body := s.Do(t, "DELETE", unstable+"/account_data/org.example.a", bob.AccessToken, nil)
		udExpect(t, "bob deleting alice's data", st, body, 403, "M_FORBIDDEN")

		// An incremental sync tells the client the data is gone (empty content) ...
		_, inc := s.Do(t, "GET", "/_matrix/client/v3/sync?since="+since, alice.AccessToken, nil)
		global := adTypes(inc, "account_data")
		inRoom := adTypes(inc, "rooms", "join", room.RoomID.String(), "account_data")
		for _, typ := range []string{"org.example.a", "org.example.b"} {
			if c, ok := global[typ]; !ok || len(c) != 0 {
				t.Fatalf("incremental sync: global %s = %v (present %v), want empty content", typ, c, ok)
			}
			if c, ok := inRoom[typ]; !ok || len(c) != 0 {
				t.Fatalf("incremental sync: room %s = %v (present %v), want empty content", typ, c, ok)
			}
		}
		// ... and an initial sync leaves it out.
		_, init := s.Do(t, "GET", "/_matrix/client/v3/sync", alice.AccessToken, nil)
		for _, typ := range []string{"org.example.a", "org.example.b"} {
			if _, ok := adTypes(init, "account_data")[typ]; ok {
				t.Fatalf("initial sync still has global %s", typ)
			}
			if _, ok := adTypes(init, "rooms", "join", room.RoomID.String(), "account_data")[typ]; ok {
				t.Fatalf("initial sync still has room %s", typ)
			}
		}

		// MSC3890: logging a device out deletes its local notification settings, and only its.
		second := udLogin(t, s, "alice", "phone")
		settings := func(dev id.DeviceID) string {
			return base + "/account_data/org.matrix.msc3890.local_notification_settings." + esc(string(dev))
		}
		for _, dev := range []id.DeviceID{alice.DeviceID, second.DeviceID} {
			if st, body := s.Do(t, "PUT", settings(dev), alice.AccessToken, map[string]any{"is_silenced": true}); st != 200 {
				t.Fatalf("PUT settings: %d %v", st, body)
			}
		}
		if _, err := second.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		st, body = s.Do(t, "GET", settings(second.DeviceID), alice.AccessToken, nil)
		udExpect(t, "settings of the logged-out device", st, body, 404, "M_NOT_FOUND")
		if st, body := s.Do(t, "GET", settings(alice.DeviceID), alice.AccessToken, nil); st != 200 || body["is_silenced"] != true {
			t.Fatalf("settings of the remaining device: %d %v", st, body)
		}
	})
}

// adTypes returns the account data events found at a path of a /sync response, by type.
func adTypes(resp map[string]any, path ...string) map[string]map[string]any {
	var cur any = resp
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	m, _ := cur.(map[string]any)
	evs, _ := m["events"].([]any)
	out := map[string]map[string]any{}
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		typ, _ := ev["type"].(string)
		c, _ := ev["content"].(map[string]any)
		out[typ] = c
	}
	return out
}
