package test

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestFederationDeviceListTracking follows a remote user's device list through what
// makes a cached copy stale or current: the joiner of a room hears of everyone in it
// (itself included), a device rename is a change other servers hear of, and after the
// user left every shared room and came back, key queries give the devices they added
// meanwhile (their server stopped sending updates while no room was shared).
func TestFederationDeviceListTracking(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a := startFedServer(t, engine)
		b := startFedServer(t, engine)
		aliceDev := e2eRegister(t, a.Server, "alice")
		alice := aliceDev.cli
		bobDev := e2eRegister(t, b.Server, "bob")
		bob := bobDev.cli
		status, body := bobDev.upload(t, b.Server, map[string]any{"device_keys": bobDev.deviceKeys(t)})
		e2eExpect(t, "bob uploads keys", status, body, 200, "")

		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"}).String()
		bobSince := doSync(t, bob, mautrix.ReqSync{}).NextBatch
		joinRemote(t, bob, roomID, a)
		// Bob's sync names both alice (newly shared room) and bob himself (his other
		// devices now share the room's traffic).
		syncUntil(t, bob, bobSince, "bob's device_lists.changed after joining", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, alice.UserID) && slices.Contains(r.DeviceLists.Changed, bob.UserID)
		})

		// Alice's server caches bob's list from her first query.
		aliceSince := doSync(t, alice, mautrix.ReqSync{}).NextBatch
		if e2eGet(e2eQuery(t, a.Server, aliceDev.token, bob.UserID.String()), "device_keys", bob.UserID.String(), bobDev.deviceID) == nil {
			t.Fatal("alice does not see bob's device")
		}

		// A rename is a device list change that reaches alice.
		if err := bob.SetDeviceInfo(ctx, bob.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "bob's phone"}); err != nil {
			t.Fatal(err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, "bob's rename in alice's device_lists.changed", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, bob.UserID)
		}).NextBatch

		// Bob leaves; while no room is shared he adds a device; then he comes back.
		if _, err := bob.LeaveRoom(ctx, id.RoomID(roomID)); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, aliceSince, "bob's leave at alice's server", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Left, bob.UserID)
		})
		bob2 := e2eLogin(t, b.Server, "bob", "")
		status, body = bob2.upload(t, b.Server, map[string]any{"device_keys": bob2.deviceKeys(t)})
		e2eExpect(t, "bob's second device uploads keys", status, body, 200, "")
		joinRemote(t, bob, roomID, a)
		got := e2eQuery(t, a.Server, aliceDev.token, bob.UserID.String())
		if e2eGet(got, "device_keys", bob.UserID.String(), bob2.deviceID) == nil {
			t.Fatalf("after bob rejoined, alice's query misses the device he added meanwhile: %v", got)
		}
	})
}

// TestFederationInviteRescinded: the inviter kicking a user of another server whose
// only tie to the room is the invite ends the invite on that user's server; a kick by
// anyone else does not.
func TestFederationInviteRescinded(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a := startFedServer(t, engine)
		b := startFedServer(t, engine)
		alice := fedUser(t, a, "alice")
		alice2 := fedUser(t, a, "alice2")
		bob := fedUser(t, b, "bob")
		invited := func(roomID string) bool {
			r := doSync(t, bob, mautrix.ReqSync{})
			_, ok := r.Rooms.Invite[id.RoomID(roomID)]
			return ok
		}

		// alice2 invites bob, alice (not the inviter) kicks him: bob stays invited.
		other := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"}).String()
		if _, err := alice2.JoinRoom(ctx, other, nil); err != nil {
			t.Fatal(err)
		}
		setUserPower(t, alice, other, alice2.UserID, 50)
		if _, err := alice2.InviteUser(ctx, id.RoomID(other), &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, "", "the invite from alice2", func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Invite[id.RoomID(other)]
			return ok
		})
		if _, err := alice.KickUser(ctx, id.RoomID(other), &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}

		// alice invites bob and withdraws the invite: bob's invite ends.
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11",
			Invite: []id.UserID{bob.UserID}, IsDirect: true}).String()
		r := syncUntil(t, bob, "", "the invite from alice", func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Invite[id.RoomID(roomID)]
			return ok
		})
		// The invite of a direct chat says so (is_direct) to the other server too.
		direct := false
		for _, ev := range r.Rooms.Invite[id.RoomID(roomID)].State.Events {
			if ev.Type.Type == "m.room.member" && ev.GetStateKey() == bob.UserID.String() {
				direct, _ = ev.Content.Raw["is_direct"].(bool)
			}
		}
		if !direct {
			t.Error("the invite of a direct chat lacks is_direct on the invitee's server")
		}
		if _, err := alice.KickUser(ctx, id.RoomID(roomID), &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, "", "the withdrawn invite gone", func(*mautrix.RespSync) bool { return !invited(roomID) })
		// The kick of the other room came first; bob is still invited there.
		if !invited(other) {
			t.Fatal("a kick by someone other than the inviter ended bob's invite")
		}
	})
}
