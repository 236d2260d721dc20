package test

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// A registration in the format Complement (and Synapse) write, vendor keys included.
const testASRegistration = `id: my_as_id
hs_token: hs-secret-token
as_token: as-secret-token
url: 'http://localhost:9000'
sender_localpart: the-bridge-user
rate_limited: false
de.sorunome.msc2409.push_ephemeral: false
push_ephemeral: false
org.matrix.msc3202: false
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:hs1\.test'
  rooms: []
  aliases: []
`

// startWithAppService starts a server that loads one application service registration.
func startWithAppService(t *testing.T, engine string) *harness.Server {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "my_as_id.yaml"), []byte(testASRegistration), 0o600); err != nil {
		t.Fatal(err)
	}
	return harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
		cfg.AppServices.ConfigFiles = []string{filepath.Join(dir, "*.yaml")}
	}})
}

// An application service authenticates with its as_token as its sender user, may act as
// the users of its namespace (?user_id=) but no one else, and may set origin_server_ts.
func TestAppServiceTokenAndMasquerading(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startWithAppService(t, engine)
		const tok = "as-secret-token"

		st, body := srv.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil)
		if st != 200 || body["user_id"] != "@the-bridge-user:hs1.test" {
			t.Fatalf("whoami with as_token: %d %v, want the sender user", st, body)
		}
		st, body = srv.Do(t, "GET", "/_matrix/client/v3/account/whoami?user_id="+url.QueryEscape("@bridge_alice:hs1.test"), tok, nil)
		if st != 200 || body["user_id"] != "@bridge_alice:hs1.test" {
			t.Fatalf("whoami masquerading as a namespaced user: %d %v", st, body)
		}
		st, body = srv.Do(t, "GET", "/_matrix/client/v3/account/whoami?user_id="+url.QueryEscape("@alice:hs1.test"), tok, nil)
		if st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("masquerading outside the namespace: %d %v, want 403 M_FORBIDDEN", st, body)
		}
		st, body = srv.Do(t, "GET", "/_matrix/client/v3/account/whoami", "as-secret-tokeX", nil)
		if st != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
			t.Fatalf("wrong token: %d %v, want 401 M_UNKNOWN_TOKEN", st, body)
		}

		// The sender creates a room and sends a message with a massaged timestamp.
		st, body = srv.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{"preset": "public_chat"})
		if st != 200 {
			t.Fatalf("createRoom as the AS sender: %d %v", st, body)
		}
		roomID := body["room_id"].(string)
		esc := url.PathEscape(roomID)
		st, body = srv.Do(t, "PUT", "/_matrix/client/v3/rooms/"+esc+"/send/m.room.message/t1?ts=1000", tok, map[string]any{"msgtype": "m.text", "body": "old"})
		if st != 200 {
			t.Fatalf("send with ts: %d %v", st, body)
		}
		st, ev := srv.Do(t, "GET", "/_matrix/client/v3/rooms/"+esc+"/event/"+url.PathEscape(body["event_id"].(string)), tok, nil)
		if st != 200 || ev["origin_server_ts"] != float64(1000) {
			t.Fatalf("event sent with ?ts=1000: %d origin_server_ts=%v", st, ev["origin_server_ts"])
		}
		st, body = srv.Do(t, "PUT", "/_matrix/client/v3/rooms/"+esc+"/send/m.room.message/t2?ts=abc", tok, map[string]any{"msgtype": "m.text", "body": "x"})
		if st != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("send with ts=abc: %d %v, want 400 M_INVALID_PARAM", st, body)
		}

		// A masqueraded user joins the room as itself.
		bridged := "?user_id=" + url.QueryEscape("@bridge_alice:hs1.test")
		st, body = srv.Do(t, "POST", "/_matrix/client/v3/rooms/"+esc+"/join"+bridged, tok, map[string]any{})
		if st != 200 {
			t.Fatalf("join as a masqueraded user: %d %v", st, body)
		}
		st, body = srv.Do(t, "GET", "/_matrix/client/v3/rooms/"+esc+"/joined_members", tok, nil)
		if st != 200 {
			t.Fatalf("joined_members: %d %v", st, body)
		}
		if _, ok := body["joined"].(map[string]any)["@bridge_alice:hs1.test"]; !ok {
			t.Fatalf("masqueraded user not joined: %v", body)
		}

		// An ordinary user's ?ts= is ignored.
		user := acctRegister(t, srv, &acctSecrets{}, "carol", "secret")
		st, body = srv.Do(t, "POST", "/_matrix/client/v3/join/"+esc, user, map[string]any{})
		if st != 200 {
			t.Fatalf("carol join: %d %v", st, body)
		}
		st, body = srv.Do(t, "PUT", "/_matrix/client/v3/rooms/"+esc+"/send/m.room.message/t3?ts=1000", user, map[string]any{"msgtype": "m.text", "body": "now"})
		if st != 200 {
			t.Fatalf("carol send: %d %v", st, body)
		}
		_, ev = srv.Do(t, "GET", "/_matrix/client/v3/rooms/"+esc+"/event/"+url.PathEscape(body["event_id"].(string)), user, nil)
		if ev["origin_server_ts"] == float64(1000) {
			t.Fatalf("an ordinary user's ?ts= was honoured")
		}
	})
}
