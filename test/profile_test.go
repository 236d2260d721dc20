package test

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestProfile(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		aliceProfile := "/_matrix/client/v3/profile/" + esc(alice.UserID.String())

		if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		avatar := id.MustParseContentURI("mxc://hs1.test/abcDEF123")
		if err := alice.SetAvatarURL(ctx, avatar); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetProfileField(ctx, "m.tz", "Europe/London"); err != nil {
			t.Fatal(err)
		}
		custom := map[string]any{"colour": "blue", "n": []any{1.0, 2.0}, "nested": map[string]any{"ok": true}}
		if err := alice.SetProfileField(ctx, "org.example.custom", custom); err != nil {
			t.Fatal(err)
		}

		// Anyone (bob, and clients without a token) can read the profile.
		p, err := bob.GetProfile(ctx, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if p.DisplayName != "Alice Liddell" || p.AvatarURL != avatar || p.Extra["m.tz"] != "Europe/London" {
			t.Fatalf("profile: %+v", p)
		}
		if got, _ := p.Extra["org.example.custom"].(map[string]any); got["colour"] != "blue" || got["nested"].(map[string]any)["ok"] != true {
			t.Fatalf("custom field: %v", p.Extra["org.example.custom"])
		}
		status, body := s.Do(t, "GET", aliceProfile, "", nil)
		if status != 200 || body["displayname"] != "Alice Liddell" || body["avatar_url"] != avatar.String() {
			t.Fatalf("anonymous profile read: %d %v", status, body)
		}
		if name, err := bob.GetDisplayName(ctx, alice.UserID); err != nil || name.DisplayName != "Alice Liddell" {
			t.Fatalf("displayname: %+v %v", name, err)
		}
		if url, err := bob.GetAvatarURL(ctx, alice.UserID); err != nil || url != avatar {
			t.Fatalf("avatar_url: %v %v", url, err)
		}
		var tz map[string]string
		if err := bob.GetProfileField(ctx, alice.UserID, "m.tz", &tz); err != nil || tz["m.tz"] != "Europe/London" {
			t.Fatalf("m.tz: %v %v", tz, err)
		}

		// Deleting a field; deleting again is fine.
		if err := alice.DeleteProfileField(ctx, "org.example.custom"); err != nil {
			t.Fatal(err)
		}
		if err := alice.DeleteProfileField(ctx, "org.example.custom"); err != nil {
			t.Fatalf("deleting an unset field: %v", err)
		}
		status, body = s.Do(t, "GET", aliceProfile+"/org.example.custom", "", nil)
		udExpect(t, "deleted field", status, body, 404, "M_NOT_FOUND")
		if p, _ := bob.GetProfile(ctx, alice.UserID); p == nil || p.Extra["org.example.custom"] != nil {
			t.Fatalf("deleted field still in profile: %+v", p)
		}
		// null is a value, stored as such.
		status, body = s.Do(t, "PUT", aliceProfile+"/org.example.null", alice.AccessToken, `{"org.example.null": null}`)
		udExpect(t, "null custom field", status, body, 200, "")
		status, body = s.Do(t, "GET", aliceProfile+"/org.example.null", "", nil)
		if v, ok := body["org.example.null"]; status != 200 || !ok || v != nil {
			t.Fatalf("null field: %d %v", status, body)
		}

		// Only alice may change her profile.
		err = bob.SetProfileField(ctx, "displayname", "Bob was here") // bob's own: fine
		if err != nil {
			t.Fatal(err)
		}
		status, body = s.Do(t, "PUT", aliceProfile+"/displayname", bob.AccessToken, map[string]any{"displayname": "Hacked"})
		udExpect(t, "bob setting alice's name", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "DELETE", aliceProfile+"/m.tz", bob.AccessToken, nil)
		udExpect(t, "bob deleting alice's field", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", aliceProfile+"/displayname", "", map[string]any{"displayname": "Anon"})
		udExpect(t, "anonymous profile change", status, body, 401, "M_MISSING_TOKEN")

		// Bad input changes nothing.
		bad := []struct {
			name, field string
			body        any
			status      int
			code        string
		}{
			{"numeric displayname", "displayname", `{"displayname": 5}`, 400, "M_BAD_JSON"},
			{"null displayname", "displayname", `{"displayname": null}`, 400, "M_BAD_JSON"},
			{"object avatar_url", "avatar_url", `{"avatar_url": {"url": "mxc://a/b"}}`, 400, "M_BAD_JSON"},
			{"numeric m.tz", "m.tz", `{"m.tz": 1}`, 400, "M_BAD_JSON"},
			{"missing key", "displayname", `{"avatar_url": "mxc://a/b"}`, 400, "M_MISSING_PARAM"},
			{"not JSON", "displayname", `displayname=x`, 400, "M_NOT_JSON"},
			{"array body", "displayname", `["x"]`, 400, "M_BAD_JSON"},
			{"overlong displayname", "displayname", map[string]string{"displayname": strings.Repeat("é", 300)}, 400, "M_TOO_LARGE"},
			{"overlong key", strings.Repeat("k", 256), map[string]string{strings.Repeat("k", 256): "v"}, 400, "M_KEY_TOO_LARGE"},
			{"profile over 64 KiB", "org.example.big", map[string]string{"org.example.big": strings.Repeat("x", 70*1024)}, 400, "M_PROFILE_TOO_LARGE"},
			{"body over the request limit", "org.example.huge", map[string]string{"org.example.huge": strings.Repeat("x", 2<<20)}, 413, "M_TOO_LARGE"},
		}
		for _, b := range bad {
			status, body := s.Do(t, "PUT", aliceProfile+"/"+esc(b.field), alice.AccessToken, b.body)
			udExpect(t, b.name, status, body, b.status, b.code)
		}
		p, err = alice.GetProfile(ctx, alice.UserID)
		if err != nil || p.DisplayName != "Alice Liddell" || p.AvatarURL != avatar || p.Extra["org.example.big"] != nil {
			t.Fatalf("refused changes altered the profile: %+v %v", p, err)
		}
		// Several fields fit as long as the whole profile stays under 64 KiB.
		for _, k := range []string{"org.example.a", "org.example.b"} {
			if err := alice.SetProfileField(ctx, k, strings.Repeat("y", 30*1024)); err != nil {
				t.Fatalf("set %s: %v", k, err)
			}
		}
		err = alice.SetProfileField(ctx, "org.example.c", strings.Repeat("y", 10*1024))
		if st, code := udErr(t, err); st != 400 || code != "M_PROFILE_TOO_LARGE" {
			t.Fatalf("third big field: %d %s", st, code)
		}
		for _, k := range []string{"org.example.a", "org.example.b"} {
			if err := alice.DeleteProfileField(ctx, k); err != nil {
				t.Fatal(err)
			}
		}

		// Unknown, remote and malformed users.
		status, body = s.Do(t, "GET", "/_matrix/client/v3/profile/"+esc("@nobody:hs1.test"), "", nil)
		udExpect(t, "unknown user", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/profile/"+esc("@nobody:hs1.test")+"/displayname", "", nil)
		udExpect(t, "unknown user's field", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/profile/"+esc("@alice:elsewhere.test"), "", nil)
		udExpect(t, "remote user", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/profile/alice", "", nil)
		udExpect(t, "malformed user ID", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "GET", aliceProfile+"/org.example.never", "", nil)
		udExpect(t, "unset field", status, body, 404, "M_NOT_FOUND")

		// An empty avatar_url or displayname removes it (mautrix's way to clear them).
		if err := alice.SetAvatarURL(ctx, id.ContentURI{}); err != nil {
			t.Fatal(err)
		}
		if url, err := bob.GetAvatarURL(ctx, alice.UserID); err != nil || !url.IsEmpty() {
			t.Fatalf("avatar after clearing: %v %v", url, err)
		}
		status, body = s.Do(t, "GET", aliceProfile+"/avatar_url", "", nil)
		udExpect(t, "cleared avatar", status, body, 404, "M_NOT_FOUND")

		// The profile survives a restart.
		s.Restart()
		p, err = bob.GetProfile(ctx, alice.UserID)
		if err != nil || p.DisplayName != "Alice Liddell" || p.Extra["m.tz"] != "Europe/London" || !p.AvatarURL.IsEmpty() {
			t.Fatalf("after restart: %+v %v", p, err)
		}
		var bobName mautrix.RespUserDisplayName
		if err := alice.GetProfileField(ctx, bob.UserID, "displayname", &bobName); err != nil || bobName.DisplayName != "Bob was here" {
			t.Fatalf("bob's name after restart: %+v %v", bobName, err)
		}
	})
}
