package test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/test/harness"
)

// e2eInbox returns the to-device messages waiting for a device, as /sync will read them.
func e2eInbox(t *testing.T, db *storage.DB, userID, deviceID string) []storage.ToDeviceMessage {
	t.Helper()
	msgs, err := storage.ToDeviceSince(context.Background(), db, userID, deviceID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func e2eContents(msgs []storage.ToDeviceMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Content))
	}
	return out
}

// TestSendToDevice sends to-device messages to devices and to "*", checks idempotency per
// device and transaction ID (also under concurrent retries), and refuses bad input without
// storing anything.
func TestSendToDevice(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := e2eRegister(t, s, "alice")
		alice2 := e2eLogin(t, s, "alice", "")
		bob := e2eRegister(t, s, "bob")
		bob2 := e2eLogin(t, s, "bob", "")
		db := e2eOpenDB(t, s)
		send := func(from *e2eDev, txn string, messages any) (int, map[string]any) {
			t.Helper()
			return s.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, from.token, map[string]any{"messages": messages})
		}
		to := func(user string, devs map[string]any) map[string]any { return map[string]any{user: devs} }

		status, body := send(alice, "t1", to(bob.userID, map[string]any{bob.deviceID: map[string]any{"n": 1}}))
		e2eExpect(t, "send", status, body, 200, "")
		inbox := e2eInbox(t, db, bob.userID, bob.deviceID)
		if len(inbox) != 1 || inbox[0].Sender != alice.userID || inbox[0].Type != "m.test" || string(inbox[0].Content) != `{"n":1}` {
			t.Fatalf("bob's inbox: %+v", inbox)
		}
		// A replay of the transaction ID changes nothing; the same ID from another device is another message.
		status, body = send(alice, "t1", to(bob.userID, map[string]any{bob.deviceID: map[string]any{"n": 1}}))
		e2eExpect(t, "replay", status, body, 200, "")
		if n := len(e2eInbox(t, db, bob.userID, bob.deviceID)); n != 1 {
			t.Fatalf("replay delivered again: %d messages", n)
		}
		status, body = send(alice2, "t1", to(bob.userID, map[string]any{bob.deviceID: map[string]any{"n": 2}}))
		e2eExpect(t, "same transaction ID from another device", status, body, 200, "")
		if n := len(e2eInbox(t, db, bob.userID, bob.deviceID)); n != 2 {
			t.Fatalf("same txn ID from another device: %d messages", n)
		}

		// "*" reaches every device; a device also named explicitly gets its own content once.
		status, body = send(alice, "t2", to(bob.userID, map[string]any{"*": map[string]any{"all": true}}))
		e2eExpect(t, "send to *", status, body, 200, "")
		status, body = send(alice, "t3", to(bob.userID, map[string]any{"*": map[string]any{"star": 3}, bob2.deviceID: map[string]any{"own": 3}}))
		e2eExpect(t, "send to * and one device", status, body, 200, "")
		if got := e2eContents(e2eInbox(t, db, bob.userID, bob.deviceID)); !reflect.DeepEqual(got, []string{`{"n":1}`, `{"n":2}`, `{"all":true}`, `{"star":3}`}) {
			t.Fatalf("bob's first device: %v", got)
		}
		if got := e2eContents(e2eInbox(t, db, bob.userID, bob2.deviceID)); !reflect.DeepEqual(got, []string{`{"all":true}`, `{"own":3}`}) {
			t.Fatalf("bob's second device: %v", got)
		}

		// Unknown devices and users of other servers: accepted, nothing stored.
		status, body = send(alice, "t4", map[string]any{bob.userID: map[string]any{"NOPE": map[string]any{}}, "@x:elsewhere.test": map[string]any{"D": map[string]any{}}})
		e2eExpect(t, "send to unknown devices", status, body, 200, "")

		// Bad input is refused, stores nothing and does not use up the transaction ID.
		status, body = send(alice, "t5", to(bob.userID, map[string]any{bob.deviceID: map[string]any{"ok": 1}, bob2.deviceID: "not an object"}))
		e2eExpect(t, "content that is not an object", status, body, 400, "M_BAD_JSON")
		status, body = send(alice, "t5", map[string]any{"not-a-user": map[string]any{"D": map[string]any{}}})
		e2eExpect(t, "invalid user ID", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t5", alice.token, map[string]any{})
		e2eExpect(t, "missing messages", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t5", "", map[string]any{"messages": map[string]any{}})
		e2eExpect(t, "no token", status, body, 401, "M_MISSING_TOKEN")
		if n := len(e2eInbox(t, db, bob.userID, bob.deviceID)); n != 4 {
			t.Fatalf("refused requests stored messages: %d", n)
		}
		status, body = send(alice, "t5", to(bob.userID, map[string]any{bob.deviceID: map[string]any{"retry": true}}))
		e2eExpect(t, "retry with a good body", status, body, 200, "")

		// Concurrent retries of one transaction deliver once.
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body := send(alice, "t6", to(bob.userID, map[string]any{bob2.deviceID: map[string]any{"concurrent": true}}))
				if status != 200 {
					t.Errorf("concurrent send: %d %v", status, body)
				}
			}()
		}
		wg.Wait()
		if got := e2eContents(e2eInbox(t, db, bob.userID, bob2.deviceID)); len(got) != 3 || got[2] != `{"concurrent":true}` {
			t.Fatalf("10 concurrent retries: %v", got)
		}

		// Messages stay until acknowledged, in stream order.
		inbox = e2eInbox(t, db, bob.userID, bob.deviceID)
		for i := 1; i < len(inbox); i++ {
			if inbox[i].Pos <= inbox[i-1].Pos {
				t.Fatalf("inbox out of order: %+v", inbox)
			}
		}
		if _, err := storage.AckToDevice(context.Background(), db, bob.userID, bob.deviceID, inbox[2].Pos); err != nil {
			t.Fatal(err)
		}
		if got := e2eContents(e2eInbox(t, db, bob.userID, bob.deviceID)); !reflect.DeepEqual(got, []string{`{"star":3}`, `{"retry":true}`}) {
			t.Fatalf("after acknowledging three: %v", got)
		}
	})
}

