package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// Limits used by TestBadInput: small enough that oversized bodies are cheap to send, big
// enough that a string field can exceed the 65,536-byte event limit inside a body that fits.
const (
	badMaxRequest = 256 << 10
	badMaxUpload  = 256 << 10
	badBigString  = 100 << 10
)

// badCase is one malformed request and the error it must get. status 0 means "any 4xx"
// (used where the spec gives no single code); codes, when set, lists the accepted errcodes.
// uia accepts a 401 user-interactive-auth challenge (flows, no errcode) as a refusal too.
type badCase struct {
	name        string
	method      string
	path        string
	token       string
	body        []byte
	contentType string
	status      int
	codes       []string
	uia         bool
}

// badRaw sends a request with a raw body and returns the status, content type and body.
func badRaw(t *testing.T, s *harness.Server, method, path, token string, body []byte, contentType string) (int, string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), raw
}

// check asserts the answer is a JSON Matrix error with the wanted status and code.
func (c badCase) check(t *testing.T, s *harness.Server) {
	t.Helper()
	status, ctype, raw := badRaw(t, s, c.method, c.path, c.token, c.body, c.contentType)
	short := raw
	if len(short) > 300 {
		short = short[:300]
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s %s: status %d, body is not a JSON object: %q", c.method, c.path, status, short)
	}
	if !strings.HasPrefix(ctype, "application/json") {
		t.Errorf("%s %s: content type %q", c.method, c.path, ctype)
	}
	if c.uia && status == http.StatusUnauthorized && body["flows"] != nil {
		return
	}
	if status < 400 || status >= 500 {
		t.Fatalf("%s %s: status %d, want a 4xx error: %s", c.method, c.path, status, short)
	}
	if c.status != 0 && status != c.status {
		t.Errorf("%s %s: status %d, want %d: %s", c.method, c.path, status, c.status, short)
	}
	code, _ := body["errcode"].(string)
	if _, ok := body["error"].(string); !ok || !strings.HasPrefix(code, "M_") {
		t.Errorf("%s %s: not a Matrix error (errcode, error): %s", c.method, c.path, short)
	}
	if len(c.codes) > 0 {
		found := false
		for _, want := range c.codes {
			found = found || code == want
		}
		if !found {
			t.Errorf("%s %s: errcode %q, want one of %v: %s", c.method, c.path, code, c.codes, short)
		}
	}
}

func badJSONBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	badNotJSON    = []string{"M_NOT_JSON"}
	badNotOrBad   = []string{"M_NOT_JSON", "M_BAD_JSON"}
	badJSONCodes  = []string{"M_BAD_JSON", "M_INVALID_PARAM", "M_NOT_JSON"}
	badMissing    = []string{"M_MISSING_PARAM", "M_BAD_JSON", "M_INVALID_PARAM"}
	badTooLarge   = []string{"M_TOO_LARGE"}
	badBigStr     = strings.Repeat("x", badBigString)
	badUTF8Body   = []byte("{\"x\":\"\xff\xfe\xfd\"}")
	badOversized  = []byte(`{"x":"` + strings.Repeat("a", badMaxRequest+1024) + `"}`)
	badNotJSONRaw = []byte("this is not JSON {")
)

// bodyCases returns the body-level cases every JSON endpoint must refuse the same way:
// not JSON, a top-level array, invalid UTF-8, and a body over limits.max_request_bytes.
func bodyCases(family, method, path, token string) []badCase {
	return []badCase{
		{name: family + "/not-json", method: method, path: path, token: token, body: badNotJSONRaw, status: 400, codes: badNotJSON},
		{name: family + "/array", method: method, path: path, token: token, body: []byte(`[1,2,3]`), status: 400, codes: badNotOrBad},
		{name: family + "/top-level-number", method: method, path: path, token: token, body: []byte(`42`), status: 400, codes: badNotOrBad},
		{name: family + "/invalid-utf8", method: method, path: path, token: token, body: badUTF8Body, status: 400, codes: badNotOrBad},
		{name: family + "/too-large", method: method, path: path, token: token, body: badOversized, status: 413, codes: badTooLarge},
	}
}

// badStripVolatile removes what changes with time alone: pagination tokens, presence
// clocks, and events' unsigned.age.
func badStripVolatile(v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range []string{"start", "end", "last_active_ago", "currently_active", "unsigned"} {
			delete(x, k)
		}
		for _, e := range x {
			badStripVolatile(e)
		}
	case []any:
		for _, e := range x {
			badStripVolatile(e)
		}
	}
}

