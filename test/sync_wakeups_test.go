package test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestSyncWakesOnEveryWriter checks that writes outside the room event stream wake a
// waiting /sync at once (well before its timeout): room tags, push rule changes, and a
// room-mate deleting a device (device_lists.changed).
func TestSyncWakesOnEveryWriter(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		// Bob's second device, which he will delete.
		second, err := mautrix.NewClient(e.hs.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := second.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: "password-bob", StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		// Only a device with identity keys is announced in device_lists when it goes.
		dev := e2eNewDev(t, second)
		status, body := dev.upload(t, &harness.Server{URL: e.hs.URL}, map[string]any{"device_keys": dev.deviceKeys(t)})
		e2eExpect(t, "upload device keys", status, body, 200, "")

		// wakes runs write while who long-polls from a fresh token, and returns the woken response.
		wakes := func(what string, who *mautrix.Client, write func()) *mautrix.RespSync {
			t.Helper()
			since := doSync(t, who, mautrix.ReqSync{}).NextBatch
			done := make(chan *mautrix.RespSync, 1)
			go func() {
				resp, err := who.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: 20000, SetPresence: event.PresenceOffline})
				if err != nil {
					t.Errorf("%s: sync: %v", what, err)
				}
				done <- resp
			}()
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			write()
			select {
			case resp := <-done:
				if time.Since(start) > 5*time.Second {
					t.Fatalf("%s: long-poll took %v to wake", what, time.Since(start))
				}
				return resp
			case <-time.After(15 * time.Second):
				t.Fatalf("%s did not wake the long-poll", what)
			}
			return nil
		}

		resp := wakes("room tag", alice, func() {
			if err := alice.AddTag(context.Background(), id.RoomID(roomID), "u.work", 0.5); err != nil {
				t.Fatal(err)
			}
		})
		if jr := resp.Rooms.Join[id.RoomID(roomID)]; jr == nil || len(jr.AccountData.Events) == 0 {
			t.Fatalf("tag change not in the woken sync: %+v", resp.Rooms.Join)
		}

		resp = wakes("push rule", alice, func() {
			if err := alice.PutPushRule(context.Background(), "global", "room", roomID, &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
				t.Fatal(err)
			}
		})
		found := false
		for _, ev := range resp.AccountData.Events {
			found = found || ev.Type.Type == "m.push_rules"
		}
		if !found {
			t.Fatalf("push rule change not in the woken sync: %+v", resp.AccountData.Events)
		}

		resp = wakes("device deletion", alice, func() {
			if _, err := second.Logout(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
		changed := false
		for _, u := range resp.DeviceLists.Changed {
			changed = changed || u == bob.UserID
		}
		if !changed {
			t.Fatalf("bob's device removal not in device_lists.changed: %+v", resp.DeviceLists)
		}
	})
}
