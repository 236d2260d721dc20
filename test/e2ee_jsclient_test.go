package test

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage/storagetest"
	"github.com/myelin-chat/myelin/test/harness"
)

// TestJSClientE2EE runs test/js/e2ee.mjs: matrix-js-sdk with its Rust crypto exchanges
// Megolm-encrypted messages, bootstraps cross-signing, secret storage and key backup,
// restores the backup on a second device, and checks that a late joiner reads new
// messages but not old ones.
func TestJSClientE2EE(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		runJS(t, "e2ee.mjs", s.URL)
	})
}

// e2eSyncToken returns a /sync next_batch of d (an initial sync, no waiting).
func e2eSyncToken(t *testing.T, s *harness.Server, d *e2eDev) string {
	t.Helper()
	status, body := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", d.token, nil)
	e2eExpect(t, "sync", status, body, 200, "")
	tok, _ := body["next_batch"].(string)
	if tok == "" {
		t.Fatalf("sync without next_batch: %v", body)
	}
	return tok
}

func e2eKeyChanges(t *testing.T, s *harness.Server, d *e2eDev, from, to string) (changed, left []string) {
	t.Helper()
	status, body := s.Do(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), d.token, nil)
	e2eExpect(t, "keys/changes", status, body, 200, "")
	list := func(k string) []string {
		raw, ok := body[k].([]any)
		if !ok {
			t.Fatalf("keys/changes without a %s list: %v", k, body)
		}
		var out []string
		for _, v := range raw {
			out = append(out, v.(string))
		}
		return out
	}
	return list("changed"), list("left")
}

// TestKeysChanges checks GET /keys/changes between /sync tokens: users who join a shared
// room or change their device or cross-signing keys are changed; users who no longer
// share a room are left; strangers never appear.
func TestKeysChanges(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		carol := e2eRegister(t, s, "carol")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		t0 := e2eSyncToken(t, s, alice)

		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		t1 := e2eSyncToken(t, s, alice)
		if changed, left := e2eKeyChanges(t, s, alice, t0, t1); !slices.Equal(changed, []string{bob.userID}) || len(left) != 0 {
			t.Fatalf("after bob joined: changed %v left %v", changed, left)
		}

		for _, d := range []*e2eDev{bob, carol} {
			status, body := d.upload(t, s, map[string]any{"device_keys": d.deviceKeys(t)})
			e2eExpect(t, "device keys", status, body, 200, "")
		}
		status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", bob.token, e2eNewCrossSigning(t).body(t, bob.userID))
		e2eExpect(t, "bob's cross-signing keys", status, body, 200, "")
		t2 := e2eSyncToken(t, s, alice)
		if changed, left := e2eKeyChanges(t, s, alice, t1, t2); !slices.Equal(changed, []string{bob.userID}) || len(left) != 0 {
			t.Fatalf("after bob's and carol's key uploads: changed %v left %v (carol shares no room)", changed, left)
		}
		if changed, _ := e2eKeyChanges(t, s, alice, t2, t2); len(changed) != 0 {
			t.Fatalf("nothing between equal tokens: %v", changed)
		}

		if _, err := bob.cli.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		t3 := e2eSyncToken(t, s, alice)
		if changed, left := e2eKeyChanges(t, s, alice, t2, t3); len(changed) != 0 || !slices.Equal(left, []string{bob.userID}) {
			t.Fatalf("after bob left: changed %v left %v", changed, left)
		}
		// Bob sees alice as left too: he left the last room they shared.
		if _, left := e2eKeyChanges(t, s, bob, t2, t3); !slices.Equal(left, []string{alice.userID}) {
			t.Fatalf("bob's view after leaving: left %v", left)
		}
		// Over the whole span bob joined and left: he is no longer shared, so left.
		if changed, left := e2eKeyChanges(t, s, alice, t0, t3); len(changed) != 0 || !slices.Equal(left, []string{bob.userID}) {
			t.Fatalf("t0..t3: changed %v left %v", changed, left)
		}

		status, body = s.Do(t, "GET", "/_matrix/client/v3/keys/changes?to="+url.QueryEscape(t3), alice.token, nil)
		e2eExpect(t, "keys/changes without from", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/keys/changes?from=bogus&to="+url.QueryEscape(t3), alice.token, nil)
		e2eExpect(t, "keys/changes with a bad token", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(t0)+"&to="+url.QueryEscape(t3), "", nil)
		e2eExpect(t, "keys/changes without a token", status, body, 401, "M_MISSING_TOKEN")
	})
}