// TestBadInput sends malformed and mistargeted requests to every endpoint family of the
// client-server API and asserts each gets a JSON Matrix 4xx error, the server stays
// healthy, and nothing is written.
func TestBadInput(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
			cfg.Limits.MaxRequestBytes = badMaxRequest
			cfg.Media.MaxUploadBytes = badMaxUpload
		}})
		sec := &acctSecrets{}
		alice := acctRegister(t, s, sec, "alice", "alice-password-1")
		bob := acctRegister(t, s, sec, "bob", "bob-password-1")
		carol := acctRegister(t, s, sec, "carol", "carol-password-1")
		hs := s.ServerName
		aliceID, bobID := "@alice:"+hs, "@bob:"+hs

		// Fixtures the cases aim at: a room with a message and an alias, a filter, account
		// data, a tag, a key backup version, device keys.
		_, body := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice, map[string]any{"name": "bad input"})
		roomID, _ := body["room_id"].(string)
		if roomID == "" {
			t.Fatalf("createRoom: %v", body)
		}
		room := url.PathEscape(roomID)
		if st, b := s.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/join", bob, map[string]any{}); st != 403 && st != 200 {
			t.Fatalf("bob join: %d %v", st, b)
		}
		_, body = s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/fixture1", alice,
			map[string]any{"msgtype": "m.text", "body": "hello"})
		eventID, _ := body["event_id"].(string)
		if eventID == "" {
			t.Fatalf("send: %v", body)
		}
		ev := url.PathEscape(eventID)
		alias := url.PathEscape("#badinput:" + hs)
		mustOK := func(method, path, token string, b any) map[string]any {
			t.Helper()
			st, out := s.Do(t, method, path, token, b)
			if st != 200 {
				t.Fatalf("%s %s: %d %v", method, path, st, out)
			}
			return out
		}
		mustOK("PUT", "/_matrix/client/v3/directory/room/"+alias, alice, map[string]any{"room_id": roomID})
		filterID, _ := mustOK("POST", "/_matrix/client/v3/user/"+aliceID+"/filter", alice, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})["filter_id"].(string)
		mustOK("PUT", "/_matrix/client/v3/user/"+aliceID+"/account_data/org.example.bad", alice, map[string]any{"v": 1})
		mustOK("PUT", "/_matrix/client/v3/user/"+aliceID+"/rooms/"+room+"/tags/u.work", alice, map[string]any{"order": 0.5})
		backup, _ := mustOK("POST", "/_matrix/client/v3/room_keys/version", alice, map[string]any{
			"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}})["version"].(string)
		_, who := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice, nil)
		aliceDevice, _ := who["device_id"].(string)

		db := e2eOpenDB(t, s)
		tables := []string{"accounts", "devices", "access_tokens", "profiles", "profile_fields", "account_data", "filters",
			"rooms", "room_events", "room_current_state", "room_aliases", "room_directory", "event_reports", "receipts",
			"push_rules", "pushers", "e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys", "e2e_cross_signing_keys",
			"e2e_key_signatures", "e2e_backup_versions", "e2e_backup_sessions", "e2e_to_device_inbox",
			"e2e_dehydrated_devices", "media", "transaction_ids", "openid_tokens", "registration_tokens"}
		views := []struct{ path, token string }{
			{"/_matrix/client/v3/joined_rooms", alice},
			{"/_matrix/client/v3/joined_rooms", bob},
			{"/_matrix/client/v3/joined_rooms", carol},
			{"/_matrix/client/v3/rooms/" + room + "/state", alice},
			{"/_matrix/client/v3/rooms/" + room + "/messages?dir=b&limit=100", alice},
			{"/_matrix/client/v3/profile/" + aliceID, alice},
			{"/_matrix/client/v3/profile/" + bobID, alice},
			{"/_matrix/client/v3/user/" + aliceID + "/account_data/org.example.bad", alice},
			{"/_matrix/client/v3/user/" + aliceID + "/rooms/" + room + "/tags", alice},
			{"/_matrix/client/v3/user/" + aliceID + "/filter/" + filterID, alice},
			{"/_matrix/client/v3/directory/room/" + alias, alice},
			{"/_matrix/client/v3/directory/list/room/" + room, alice},
			{"/_matrix/client/v3/publicRooms", alice},
			{"/_matrix/client/v3/pushrules/", alice},
			{"/_matrix/client/v3/pushers", alice},
			{"/_matrix/client/v3/room_keys/version", alice},
			{"/_matrix/client/v3/room_keys/keys?version=" + backup, alice},
			{"/_matrix/client/v3/presence/" + aliceID + "/status", alice},
		}
		snapshot := func() map[string]any {
			t.Helper()
			snap := map[string]any{}
			for _, tbl := range tables {
				var n int64
				if err := db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+tbl).Scan(&n); err != nil {
					t.Fatalf("count %s: %v", tbl, err)
				}
				snap["table "+tbl] = n
			}
			for _, v := range views {
				st, _, raw := badRaw(t, s, "GET", v.path, v.token, nil, "")
				var out any
				_ = json.Unmarshal(raw, &out)
				badStripVolatile(out)
				snap[fmt.Sprintf("%d GET %s", len(v.token), v.path)] = []any{st, out}
			}
			for _, tok := range []string{alice, bob, carol} {
				_, out := s.Do(t, "GET", "/_matrix/client/v3/devices", tok, nil)
				var ids []string
				devs, _ := out["devices"].([]any)
				for _, d := range devs {
					dm, _ := d.(map[string]any)
					ids = append(ids, fmt.Sprint(dm["device_id"], "|", dm["display_name"]))
				}
				snap["devices "+tok[:4]] = ids
			}
			return snap
		}
		before := snapshot()

		bad := `!nosuchroom:` + hs
		badRoom := url.PathEscape(bad)
		badEvent := url.PathEscape("$nosuchevent")
		userAsRoom := url.PathEscape(aliceID)
		roomAsUser := url.PathEscape(roomID)
		v3 := "/_matrix/client/v3"
		var cases []badCase
		add := func(cs ...badCase) { cases = append(cases, cs...) }
		j := badJSONBody

		// Registration and login.
		add(bodyCases("register", "POST", v3+"/register", "")...)
		add(
			badCase{name: "register/username-number", method: "POST", path: v3 + "/register", body: j(map[string]any{"username": 5, "password": "pw-pw-pw-1", "auth": map[string]any{"type": "m.login.dummy"}}), status: 400, codes: badJSONCodes},
			badCase{name: "register/auth-string", method: "POST", path: v3 + "/register", body: j(map[string]any{"username": "newbie", "password": "pw-pw-pw-1", "auth": "dummy"}), status: 400, codes: badJSONCodes},
			badCase{name: "register/username-huge", method: "POST", path: v3 + "/register", body: j(map[string]any{"username": badBigStr, "password": "pw-pw-pw-1", "auth": map[string]any{"type": "m.login.dummy"}}), status: 400},
			badCase{name: "register/username-sigil", method: "POST", path: v3 + "/register", body: j(map[string]any{"username": "!room:" + hs, "password": "pw-pw-pw-1", "auth": map[string]any{"type": "m.login.dummy"}}), status: 400, codes: []string{"M_INVALID_USERNAME"}},
			badCase{name: "register/taken", method: "POST", path: v3 + "/register", body: j(map[string]any{"username": "alice", "password": "pw-pw-pw-1", "auth": map[string]any{"type": "m.login.dummy"}}), status: 400, codes: []string{"M_USER_IN_USE"}},
			badCase{name: "register/available-sigil", method: "GET", path: v3 + "/register/available?username=" + url.QueryEscape("!x:"+hs), status: 400, codes: []string{"M_INVALID_USERNAME"}},
		)
		add(bodyCases("login", "POST", v3+"/login", "")...)
		add(
			badCase{name: "login/type-number", method: "POST", path: v3 + "/login", body: j(map[string]any{"type": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "login/missing-type", method: "POST", path: v3 + "/login", body: j(map[string]any{"password": "x"}), status: 400, codes: []string{"M_MISSING_PARAM", "M_BAD_JSON", "M_UNKNOWN", "M_INVALID_PARAM"}},
			badCase{name: "login/unknown-type", method: "POST", path: v3 + "/login", body: j(map[string]any{"type": "m.login.nonsense"}), status: 400},
			badCase{name: "login/identifier-array", method: "POST", path: v3 + "/login", body: j(map[string]any{"type": "m.login.password", "identifier": []any{1}, "password": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "login/unknown-user", method: "POST", path: v3 + "/login", body: j(acctPasswordAuth("nosuchuser", "x")), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "login/room-id-as-user", method: "POST", path: v3 + "/login", body: j(acctPasswordAuth(roomID, "x")), status: 0},
			badCase{name: "login/huge-password", method: "POST", path: v3 + "/login", body: j(acctPasswordAuth("alice", badBigStr)), status: 0},
			badCase{name: "refresh/number", method: "POST", path: v3 + "/refresh", body: j(map[string]any{"refresh_token": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "refresh/unknown", method: "POST", path: v3 + "/refresh", body: j(map[string]any{"refresh_token": "nope"}), status: 401, codes: []string{"M_UNKNOWN_TOKEN"}},
		)

		// Account: password and deactivation (carol, so a wrongly accepted request cannot
		// take the fixtures' owner with it).
		add(bodyCases("password", "POST", v3+"/account/password", carol)...)
		add(
			badCase{name: "password/new-number", method: "POST", path: v3 + "/account/password", token: carol, body: j(map[string]any{"new_password": 5, "auth": acctPasswordAuth("carol", "carol-password-1")}), status: 400, codes: badJSONCodes},
			badCase{name: "password/missing-new", method: "POST", path: v3 + "/account/password", token: carol, body: j(map[string]any{"auth": acctPasswordAuth("carol", "carol-password-1")}), status: 400, codes: badMissing, uia: true},
			badCase{name: "password/auth-wrong-user", method: "POST", path: v3 + "/account/password", token: carol, body: j(map[string]any{"new_password": "zzz-zzz-1", "auth": acctPasswordAuth("alice", "alice-password-1")}), status: 0, uia: true},
		)
		add(bodyCases("deactivate", "POST", v3+"/account/deactivate", carol)...)
		add(
			badCase{name: "deactivate/erase-string", method: "POST", path: v3 + "/account/deactivate", token: carol, body: j(map[string]any{"erase": "yes", "auth": acctPasswordAuth("carol", "carol-password-1")}), status: 400, codes: badJSONCodes},
			badCase{name: "deactivate/auth-array", method: "POST", path: v3 + "/account/deactivate", token: carol, body: j(map[string]any{"auth": []any{}}), status: 400, codes: badJSONCodes},
			badCase{name: "deactivate/wrong-password", method: "POST", path: v3 + "/account/deactivate", token: carol, body: j(map[string]any{"auth": acctPasswordAuth("carol", "wrong")}), status: 0, uia: true},
		)

		// Devices.
		dev := v3 + "/devices/" + url.PathEscape(aliceDevice)
		add(bodyCases("devices/put", "PUT", dev, alice)...)
		add(
			badCase{name: "devices/name-number", method: "PUT", path: dev, token: alice, body: j(map[string]any{"display_name": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "devices/name-huge", method: "PUT", path: dev, token: alice, body: j(map[string]any{"display_name": badBigStr}), status: 0},
			badCase{name: "devices/put-unknown", method: "PUT", path: v3 + "/devices/NOSUCHDEVICE", token: alice, body: j(map[string]any{"display_name": "x"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "devices/get-unknown", method: "GET", path: v3 + "/devices/NOSUCHDEVICE", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "devices/delete-unknown", method: "DELETE", path: v3 + "/devices/NOSUCHDEVICE", token: alice, body: j(map[string]any{"auth": acctPasswordAuth("alice", "alice-password-1")}), status: 404, codes: []string{"M_NOT_FOUND"}, uia: true},
			badCase{name: "devices/others-device", method: "GET", path: v3 + "/devices/" + url.PathEscape(aliceDevice), token: bob, status: 404, codes: []string{"M_NOT_FOUND"}},
		)
		add(bodyCases("delete_devices", "POST", v3+"/delete_devices", alice)...)
		add(
			badCase{name: "delete_devices/string", method: "POST", path: v3 + "/delete_devices", token: alice, body: j(map[string]any{"devices": "ABC"}), status: 400, codes: badJSONCodes},
			badCase{name: "delete_devices/missing", method: "POST", path: v3 + "/delete_devices", token: alice, body: j(map[string]any{"auth": acctPasswordAuth("alice", "alice-password-1")}), status: 400, codes: badMissing, uia: true},
		)

		// Profile.
		dn := v3 + "/profile/" + aliceID + "/displayname"
		add(bodyCases("profile", "PUT", dn, alice)...)
		add(
			badCase{name: "profile/number", method: "PUT", path: dn, token: alice, body: j(map[string]any{"displayname": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "profile/avatar-object", method: "PUT", path: v3 + "/profile/" + aliceID + "/avatar_url", token: alice, body: j(map[string]any{"avatar_url": map[string]any{}}), status: 400, codes: badJSONCodes},
			badCase{name: "profile/missing", method: "PUT", path: dn, token: alice, body: j(map[string]any{}), status: 400, codes: badMissing},
			badCase{name: "profile/huge", method: "PUT", path: dn, token: alice, body: j(map[string]any{"displayname": badBigStr}), status: 0},
			badCase{name: "profile/other-user", method: "PUT", path: v3 + "/profile/" + bobID + "/displayname", token: alice, body: j(map[string]any{"displayname": "x"}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "profile/unknown-user", method: "GET", path: v3 + "/profile/@nosuchuser:" + hs, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "profile/room-id", method: "GET", path: v3 + "/profile/" + roomAsUser, token: alice, status: 0},
			badCase{name: "profile/put-room-id", method: "PUT", path: v3 + "/profile/" + roomAsUser + "/displayname", token: alice, body: j(map[string]any{"displayname": "x"}), status: 0},
		)

		// Account data.
		ad := v3 + "/user/" + aliceID + "/account_data/org.example.other"
		radata := v3 + "/user/" + aliceID + "/rooms/" + room + "/account_data/org.example.other"
		add(bodyCases("account_data", "PUT", ad, alice)...)
		add(bodyCases("room_account_data", "PUT", radata, alice)...)
		add(
			badCase{name: "account_data/other-user", method: "PUT", path: v3 + "/user/" + bobID + "/account_data/org.example.other", token: alice, body: j(map[string]any{"v": 1}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "account_data/room-as-user", method: "PUT", path: v3 + "/user/" + roomAsUser + "/account_data/org.example.other", token: alice, body: j(map[string]any{"v": 1}), status: 0},
			badCase{name: "account_data/unknown-type", method: "GET", path: ad, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "account_data/push-rules", method: "PUT", path: v3 + "/user/" + aliceID + "/account_data/m.push_rules", token: alice, body: j(map[string]any{"global": map[string]any{}}), status: 405, codes: []string{"M_BAD_JSON"}},
			badCase{name: "room_account_data/user-as-room", method: "PUT", path: v3 + "/user/" + aliceID + "/rooms/" + userAsRoom + "/account_data/org.example.other", token: alice, body: j(map[string]any{"v": 1}), status: 0},
			badCase{name: "room_account_data/fully-read", method: "PUT", path: v3 + "/user/" + aliceID + "/rooms/" + room + "/account_data/m.fully_read", token: alice, body: j(map[string]any{"event_id": eventID}), status: 405, codes: []string{"M_BAD_JSON"}},
		)

		// Filters.
		fp := v3 + "/user/" + aliceID + "/filter"
		add(bodyCases("filter", "POST", fp, alice)...)
		add(
			badCase{name: "filter/room-string", method: "POST", path: fp, token: alice, body: j(map[string]any{"room": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "filter/limit-string", method: "POST", path: fp, token: alice, body: j(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}}), status: 400, codes: badJSONCodes},
			badCase{name: "filter/event-fields-number", method: "POST", path: fp, token: alice, body: j(map[string]any{"event_fields": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "filter/other-user", method: "POST", path: v3 + "/user/" + bobID + "/filter", token: alice, body: j(map[string]any{}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "filter/room-as-user", method: "POST", path: v3 + "/user/" + roomAsUser + "/filter", token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "filter/unknown", method: "GET", path: fp + "/987654", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "filter/non-numeric", method: "GET", path: fp + "/abc", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "filter/others", method: "GET", path: v3 + "/user/" + bobID + "/filter/" + filterID, token: alice, status: 403, codes: []string{"M_FORBIDDEN"}},
		)

		// Rooms: createRoom.
		add(bodyCases("createRoom", "POST", v3+"/createRoom", alice)...)
		cr := func(name string, req map[string]any, status int, codes []string) badCase {
			return badCase{name: "createRoom/" + name, method: "POST", path: v3 + "/createRoom", token: alice, body: j(req), status: status, codes: codes}
		}
		add(
			cr("name-number", map[string]any{"name": 5}, 400, badJSONCodes),
			cr("invite-string", map[string]any{"invite": "@bob:" + hs}, 400, badJSONCodes),
			cr("invite-room-id", map[string]any{"invite": []string{roomID}}, 400, nil),
			cr("visibility", map[string]any{"visibility": "secret"}, 400, nil),
			cr("preset", map[string]any{"preset": "nonsense"}, 400, nil),
			cr("room-version", map[string]any{"room_version": "999"}, 400, []string{"M_UNSUPPORTED_ROOM_VERSION"}),
			cr("initial-state-object", map[string]any{"initial_state": map[string]any{}}, 400, badJSONCodes),
			cr("initial-state-missing-type", map[string]any{"initial_state": []any{map[string]any{"content": map[string]any{}}}}, 400, nil),
			cr("creation-content-number", map[string]any{"creation_content": 5}, 400, badJSONCodes),
			cr("power-levels-string", map[string]any{"power_level_content_override": "x"}, 400, badJSONCodes),
			cr("alias-taken", map[string]any{"room_alias_name": "badinput"}, 400, []string{"M_ROOM_IN_USE"}),
			cr("huge-name", map[string]any{"name": badBigStr}, 0, nil),
		)

		// Rooms: send, state.
		send := v3 + "/rooms/" + room + "/send/m.room.message/"
		add(bodyCases("send", "PUT", send+"badtxn", alice)...)
		add(
			badCase{name: "send/huge", method: "PUT", path: send + "hugetxn", token: alice, body: j(map[string]any{"msgtype": "m.text", "body": badBigStr}), status: 0},
			badCase{name: "send/unknown-room", method: "PUT", path: v3 + "/rooms/" + badRoom + "/send/m.room.message/t1", token: alice, body: j(map[string]any{"body": "x"}), status: 0},
			badCase{name: "send/user-as-room", method: "PUT", path: v3 + "/rooms/" + userAsRoom + "/send/m.room.message/t2", token: alice, body: j(map[string]any{"body": "x"}), status: 0},
			badCase{name: "send/not-member", method: "PUT", path: send + "t3", token: carol, body: j(map[string]any{"body": "x"}), status: 403, codes: []string{"M_FORBIDDEN"}},
		)
		st := v3 + "/rooms/" + room + "/state/m.room.topic/"
		add(bodyCases("state", "PUT", st, alice)...)
		add(
			badCase{name: "state/huge", method: "PUT", path: st, token: alice, body: j(map[string]any{"topic": badBigStr}), status: 0},
			badCase{name: "state/power-levels-bad", method: "PUT", path: v3 + "/rooms/" + room + "/state/m.room.power_levels/", token: alice, body: j(map[string]any{"users": "everyone"}), status: 0},
			badCase{name: "state/unknown-room", method: "PUT", path: v3 + "/rooms/" + badRoom + "/state/m.room.topic/", token: alice, body: j(map[string]any{"topic": "x"}), status: 0},
			badCase{name: "state/user-as-room", method: "PUT", path: v3 + "/rooms/" + userAsRoom + "/state/m.room.topic/", token: alice, body: j(map[string]any{"topic": "x"}), status: 0},
			badCase{name: "state/not-member", method: "PUT", path: st, token: carol, body: j(map[string]any{"topic": "x"}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "state/get-unknown-type", method: "GET", path: v3 + "/rooms/" + room + "/state/org.example.none/", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "state/get-unknown-room", method: "GET", path: v3 + "/rooms/" + badRoom + "/state", token: alice, status: 0},
			badCase{name: "state/get-user-as-room", method: "GET", path: v3 + "/rooms/" + userAsRoom + "/state", token: alice, status: 0},
			badCase{name: "state/get-not-member", method: "GET", path: v3 + "/rooms/" + room + "/state", token: carol, status: 403, codes: []string{"M_FORBIDDEN"}},
		)

		// Rooms: membership.
		for _, m := range []string{"invite", "kick", "ban", "unban"} {
			p := v3 + "/rooms/" + room + "/" + m
			add(bodyCases(m, "POST", p, alice)...)
			add(
				badCase{name: m + "/user-number", method: "POST", path: p, token: alice, body: j(map[string]any{"user_id": 5}), status: 400, codes: badJSONCodes},
				badCase{name: m + "/missing-user", method: "POST", path: p, token: alice, body: j(map[string]any{"reason": "x"}), status: 400, codes: badMissing},
				badCase{name: m + "/room-as-user", method: "POST", path: p, token: alice, body: j(map[string]any{"user_id": roomID}), status: 400},
				badCase{name: m + "/reason-number", method: "POST", path: p, token: alice, body: j(map[string]any{"user_id": bobID, "reason": 5}), status: 400, codes: badJSONCodes},
				badCase{name: m + "/unknown-room", method: "POST", path: v3 + "/rooms/" + badRoom + "/" + m, token: alice, body: j(map[string]any{"user_id": bobID}), status: 0},
				badCase{name: m + "/user-as-room", method: "POST", path: v3 + "/rooms/" + userAsRoom + "/" + m, token: alice, body: j(map[string]any{"user_id": bobID}), status: 0},
			)
		}
		add(
			badCase{name: "kick/not-member", method: "POST", path: v3 + "/rooms/" + room + "/kick", token: alice, body: j(map[string]any{"user_id": "@carol:" + hs}), status: 403},
			badCase{name: "join/unknown-room", method: "POST", path: v3 + "/join/" + badRoom, token: carol, body: j(map[string]any{}), status: 0},
			badCase{name: "join/unknown-alias", method: "POST", path: v3 + "/join/" + url.PathEscape("#nosuch:"+hs), token: carol, body: j(map[string]any{}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "join/user-id", method: "POST", path: v3 + "/join/" + userAsRoom, token: carol, body: j(map[string]any{}), status: 400},
			badCase{name: "join/not-json", method: "POST", path: v3 + "/join/" + room, token: carol, body: badNotJSONRaw, status: 400, codes: badNotJSON},
			badCase{name: "join/reason-number", method: "POST", path: v3 + "/rooms/" + room + "/join", token: carol, body: j(map[string]any{"reason": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "join/user-as-room", method: "POST", path: v3 + "/rooms/" + userAsRoom + "/join", token: carol, body: j(map[string]any{}), status: 0},
			badCase{name: "knock/unknown-room", method: "POST", path: v3 + "/knock/" + badRoom, token: carol, body: j(map[string]any{}), status: 0},
			badCase{name: "leave/unknown-room", method: "POST", path: v3 + "/rooms/" + badRoom + "/leave", token: carol, body: j(map[string]any{}), status: 0},
			badCase{name: "leave/not-json", method: "POST", path: v3 + "/rooms/" + room + "/leave", token: carol, body: badNotJSONRaw, status: 400, codes: badNotJSON},
			badCase{name: "leave/user-as-room", method: "POST", path: v3 + "/rooms/" + userAsRoom + "/leave", token: carol, body: j(map[string]any{}), status: 0},
			badCase{name: "forget/joined", method: "POST", path: v3 + "/rooms/" + room + "/forget", token: alice, body: j(map[string]any{}), status: 400},
			badCase{name: "forget/user-as-room", method: "POST", path: v3 + "/rooms/" + userAsRoom + "/forget", token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "members/unknown-room", method: "GET", path: v3 + "/rooms/" + badRoom + "/members", token: alice, status: 0},
			badCase{name: "members/not-member", method: "GET", path: v3 + "/rooms/" + room + "/members", token: carol, status: 403},
			badCase{name: "joined_members/user-as-room", method: "GET", path: v3 + "/rooms/" + userAsRoom + "/joined_members", token: alice, status: 0},
		)

		// Rooms: messages, context, event, redact, report.
		msgs := v3 + "/rooms/" + room + "/messages"
		add(
			badCase{name: "messages/bad-from", method: "GET", path: msgs + "?dir=b&from=garbage", token: alice, status: 400},
			badCase{name: "messages/bad-dir", method: "GET", path: msgs + "?dir=sideways", token: alice, status: 400},
			badCase{name: "messages/bad-limit", method: "GET", path: msgs + "?dir=b&limit=ten", token: alice, status: 400},
			badCase{name: "messages/bad-filter", method: "GET", path: msgs + "?dir=b&filter=" + url.QueryEscape("{not json"), token: alice, status: 400},
			badCase{name: "messages/filter-wrong-type", method: "GET", path: msgs + "?dir=b&filter=" + url.QueryEscape(`{"limit":"x"}`), token: alice, status: 400},
			badCase{name: "messages/unknown-room", method: "GET", path: v3 + "/rooms/" + badRoom + "/messages?dir=b", token: alice, status: 0},
			badCase{name: "messages/user-as-room", method: "GET", path: v3 + "/rooms/" + userAsRoom + "/messages?dir=b", token: alice, status: 0},
			badCase{name: "messages/not-member", method: "GET", path: msgs + "?dir=b", token: carol, status: 403},
			badCase{name: "context/unknown-event", method: "GET", path: v3 + "/rooms/" + room + "/context/" + badEvent, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "context/room-as-event", method: "GET", path: v3 + "/rooms/" + room + "/context/" + room, token: alice, status: 0},
			badCase{name: "context/bad-limit", method: "GET", path: v3 + "/rooms/" + room + "/context/" + ev + "?limit=x", token: alice, status: 400},
			badCase{name: "context/bad-filter", method: "GET", path: v3 + "/rooms/" + room + "/context/" + ev + "?filter=" + url.QueryEscape("[1"), token: alice, status: 400},
			badCase{name: "context/wrong-room", method: "GET", path: v3 + "/rooms/" + badRoom + "/context/" + ev, token: alice, status: 0},
			badCase{name: "event/unknown", method: "GET", path: v3 + "/rooms/" + room + "/event/" + badEvent, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "event/user-as-room", method: "GET", path: v3 + "/rooms/" + userAsRoom + "/event/" + ev, token: alice, status: 0},
		)
		rd := v3 + "/rooms/" + room + "/redact/" + ev + "/"
		add(bodyCases("redact", "PUT", rd+"rtxn", alice)...)
		add(
			badCase{name: "redact/reason-number", method: "PUT", path: rd + "r1", token: alice, body: j(map[string]any{"reason": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "redact/huge-reason", method: "PUT", path: rd + "r2", token: alice, body: j(map[string]any{"reason": badBigStr}), status: 0},
			badCase{name: "redact/unknown-room", method: "PUT", path: v3 + "/rooms/" + badRoom + "/redact/" + ev + "/r3", token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "redact/user-as-room", method: "PUT", path: v3 + "/rooms/" + userAsRoom + "/redact/" + ev + "/r4", token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "redact/not-member", method: "PUT", path: rd + "r5", token: carol, body: j(map[string]any{}), status: 403},
		)
		rp := v3 + "/rooms/" + room + "/report/" + ev
		add(bodyCases("report", "POST", rp, alice)...)
		add(
			badCase{name: "report/score-string", method: "POST", path: rp, token: alice, body: j(map[string]any{"score": "bad", "reason": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "report/reason-number", method: "POST", path: rp, token: alice, body: j(map[string]any{"reason": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "report/unknown-event", method: "POST", path: v3 + "/rooms/" + room + "/report/" + badEvent, token: alice, body: j(map[string]any{"reason": "x"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "report/unknown-room", method: "POST", path: v3 + "/rooms/" + badRoom + "/report/" + ev, token: alice, body: j(map[string]any{"reason": "x"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "report/not-member", method: "POST", path: rp, token: carol, body: j(map[string]any{"reason": "x"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "report-room/unknown", method: "POST", path: v3 + "/rooms/" + badRoom + "/report", token: alice, body: j(map[string]any{"reason": "x"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "report-room/reason-number", method: "POST", path: v3 + "/rooms/" + room + "/report", token: alice, body: j(map[string]any{"reason": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "report-room/not-json", method: "POST", path: v3 + "/rooms/" + room + "/report", token: alice, body: badNotJSONRaw, status: 400, codes: badNotJSON},
		)

		// Directory, aliases, public rooms.
		newAlias := v3 + "/directory/room/" + url.PathEscape("#fresh:"+hs)
		add(bodyCases("alias", "PUT", newAlias, alice)...)
		add(
			badCase{name: "alias/room-number", method: "PUT", path: newAlias, token: alice, body: j(map[string]any{"room_id": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "alias/missing-room", method: "PUT", path: newAlias, token: alice, body: j(map[string]any{}), status: 400, codes: badMissing},
			badCase{name: "alias/user-as-room", method: "PUT", path: newAlias, token: alice, body: j(map[string]any{"room_id": aliceID}), status: 0},
			badCase{name: "alias/unknown-room", method: "PUT", path: newAlias, token: alice, body: j(map[string]any{"room_id": bad}), status: 0},
			badCase{name: "alias/taken", method: "PUT", path: v3 + "/directory/room/" + alias, token: alice, body: j(map[string]any{"room_id": roomID}), status: 409, codes: []string{"M_UNKNOWN"}},
			badCase{name: "alias/room-id-as-alias", method: "PUT", path: v3 + "/directory/room/" + room, token: alice, body: j(map[string]any{"room_id": roomID}), status: 400},
			badCase{name: "alias/other-server", method: "PUT", path: v3 + "/directory/room/" + url.PathEscape("#x:other.test"), token: alice, body: j(map[string]any{"room_id": roomID}), status: 0},
			badCase{name: "alias/huge", method: "PUT", path: v3 + "/directory/room/" + url.PathEscape("#"+strings.Repeat("a", 300)+":"+hs), token: alice, body: j(map[string]any{"room_id": roomID}), status: 400},
			badCase{name: "alias/get-unknown", method: "GET", path: v3 + "/directory/room/" + url.PathEscape("#nosuch:"+hs), token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "alias/get-user-id", method: "GET", path: v3 + "/directory/room/" + url.PathEscape(aliceID), token: alice, status: 400},
			badCase{name: "alias/delete-unknown", method: "DELETE", path: v3 + "/directory/room/" + url.PathEscape("#nosuch:"+hs), token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "alias/delete-not-creator", method: "DELETE", path: v3 + "/directory/room/" + alias, token: carol, status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "aliases/user-as-room", method: "GET", path: v3 + "/rooms/" + userAsRoom + "/aliases", token: alice, status: 0},
			badCase{name: "aliases/not-member", method: "GET", path: v3 + "/rooms/" + room + "/aliases", token: carol, status: 403},
		)
		vis := v3 + "/directory/list/room/" + room
		add(bodyCases("visibility", "PUT", vis, alice)...)
		add(
			badCase{name: "visibility/bad-value", method: "PUT", path: vis, token: alice, body: j(map[string]any{"visibility": "secret"}), status: 400},
			badCase{name: "visibility/number", method: "PUT", path: vis, token: alice, body: j(map[string]any{"visibility": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "visibility/unknown-room", method: "PUT", path: v3 + "/directory/list/room/" + badRoom, token: alice, body: j(map[string]any{"visibility": "public"}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "visibility/get-unknown-room", method: "GET", path: v3 + "/directory/list/room/" + badRoom, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "visibility/user-as-room", method: "PUT", path: v3 + "/directory/list/room/" + userAsRoom, token: alice, body: j(map[string]any{"visibility": "public"}), status: 0},
			badCase{name: "visibility/not-allowed", method: "PUT", path: vis, token: carol, body: j(map[string]any{"visibility": "public"}), status: 403, codes: []string{"M_FORBIDDEN"}},
		)
		add(bodyCases("publicRooms", "POST", v3+"/publicRooms", alice)...)
		add(
			badCase{name: "publicRooms/limit-string", method: "POST", path: v3 + "/publicRooms", token: alice, body: j(map[string]any{"limit": "ten"}), status: 400, codes: badJSONCodes},
			badCase{name: "publicRooms/filter-string", method: "POST", path: v3 + "/publicRooms", token: alice, body: j(map[string]any{"filter": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "publicRooms/bad-since", method: "POST", path: v3 + "/publicRooms", token: alice, body: j(map[string]any{"since": "garbage"}), status: 400},
			badCase{name: "publicRooms/get-bad-since", method: "GET", path: v3 + "/publicRooms?since=garbage", token: alice, status: 400},
			badCase{name: "publicRooms/get-bad-limit", method: "GET", path: v3 + "/publicRooms?limit=ten", token: alice, status: 400},
		)

		// Tags.
		tag := v3 + "/user/" + aliceID + "/rooms/" + room + "/tags/u.new"
		add(bodyCases("tags", "PUT", tag, alice)...)
		add(
			badCase{name: "tags/order-string", method: "PUT", path: tag, token: alice, body: j(map[string]any{"order": "high"}), status: 400, codes: badJSONCodes},
			badCase{name: "tags/other-user", method: "PUT", path: v3 + "/user/" + bobID + "/rooms/" + room + "/tags/u.new", token: alice, body: j(map[string]any{}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "tags/user-as-room", method: "PUT", path: v3 + "/user/" + aliceID + "/rooms/" + userAsRoom + "/tags/u.new", token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "tags/huge", method: "PUT", path: v3 + "/user/" + aliceID + "/rooms/" + room + "/tags/" + strings.Repeat("t", 600), token: alice, body: j(map[string]any{}), status: 400},
			badCase{name: "tags/get-other-user", method: "GET", path: v3 + "/user/" + bobID + "/rooms/" + room + "/tags", token: alice, status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "tags/delete-other-user", method: "DELETE", path: v3 + "/user/" + bobID + "/rooms/" + room + "/tags/u.work", token: alice, status: 403, codes: []string{"M_FORBIDDEN"}},
		)

		// Receipts, typing, read markers, presence.
		rcpt := v3 + "/rooms/" + room + "/receipt/m.read/" + ev
		add(bodyCases("receipt", "POST", rcpt, alice)...)
		add(
			badCase{name: "receipt/thread-number", method: "POST", path: rcpt, token: alice, body: j(map[string]any{"thread_id": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "receipt/bad-type", method: "POST", path: v3 + "/rooms/" + room + "/receipt/m.nonsense/" + ev, token: alice, body: j(map[string]any{}), status: 400},
			badCase{name: "receipt/unknown-event", method: "POST", path: v3 + "/rooms/" + room + "/receipt/m.read/" + badEvent, token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "receipt/room-as-event", method: "POST", path: v3 + "/rooms/" + room + "/receipt/m.read/" + room, token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "receipt/unknown-room", method: "POST", path: v3 + "/rooms/" + badRoom + "/receipt/m.read/" + ev, token: alice, body: j(map[string]any{}), status: 0},
			badCase{name: "receipt/not-member", method: "POST", path: rcpt, token: carol, body: j(map[string]any{}), status: 403},
		)
		typ := v3 + "/rooms/" + room + "/typing/" + aliceID
		add(bodyCases("typing", "PUT", typ, alice)...)
		add(
			badCase{name: "typing/string", method: "PUT", path: typ, token: alice, body: j(map[string]any{"typing": "yes"}), status: 400, codes: badJSONCodes},
			badCase{name: "typing/missing", method: "PUT", path: typ, token: alice, body: j(map[string]any{}), status: 400, codes: badMissing},
			badCase{name: "typing/timeout-string", method: "PUT", path: typ, token: alice, body: j(map[string]any{"typing": true, "timeout": "long"}), status: 400, codes: badJSONCodes},
			badCase{name: "typing/other-user", method: "PUT", path: v3 + "/rooms/" + room + "/typing/" + bobID, token: alice, body: j(map[string]any{"typing": true}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "typing/room-as-user", method: "PUT", path: v3 + "/rooms/" + room + "/typing/" + roomAsUser, token: alice, body: j(map[string]any{"typing": true}), status: 0},
			badCase{name: "typing/unknown-room", method: "PUT", path: v3 + "/rooms/" + badRoom + "/typing/" + aliceID, token: alice, body: j(map[string]any{"typing": true}), status: 0},
			badCase{name: "typing/not-member", method: "PUT", path: v3 + "/rooms/" + room + "/typing/@carol:" + hs, token: carol, body: j(map[string]any{"typing": true}), status: 403},
		)
		rm := v3 + "/rooms/" + room + "/read_markers"
		add(bodyCases("read_markers", "POST", rm, alice)...)
		add(
			badCase{name: "read_markers/number", method: "POST", path: rm, token: alice, body: j(map[string]any{"m.fully_read": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "read_markers/unknown-event", method: "POST", path: rm, token: alice, body: j(map[string]any{"m.fully_read": "$nosuchevent"}), status: 0},
			badCase{name: "read_markers/room-as-event", method: "POST", path: rm, token: alice, body: j(map[string]any{"m.fully_read": roomID}), status: 0},
			badCase{name: "read_markers/unknown-room", method: "POST", path: v3 + "/rooms/" + badRoom + "/read_markers", token: alice, body: j(map[string]any{"m.fully_read": eventID}), status: 0},
			badCase{name: "read_markers/not-member", method: "POST", path: rm, token: carol, body: j(map[string]any{"m.fully_read": eventID}), status: 403},
		)
		pres := v3 + "/presence/" + aliceID + "/status"
		add(bodyCases("presence", "PUT", pres, alice)...)
		add(
			badCase{name: "presence/bad-value", method: "PUT", path: pres, token: alice, body: j(map[string]any{"presence": "asleep"}), status: 400},
			badCase{name: "presence/missing", method: "PUT", path: pres, token: alice, body: j(map[string]any{"status_msg": "x"}), status: 400, codes: badMissing},
			badCase{name: "presence/status-number", method: "PUT", path: pres, token: alice, body: j(map[string]any{"presence": "online", "status_msg": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "presence/other-user", method: "PUT", path: v3 + "/presence/" + bobID + "/status", token: alice, body: j(map[string]any{"presence": "online"}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "presence/get-unknown-user", method: "GET", path: v3 + "/presence/@nosuchuser:" + hs + "/status", token: alice, status: 0},
			badCase{name: "presence/get-room-as-user", method: "GET", path: v3 + "/presence/" + roomAsUser + "/status", token: alice, status: 0},
		)

		// Sync.
		add(
			badCase{name: "sync/bad-since", method: "GET", path: v3 + "/sync?timeout=0&since=garbage", token: alice, status: 400},
			badCase{name: "sync/unknown-filter", method: "GET", path: v3 + "/sync?timeout=0&filter=987654", token: alice, status: 0},
			badCase{name: "sync/bad-filter-json", method: "GET", path: v3 + "/sync?timeout=0&filter=" + url.QueryEscape("{not json"), token: alice, status: 400},
			badCase{name: "sync/filter-wrong-type", method: "GET", path: v3 + "/sync?timeout=0&filter=" + url.QueryEscape(`{"room":"x"}`), token: alice, status: 400},
			badCase{name: "sync/bad-timeout", method: "GET", path: v3 + "/sync?timeout=soon", token: alice, status: 400},
			badCase{name: "sync/bad-set-presence", method: "GET", path: v3 + "/sync?timeout=0&set_presence=asleep", token: alice, status: 400},
		)

		// Push rules and pushers.
		pr := v3 + "/pushrules/global/override/org.example.rule"
		add(bodyCases("pushrules", "PUT", pr, alice)...)
		add(
			badCase{name: "pushrules/actions-string", method: "PUT", path: pr, token: alice, body: j(map[string]any{"actions": "notify"}), status: 400, codes: badJSONCodes},
			badCase{name: "pushrules/missing-actions", method: "PUT", path: pr, token: alice, body: j(map[string]any{"conditions": []any{}}), status: 400, codes: badMissing},
			badCase{name: "pushrules/conditions-object", method: "PUT", path: pr, token: alice, body: j(map[string]any{"actions": []any{"notify"}, "conditions": map[string]any{}}), status: 400, codes: badJSONCodes},
			badCase{name: "pushrules/content-missing-pattern", method: "PUT", path: v3 + "/pushrules/global/content/org.example.rule", token: alice, body: j(map[string]any{"actions": []any{"notify"}}), status: 400},
			badCase{name: "pushrules/bad-kind", method: "PUT", path: v3 + "/pushrules/global/nonsense/org.example.rule", token: alice, body: j(map[string]any{"actions": []any{"notify"}}), status: 400},
			badCase{name: "pushrules/bad-scope", method: "PUT", path: v3 + "/pushrules/device/override/org.example.rule", token: alice, body: j(map[string]any{"actions": []any{"notify"}}), status: 400},
			badCase{name: "pushrules/before-unknown", method: "PUT", path: pr + "?before=org.example.nosuch", token: alice, body: j(map[string]any{"actions": []any{"notify"}}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "pushrules/get-unknown", method: "GET", path: pr, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "pushrules/delete-unknown", method: "DELETE", path: pr, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "pushrules/enabled-string", method: "PUT", path: v3 + "/pushrules/global/override/.m.rule.master/enabled", token: alice, body: j(map[string]any{"enabled": "yes"}), status: 400, codes: badJSONCodes},
			badCase{name: "pushrules/enabled-missing", method: "PUT", path: v3 + "/pushrules/global/override/.m.rule.master/enabled", token: alice, body: j(map[string]any{}), status: 400, codes: badMissing},
			badCase{name: "pushrules/actions-attr-unknown", method: "PUT", path: pr + "/actions", token: alice, body: j(map[string]any{"actions": []any{"notify"}}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "pushrules/enabled-not-json", method: "PUT", path: v3 + "/pushrules/global/override/.m.rule.master/enabled", token: alice, body: badNotJSONRaw, status: 400, codes: badNotJSON},
		)
		add(bodyCases("pushers", "POST", v3+"/pushers/set", alice)...)
		pusher := func(name string, req map[string]any, codes []string) badCase {
			return badCase{name: "pushers/" + name, method: "POST", path: v3 + "/pushers/set", token: alice, body: j(req), status: 400, codes: codes}
		}
		full := func(over map[string]any) map[string]any {
			m := map[string]any{"pushkey": "pk", "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
				"device_display_name": "Dev", "lang": "en", "data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify"}}
			for k, v := range over {
				if v == nil {
					delete(m, k)
				} else {
					m[k] = v
				}
			}
			return m
		}
		add(
			pusher("kind-number", full(map[string]any{"kind": 5}), badJSONCodes),
			pusher("missing-pushkey", full(map[string]any{"pushkey": nil}), badMissing),
			pusher("missing-app-id", full(map[string]any{"app_id": nil}), badMissing),
			pusher("data-string", full(map[string]any{"data": "x"}), badJSONCodes),
			pusher("http-missing-url", full(map[string]any{"data": map[string]any{}}), nil),
			pusher("http-bad-url", full(map[string]any{"data": map[string]any{"url": "not a url"}}), nil),
			pusher("huge-pushkey", full(map[string]any{"pushkey": strings.Repeat("k", 1000)}), nil),
		)

		// Keys: upload, query, claim, cross-signing, backup.
		add(bodyCases("keys/upload", "POST", v3+"/keys/upload", alice)...)
		add(bodyCases("keys/query", "POST", v3+"/keys/query", alice)...)
		add(bodyCases("keys/claim", "POST", v3+"/keys/claim", alice)...)
		add(bodyCases("keys/device_signing", "POST", v3+"/keys/device_signing/upload", alice)...)
		add(bodyCases("keys/signatures", "POST", v3+"/keys/signatures/upload", alice)...)
		kp := func(name, path string, req any, status int, codes []string) badCase {
			return badCase{name: "keys/" + name, method: "POST", path: v3 + path, token: alice, body: j(req), status: status, codes: codes}
		}
		add(
			kp("upload-device-keys-string", "/keys/upload", map[string]any{"device_keys": "x"}, 400, badJSONCodes),
			kp("upload-otk-array", "/keys/upload", map[string]any{"one_time_keys": []any{1}}, 400, badJSONCodes),
			kp("upload-device-keys-other-user", "/keys/upload", map[string]any{"device_keys": map[string]any{
				"user_id": bobID, "device_id": aliceDevice, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
				"keys": map[string]any{"ed25519:" + aliceDevice: "abc"}, "signatures": map[string]any{}}}, 400, nil),
			kp("upload-device-keys-missing-keys", "/keys/upload", map[string]any{"device_keys": map[string]any{
				"user_id": aliceID, "device_id": aliceDevice}}, 400, nil),
			kp("upload-otk-huge", "/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:AAAA": badBigStr}}, 0, nil),
			kp("query-string", "/keys/query", map[string]any{"device_keys": "x"}, 400, badJSONCodes),
			kp("query-device-list-string", "/keys/query", map[string]any{"device_keys": map[string]any{aliceID: "x"}}, 400, badJSONCodes),
			kp("query-room-as-user", "/keys/query", map[string]any{"device_keys": map[string]any{roomID: []string{}}}, 400, nil),
			kp("query-timeout-string", "/keys/query", map[string]any{"device_keys": map[string]any{}, "timeout": "x"}, 400, badJSONCodes),
			kp("claim-number", "/keys/claim", map[string]any{"one_time_keys": 5}, 400, badJSONCodes),
			kp("claim-algorithm-number", "/keys/claim", map[string]any{"one_time_keys": map[string]any{aliceID: map[string]any{aliceDevice: 5}}}, 400, badJSONCodes),
			kp("claim-missing", "/keys/claim", map[string]any{}, 400, badMissing),
			kp("claim-room-as-user", "/keys/claim", map[string]any{"one_time_keys": map[string]any{roomID: map[string]any{"DEV": "signed_curve25519"}}}, 400, nil),
			kp("signatures-string", "/keys/signatures/upload", map[string]any{aliceID: "x"}, 400, badJSONCodes),
			kp("device-signing-master-string", "/keys/device_signing/upload", map[string]any{"master_key": "x", "auth": acctPasswordAuth("alice", "alice-password-1")}, 400, badJSONCodes),
			kp("device-signing-master-other-user", "/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
				"user_id": bobID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:abc": "abc"}}, "auth": acctPasswordAuth("alice", "alice-password-1")}, 400, nil),
			kp("device-signing-bad-usage", "/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
				"user_id": aliceID, "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:abc": "abc"}}, "auth": acctPasswordAuth("alice", "alice-password-1")}, 400, nil),
			badCase{name: "keys/changes-bad-from", method: "GET", path: v3 + "/keys/changes?from=garbage&to=garbage", token: alice, status: 400},
		)
		add(bodyCases("room_keys/version", "POST", v3+"/room_keys/version", alice)...)
		add(bodyCases("room_keys/keys", "PUT", v3+"/room_keys/keys?version="+backup, alice)...)
		add(
			badCase{name: "room_keys/version-algorithm-number", method: "POST", path: v3 + "/room_keys/version", token: alice, body: j(map[string]any{"algorithm": 5, "auth_data": map[string]any{}}), status: 400, codes: badJSONCodes},
			badCase{name: "room_keys/version-missing-auth-data", method: "POST", path: v3 + "/room_keys/version", token: alice, body: j(map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2"}), status: 400, codes: badMissing},
			badCase{name: "room_keys/version-auth-data-string", method: "POST", path: v3 + "/room_keys/version", token: alice, body: j(map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "room_keys/get-unknown-version", method: "GET", path: v3 + "/room_keys/version/987654", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "room_keys/get-non-numeric-version", method: "GET", path: v3 + "/room_keys/version/abc", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "room_keys/put-unknown-version", method: "PUT", path: v3 + "/room_keys/version/987654", token: alice, body: j(map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{}}), status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "room_keys/put-version-mismatch", method: "PUT", path: v3 + "/room_keys/version/" + backup, token: alice, body: j(map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{}, "version": "987654"}), status: 400},
			badCase{name: "room_keys/delete-unknown-version", method: "DELETE", path: v3 + "/room_keys/version/987654", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "room_keys/keys-unknown-version", method: "PUT", path: v3 + "/room_keys/keys?version=987654", token: alice, body: j(map[string]any{"rooms": map[string]any{}}), status: 0},
			badCase{name: "room_keys/keys-missing-version", method: "PUT", path: v3 + "/room_keys/keys", token: alice, body: j(map[string]any{"rooms": map[string]any{}}), status: 400},
			badCase{name: "room_keys/keys-rooms-string", method: "PUT", path: v3 + "/room_keys/keys?version=" + backup, token: alice, body: j(map[string]any{"rooms": "x"}), status: 400, codes: badJSONCodes},
			badCase{name: "room_keys/keys-session-bad", method: "PUT", path: v3 + "/room_keys/keys/" + room + "/sess1?version=" + backup, token: alice, body: j(map[string]any{"first_message_index": "zero"}), status: 400, codes: badJSONCodes},
			badCase{name: "room_keys/keys-user-as-room", method: "PUT", path: v3 + "/room_keys/keys/" + userAsRoom + "/sess1?version=" + backup, token: alice, body: j(map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}), status: 0},
			badCase{name: "room_keys/get-unknown-session", method: "GET", path: v3 + "/room_keys/keys/" + room + "/nosuch?version=" + backup, token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
		)

		// Send-to-device.
		td := v3 + "/sendToDevice/m.test/"
		add(bodyCases("sendToDevice", "PUT", td+"tdtxn", alice)...)
		add(
			badCase{name: "sendToDevice/messages-array", method: "PUT", path: td + "td1", token: alice, body: j(map[string]any{"messages": []any{}}), status: 400, codes: badJSONCodes},
			badCase{name: "sendToDevice/device-map-string", method: "PUT", path: td + "td2", token: alice, body: j(map[string]any{"messages": map[string]any{bobID: "x"}}), status: 400, codes: badJSONCodes},
			badCase{name: "sendToDevice/content-number", method: "PUT", path: td + "td3", token: alice, body: j(map[string]any{"messages": map[string]any{bobID: map[string]any{"*": 5}}}), status: 400, codes: badJSONCodes},
			badCase{name: "sendToDevice/missing", method: "PUT", path: td + "td4", token: alice, body: j(map[string]any{}), status: 400, codes: badMissing},
			badCase{name: "sendToDevice/room-as-user", method: "PUT", path: td + "td5", token: alice, body: j(map[string]any{"messages": map[string]any{roomID: map[string]any{"*": map[string]any{}}}}), status: 400},
		)

		// Media: upload and create.
		add(
			badCase{name: "media/upload-too-large", method: "POST", path: "/_matrix/media/v3/upload", token: alice, body: bytes.Repeat([]byte("m"), badMaxUpload+1024), contentType: "application/octet-stream", status: 413, codes: badTooLarge},
			badCase{name: "media/upload-bad-filename", method: "POST", path: "/_matrix/media/v3/upload?filename=" + url.QueryEscape("\xff\xfe"), token: alice, body: []byte("data"), contentType: "text/plain", status: 400},
			badCase{name: "media/put-unknown-id", method: "PUT", path: "/_matrix/media/v3/upload/" + hs + "/nosuchmedia", token: alice, body: []byte("data"), contentType: "text/plain", status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "media/put-other-server", method: "PUT", path: "/_matrix/media/v3/upload/other.test/nosuchmedia", token: alice, body: []byte("data"), contentType: "text/plain", status: 0},
			badCase{name: "media/put-too-large", method: "PUT", path: "/_matrix/media/v3/upload/" + hs + "/nosuchmedia", token: alice, body: bytes.Repeat([]byte("m"), badMaxUpload+1024), contentType: "application/octet-stream", status: 0},
			badCase{name: "media/download-unknown", method: "GET", path: "/_matrix/client/v1/media/download/" + hs + "/nosuchmedia", token: alice, status: 404, codes: []string{"M_NOT_FOUND"}},
			badCase{name: "media/download-bad-server", method: "GET", path: "/_matrix/client/v1/media/download/" + url.PathEscape("not a server") + "/x", token: alice, status: 0},
			badCase{name: "media/thumbnail-bad-size", method: "GET", path: "/_matrix/client/v1/media/thumbnail/" + hs + "/nosuchmedia?width=abc&height=1", token: alice, status: 400},
		)

		// Openid, user directory, and misc bodies on the same decoder.
		add(bodyCases("openid", "POST", v3+"/user/"+aliceID+"/openid/request_token", alice)...)
		add(bodyCases("user_directory", "POST", v3+"/user_directory/search", alice)...)
		add(
			badCase{name: "openid/other-user", method: "POST", path: v3 + "/user/" + bobID + "/openid/request_token", token: alice, body: j(map[string]any{}), status: 403, codes: []string{"M_FORBIDDEN"}},
			badCase{name: "user_directory/term-number", method: "POST", path: v3 + "/user_directory/search", token: alice, body: j(map[string]any{"search_term": 5}), status: 400, codes: badJSONCodes},
			badCase{name: "user_directory/missing-term", method: "POST", path: v3 + "/user_directory/search", token: alice, body: j(map[string]any{"limit": 5}), status: 400, codes: badMissing},
		)

		names := map[string]bool{}
		for _, c := range cases {
			if names[c.name] {
				t.Fatalf("duplicate case name %s", c.name)
			}
			names[c.name] = true
		}
		t.Logf("%d cases", len(cases))
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) { c.check(t, s) })
		}

		// Still healthy, a normal request still works, and nothing was written.
		if st, _, raw := badRaw(t, s, "GET", "/health", "", nil, ""); st != 200 {
			t.Fatalf("/health after bad input: %d %s", st, raw)
		}
		for _, tok := range []string{alice, bob, carol} {
			if st, b := acctWhoami(t, s, tok); st != 200 {
				t.Fatalf("whoami after bad input: %d %v", st, b)
			}
		}
		after := snapshot()
		for k, v := range before {
			if !reflect.DeepEqual(v, after[k]) {
				t.Errorf("bad input changed %s:\nbefore %v\nafter  %v", k, v, after[k])
			}
		}
		if t.Failed() {
			return
		}
		// A normal write still goes through after all that.
		if st, b := s.Do(t, "PUT", send+"after", alice, map[string]any{"msgtype": "m.text", "body": "still here"}); st != 200 {
			t.Fatalf("send after bad input: %d %v", st, b)
		}
	})
}
