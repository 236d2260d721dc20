package test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func e2eKeyData(fmi, fc int, verified bool, marker string) map[string]any {
	return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
		"session_data": map[string]any{"ephemeral": e2eRandomKey(), "ciphertext": base64.RawStdEncoding.EncodeToString([]byte(marker)), "mac": "bWFjbWFjbWE"}}
}

func e2eEsc(s string) string { return url.PathEscape(s) }

// TestKeyBackupLifecycle walks a backup through versions, keys, the session comparison
// rules, writes to an old version, updates and deletion.
func TestKeyBackupLifecycle(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		const v3 = "/_matrix/client/v3"
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"

		status, body := s.Do(t, "GET", v3+"/room_keys/version", alice.token, nil)
		e2eExpect(t, "no backup yet", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "POST", v3+"/room_keys/version", alice.token, map[string]any{"algorithm": alg, "auth_data": "nope"})
		e2eExpect(t, "auth_data not an object", status, body, 400, "M_BAD_JSON")

		// Create with mautrix's request types.
		created, err := alice.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: backup.MegolmAuthData{PublicKey: id.Ed25519(e2eRandomKey())}})
		if err != nil || created.Version != "1" {
			t.Fatalf("create backup: %+v %v", created, err)
		}
		latest, err := alice.cli.GetKeyBackupLatestVersion(ctx)
		if err != nil || latest.Version != "1" || latest.Count != 0 || latest.ETag == "" || latest.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 {
			t.Fatalf("latest backup: %+v %v", latest, err)
		}
		status, body = s.Do(t, "GET", v3+"/room_keys/version/1", bob.token, nil)
		e2eExpect(t, "another user's version", status, body, 404, "M_NOT_FOUND")

		const room, sess = "!room:hs1.test", "session+id/1"
		keyPath := v3 + "/room_keys/keys/" + e2eEsc(room) + "/" + e2eEsc(sess) + "?version=1"
		put := func(what string, data map[string]any) map[string]any {
			t.Helper()
			status, body := s.Do(t, "PUT", keyPath, alice.token, data)
			e2eExpect(t, what, status, body, 200, "")
			return body
		}
		stored := func() string {
			t.Helper()
			status, body := s.Do(t, "GET", keyPath, alice.token, nil)
			e2eExpect(t, "get session", status, body, 200, "")
			raw, _ := base64.RawStdEncoding.DecodeString(e2eGet(body, "session_data", "ciphertext").(string))
			return string(raw)
		}
		r := put("first key", e2eKeyData(5, 1, false, "A"))
		if r["count"] != float64(1) {
			t.Fatalf("count after the first key: %v", r)
		}
		etag := r["etag"]
		// The spec's rules: is_verified first, then the lower first_message_index, then the
		// lower forwarded_count; a key that is not better is ignored (etag unchanged).
		steps := []struct {
			what string
			data map[string]any
			want string
		}{
			{"higher first_message_index loses", e2eKeyData(6, 0, false, "B"), "A"},
			{"lower first_message_index wins", e2eKeyData(3, 4, false, "C"), "C"},
			{"verified wins over a lower index", e2eKeyData(10, 2, true, "D"), "D"},
			{"unverified loses against verified", e2eKeyData(0, 0, false, "E"), "D"},
			{"equal index, lower forwarded_count wins", e2eKeyData(10, 1, true, "F"), "F"},
			{"equal index, higher forwarded_count loses", e2eKeyData(10, 3, true, "G"), "F"},
			{"all equal keeps the stored key", e2eKeyData(10, 1, true, "H"), "F"},
		}
		for _, st := range steps {
			before := stored()
			r := put(st.what, st.data)
			if got := stored(); got != st.want {
				t.Fatalf("%s: stored %s, want %s", st.what, got, st.want)
			}
			if changed := r["etag"] != etag; changed != (before != st.want) {
				t.Fatalf("%s: etag %v -> %v", st.what, etag, r["etag"])
			}
			etag = r["etag"]
		}

		// Room and whole-backup uploads, with mautrix.
		var roomReq mautrix.ReqRoomKeyBackup
		raw, _ := json.Marshal(map[string]any{"sessions": map[string]any{"s2": e2eKeyData(0, 0, false, "S2"), "s3": e2eKeyData(0, 0, false, "S3")}})
		if err := json.Unmarshal(raw, &roomReq); err != nil {
			t.Fatal(err)
		}
		upd, err := alice.cli.PutKeysInBackupForRoom(ctx, "1", id.RoomID(room), &roomReq)
		if err != nil || upd.Count != 3 {
			t.Fatalf("room upload: %+v %v", upd, err)
		}
		status, body = s.Do(t, "PUT", v3+"/room_keys/keys?version=1", alice.token, map[string]any{"rooms": map[string]any{
			"!other:hs1.test": map[string]any{"sessions": map[string]any{"s4": e2eKeyData(0, 0, false, "S4")}}}})
		if status != 200 || body["count"] != float64(4) {
			t.Fatalf("upload of all keys: %d %v", status, body)
		}
		all, err := alice.cli.GetKeyBackup(ctx, "1")
		if err != nil || len(all.Rooms) != 2 || len(all.Rooms[id.RoomID(room)].Sessions) != 3 {
			t.Fatalf("all keys: %+v %v", all, err)
		}
		status, body = s.Do(t, "GET", v3+"/room_keys/keys/"+e2eEsc("!empty:hs1.test")+"?version=1", alice.token, nil)
		if status != 200 || len(body["sessions"].(map[string]any)) != 0 {
			t.Fatalf("room without keys: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", v3+"/room_keys/keys/"+e2eEsc(room)+"/nope?version=1", alice.token, nil)
		e2eExpect(t, "unknown session", status, body, 404, "M_NOT_FOUND")

		// Malformed keys are refused and store nothing.
		status, body = s.Do(t, "PUT", v3+"/room_keys/keys/"+e2eEsc(room)+"?version=1", alice.token, map[string]any{"sessions": map[string]any{
			"ok": e2eKeyData(0, 0, false, "OK"), "bad": map[string]any{"first_message_index": 0, "session_data": map[string]any{}}}})
		e2eExpect(t, "key data without is_verified and forwarded_count", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "PUT", v3+"/room_keys/keys/"+e2eEsc(room)+"/x", alice.token, e2eKeyData(0, 0, false, "X"))
		e2eExpect(t, "upload without version", status, body, 400, "M_MISSING_PARAM")
		if v, _ := alice.cli.GetKeyBackupVersion(ctx, "1"); v == nil || v.Count != 4 {
			t.Fatalf("count after refused uploads: %+v", v)
		}

		// A new version becomes current; writing to the old one is M_WRONG_ROOM_KEYS_VERSION.
		status, body = s.Do(t, "POST", v3+"/room_keys/version", alice.token, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "k2"}})
		if status != 200 || body["version"] != "2" {
			t.Fatalf("second version: %d %v", status, body)
		}
		status, body = s.Do(t, "PUT", keyPath, alice.token, e2eKeyData(0, 0, true, "Z"))
		e2eExpect(t, "write to the old version", status, body, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if body["current_version"] != "2" {
			t.Fatalf("current_version: %v", body)
		}
		status, body = s.Do(t, "PUT", v3+"/room_keys/keys/"+e2eEsc(room)+"/x?version=7", alice.token, e2eKeyData(0, 0, true, "Z"))
		e2eExpect(t, "write to an unknown version", status, body, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if stored() != "F" {
			t.Fatal("refused write changed the old version")
		}

		// Updating a version: only auth_data, with the same algorithm and version.
		status, body = s.Do(t, "PUT", v3+"/room_keys/version/1", alice.token, map[string]any{"algorithm": "other", "auth_data": map[string]any{}})
		e2eExpect(t, "update with another algorithm", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", v3+"/room_keys/version/1", alice.token, map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": "2"})
		e2eExpect(t, "update with another version in the body", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", v3+"/room_keys/version/9", alice.token, map[string]any{"algorithm": alg, "auth_data": map[string]any{}})
		e2eExpect(t, "update of an unknown version", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "PUT", v3+"/room_keys/version/1", alice.token, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "new"}, "version": "1"})
		e2eExpect(t, "update", status, body, 200, "")
		status, body = s.Do(t, "GET", v3+"/room_keys/version/1", alice.token, nil)
		if status != 200 || e2eGet(body, "auth_data", "public_key") != "new" || body["count"] != float64(4) {
			t.Fatalf("updated version: %d %v", status, body)
		}

		// Deleting keys and versions.
		status, body = s.Do(t, "DELETE", v3+"/room_keys/keys/"+e2eEsc(room)+"/"+e2eEsc(sess)+"?version=1", alice.token, nil)
		if status != 200 || body["count"] != float64(3) {
			t.Fatalf("delete one session: %d %v", status, body)
		}
		status, body = s.Do(t, "DELETE", v3+"/room_keys/keys/"+e2eEsc(room)+"?version=1", alice.token, nil)
		if status != 200 || body["count"] != float64(1) {
			t.Fatalf("delete a room: %d %v", status, body)
		}
		status, body = s.Do(t, "DELETE", v3+"/room_keys/version/1", alice.token, nil)
		e2eExpect(t, "delete version 1", status, body, 200, "")
		status, body = s.Do(t, "DELETE", v3+"/room_keys/version/1", alice.token, nil)
		e2eExpect(t, "delete version 1 again", status, body, 200, "")
		status, body = s.Do(t, "DELETE", v3+"/room_keys/version/99", alice.token, nil)
		e2eExpect(t, "delete an unknown version", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", v3+"/room_keys/version/1", alice.token, nil)
		e2eExpect(t, "get a deleted version", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", v3+"/room_keys/keys?version=1", alice.token, nil)
		e2eExpect(t, "keys of a deleted version", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", v3+"/room_keys/version", alice.token, nil)
		if status != 200 || body["version"] != "2" || body["count"] != float64(0) {
			t.Fatalf("latest after deleting 1: %d %v", status, body)
		}
		status, body = s.Do(t, "DELETE", v3+"/room_keys/version/2", alice.token, nil)
		e2eExpect(t, "delete version 2", status, body, 200, "")
		status, body = s.Do(t, "GET", v3+"/room_keys/version", alice.token, nil)
		e2eExpect(t, "no backup left", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "POST", v3+"/room_keys/version", alice.token, map[string]any{"algorithm": alg, "auth_data": map[string]any{}})
		if status != 200 || body["version"] != "3" {
			t.Fatalf("version numbers must not be reused: %d %v", status, body)
		}
	})
}
