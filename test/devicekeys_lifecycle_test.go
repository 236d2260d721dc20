package test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/storage"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestDeletedDeviceLosesItsKeys checks that deleting a device (and logging out) removes its
// identity keys from /keys/query, so other users' clients stop encrypting for it.
func TestDeletedDeviceLosesItsKeys(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := e2eRegister(t, s, "alice")
		phone := e2eLogin(t, s, "alice", "")
		laptop := e2eLogin(t, s, "alice", "")
		bob := e2eRegister(t, s, "bob")
		for _, d := range []*e2eDev{phone, laptop} {
			status, body := d.upload(t, s, map[string]any{"device_keys": d.deviceKeys(t)})
			e2eExpect(t, "upload", status, body, 200, "")
		}
		if e2eGet(e2eQuery(t, s, bob.token, alice.userID), "device_keys", alice.userID, phone.deviceID) == nil {
			t.Fatal("uploaded device keys are not visible")
		}

		status, body := s.Do(t, "DELETE", "/_matrix/client/v3/devices/"+phone.deviceID, alice.token,
			map[string]any{"auth": e2ePasswordAuth(alice.userID, nil)})
		e2eExpect(t, "delete device", status, body, 200, "")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/logout", laptop.token, map[string]any{})
		e2eExpect(t, "logout", status, body, 200, "")

		keys := e2eGet(e2eQuery(t, s, bob.token, alice.userID), "device_keys", alice.userID)
		for _, gone := range []string{phone.deviceID, laptop.deviceID} {
			if e2eGet(keys, gone) != nil {
				t.Fatalf("keys of removed device %s are still served: %v", gone, keys)
			}
		}
		// Other users' clients learn of the removal through the device-list stream: each
		// removed device is recorded after its upload.
		changes, err := storage.DeviceListChangesSince(context.Background(), e2eOpenDB(t, s), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, c := range changes {
			if c.UserID == alice.userID {
				seen[c.DeviceID]++
			}
		}
		for _, gone := range []string{phone.deviceID, laptop.deviceID} {
			if seen[gone] < 2 {
				t.Fatalf("device %s: %d device-list changes (upload and removal expected): %+v", gone, seen[gone], changes)
			}
		}
	})
}