// TestCrossSigningWakesSync pins that uploading cross-signing keys and signatures wakes
// the /sync long-polls of the uploader and its room-mates with device_lists.changed
// (matrix-js-sdk's Rust crypto waited a whole long-poll before it saw its own device
// cross-signed).
func TestCrossSigningWakesSync(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		status, body := alice.upload(t, s, map[string]any{"device_keys": alice.deviceKeys(t)})
		e2eExpect(t, "device keys", status, body, 200, "")
		acs := e2eNewCrossSigning(t)

		// longPoll starts a 20 s /sync of d from its current token while action runs, and
		// returns how long it took and whether alice was in device_lists.changed.
		longPoll := func(d *e2eDev, action func()) (time.Duration, bool) {
			since := e2eSyncToken(t, s, d)
			type res struct {
				took    time.Duration
				changed bool
			}
			done := make(chan res, 1)
			go func() {
				start := time.Now()
				resp, err := d.cli.SyncRequest(ctx, 20000, since, "", false, event.PresenceOnline)
				r := res{took: time.Since(start)}
				if err == nil {
					r.changed = slices.Contains(resp.DeviceLists.Changed, id.UserID(alice.userID))
				}
				done <- r
			}()
			time.Sleep(500 * time.Millisecond)
			action()
			r := <-done
			return r.took, r.changed
		}
		for _, d := range []*e2eDev{alice, bob} {
			took, changed := longPoll(d, func() {
				acs = e2eNewCrossSigning(t)
				status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, acs.body(t, alice.userID))
				if status == 401 {
					b := acs.body(t, alice.userID)
					b["auth"] = e2ePasswordAuth(alice.userID, body["session"])
					status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, b)
				}
				e2eExpect(t, "cross-signing upload", status, body, 200, "")
			})
			if !changed || took > 10*time.Second {
				t.Fatalf("%s's /sync after alice's cross-signing upload: took %v, changed %v", d.userID, took, changed)
			}
			took, changed = longPoll(d, func() {
				sig := e2eSign(t, alice.deviceKeys(t), alice.userID, "ed25519:"+acs.ssk, acs.sskPriv)
				status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", alice.token,
					map[string]any{alice.userID: map[string]any{alice.deviceID: sig}})
				e2eExpect(t, "signature upload", status, body, 200, "")
				if f, _ := body["failures"].(map[string]any); len(f) != 0 {
					t.Errorf("signature upload failures: %v", body)
				}
			})
			if !changed || took > 10*time.Second {
				t.Fatalf("%s's /sync after alice's device signature: took %v, changed %v", d.userID, took, changed)
			}
		}
	})
}

// TestDehydratedDeviceEventsGET pins the GET form of the MSC3814 events endpoint that
// matrix-js-sdk's Rust crypto uses (?from=, paging until a response has no next_batch),
// beside the POST form, and that storing a dehydrated device wakes room-mates' /sync
// with device_lists.changed.
func TestDehydratedDeviceEventsGET(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		dev := &e2eDev{userID: alice.userID, deviceID: "DEHYDRATED1", priv: alice.priv, ed: alice.ed, curve: alice.curve}

		since := e2eSyncToken(t, s, bob)
		type res struct {
			took    time.Duration
			changed bool
		}
		done := make(chan res, 1)
		go func() {
			start := time.Now()
			resp, err := bob.cli.SyncRequest(ctx, 20000, since, "", false, event.PresenceOnline)
			done <- res{time.Since(start), err == nil && slices.Contains(resp.DeviceLists.Changed, id.UserID(alice.userID))}
		}()
		time.Sleep(500 * time.Millisecond)
		status, body := s.Do(t, "PUT", base, alice.token, map[string]any{"device_id": dev.deviceID,
			"device_data": map[string]any{"algorithm": "org.matrix.msc3814.v1.olm"}, "device_keys": dev.deviceKeys(t)})
		e2eExpect(t, "put dehydrated device", status, body, 200, "")
		if r := <-done; !r.changed || r.took > 10*time.Second {
			t.Fatalf("bob's /sync after alice's dehydrated device: took %v, changed %v", r.took, r.changed)
		}

		status, body = s.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", bob.token,
			map[string]any{"messages": map[string]any{alice.userID: map[string]any{dev.deviceID: map[string]any{"n": 1}}}})
		e2eExpect(t, "sendToDevice", status, body, 200, "")
		events := base + "/" + dev.deviceID + "/events"
		status, body = s.Do(t, "GET", events, alice.token, nil)
		if evs, _ := body["events"].([]any); status != 200 || len(evs) != 1 || body["next_batch"] == nil {
			t.Fatalf("GET dehydrated events: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", events+"?from="+url.QueryEscape(body["next_batch"].(string)), alice.token, nil)
		if evs, ok := body["events"].([]any); status != 200 || !ok || len(evs) != 0 {
			t.Fatalf("GET dehydrated events from next_batch: %d %v", status, body)
		}
		if _, ok := body["next_batch"]; ok {
			t.Fatalf("an empty page must end the paging (no next_batch): %v", body)
		}
		status, body = s.Do(t, "GET", events, bob.token, nil)
		e2eExpect(t, "GET events of another user's dehydrated device", status, body, 403, "M_FORBIDDEN")
	})
}

// TestJSClientE2EEAcrossServers runs test/js/e2ee_fed.mjs: matrix-js-sdk clients (Rust
// crypto) on two servers, A on SQLite and B on PostgreSQL, share an encrypted room
// created on A (remote invite, join over federation) and decrypt each other's messages;
// a second device of the B user, announced by a device list update over federation,
// receives the room key too.
func TestJSClientE2EEAcrossServers(t *testing.T) {
	a := startFedServer(t, "sqlite")
	storagetest.RequirePostgres(t)
	b := startFedServer(t, "postgres")
	runJS(t, "e2ee_fed.mjs", a.URL, b.URL)
}