// TestE2EEDataForSync checks what /sync will read after the key endpoints ran: device-list
// changes, one-time key counts and unused fallback key types.
func TestE2EEDataForSync(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		db := e2eOpenDB(t, s)
		start, err := storage.CurrentStreamPosition(ctx, db, storage.StreamDeviceList)
		if err != nil {
			t.Fatal(err)
		}
		status, body := alice.upload(t, s, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, "S", 4),
			"fallback_keys": map[string]any{"signed_curve25519:FB": alice.otk(t, true)}})
		e2eExpect(t, "upload", status, body, 200, "")
		changed, err := storage.DeviceListChangedUsers(ctx, db, bob.userID, start, 0)
		if err != nil || !reflect.DeepEqual(changed, []string{alice.userID}) {
			t.Fatalf("device list changes after alice's upload: %v %v", changed, err)
		}
		afterUpload, _ := storage.CurrentStreamPosition(ctx, db, storage.StreamDeviceList)
		// Uploading only one-time keys is not a device-list change.
		status, body = alice.upload(t, s, map[string]any{"one_time_keys": alice.otks(t, "T", 1)})
		e2eExpect(t, "upload of one more key", status, body, 200, "")
		if changed, _ := storage.DeviceListChangedUsers(ctx, db, bob.userID, afterUpload, 0); len(changed) != 0 {
			t.Fatalf("one-time keys changed the device list: %v", changed)
		}
		counts, err := storage.OneTimeKeyCounts(ctx, db, alice.userID, alice.deviceID)
		if err != nil || counts["signed_curve25519"] != 5 {
			t.Fatalf("counts: %v %v", counts, err)
		}
		types, err := storage.UnusedFallbackKeyTypes(ctx, db, alice.userID, alice.deviceID)
		if err != nil || !reflect.DeepEqual(types, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback key types: %v %v", types, err)
		}
		for i := range 6 {
			if got := e2eClaim(t, s, bob.token, alice.userID, alice.deviceID); len(got[alice.deviceID]) != 1 {
				t.Fatalf("claim %d: %v", i, got)
			}
		}
		types, _ = storage.UnusedFallbackKeyTypes(ctx, db, alice.userID, alice.deviceID)
		counts, _ = storage.OneTimeKeyCounts(ctx, db, alice.userID, alice.deviceID)
		if len(types) != 0 || len(counts) != 0 {
			t.Fatalf("after claiming everything: counts %v, unused fallback %v", counts, types)
		}
		// Cross-signing keys are a device-list change of the user; bob's signature of
		// alice's master key is one only bob hears of.
		acs := e2eNewCrossSigning(t)
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, acs.body(t, alice.userID))
		e2eExpect(t, "alice's cross-signing keys", status, body, 200, "")
		bcs := e2eNewCrossSigning(t)
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", bob.token, bcs.body(t, bob.userID))
		e2eExpect(t, "bob's cross-signing keys", status, body, 200, "")
		beforeSig, _ := storage.CurrentStreamPosition(ctx, db, storage.StreamDeviceList)
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", bob.token, map[string]any{alice.userID: map[string]any{
			acs.master: e2eSign(t, e2eCSKey(alice.userID, "master", acs.master), bob.userID, "ed25519:"+bcs.usk, bcs.uskPriv)}})
		if status != 200 || len(body["failures"].(map[string]any)) != 0 {
			t.Fatalf("bob signs alice: %d %v", status, body)
		}
		forBob, _ := storage.DeviceListChangedUsers(ctx, db, bob.userID, beforeSig, 0)
		forCarol, _ := storage.DeviceListChangedUsers(ctx, db, "@carol:hs1.test", beforeSig, 0)
		if !reflect.DeepEqual(forBob, []string{alice.userID}) || len(forCarol) != 0 {
			t.Fatalf("signature change seen by bob %v, by carol %v", forBob, forCarol)
		}
		all, _ := storage.DeviceListChangesSince(ctx, db, start, 0)
		var users []string
		for _, c := range all {
			users = append(users, fmt.Sprintf("%s/%s/%s", c.UserID, c.DeviceID, c.OnlyFor))
		}
		want := []string{alice.userID + "/" + alice.deviceID + "/", alice.userID + "//", bob.userID + "//", alice.userID + "//" + bob.userID}
		if !reflect.DeepEqual(users, want) {
			t.Fatalf("device list stream: %v, want %v", users, want)
		}
	})
}
