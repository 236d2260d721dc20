package test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestFederationRestrictedJoinWithoutLocalAuthoriser: server B is in a restricted room
// of server A, but none of B's members may invite. A user of B who is in the allowed
// room still joins: B cannot authorise the join itself, so it joins through A
// (make_join/send_join), whose member authorises it, though the client named only B.
// The same right after joining the allowed room on B, before A heard of that. Once
// one of B's members may invite, the next join is a local one authorised by that
// member (Complement's TestRestrictedRoomsLocalJoinNoCreatorsUsesPowerLevels, with
// the power-level change delivered first).
func TestFederationRestrictedJoinWithoutLocalAuthoriser(t *testing.T) {
	harness.ForEachEngine(t, testFederationRestrictedJoinWithoutLocalAuthoriser)
}

func testFederationRestrictedJoinWithoutLocalAuthoriser(t *testing.T, engine string) {
	ctx := context.Background()
	a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	b := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	alice := udRegister(t, a, "alice")
	bob := udRegister(t, b, "bob")
	charlie := udRegister(t, b, "charlie")
	dave := udRegister(t, b, "dave")

	space := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
	room := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.String()}}}}}}})
	join := func(cli *mautrix.Client, roomID id.RoomID, via string) {
		t.Helper()
		if _, err := cli.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}}); err != nil {
			t.Fatalf("%s joins %s via %s: %v", cli.UserID, roomID, via, err)
		}
	}
	authoriser := func(cli *mautrix.Client, user id.UserID) any {
		t.Helper()
		var m map[string]any
		if err := cli.StateEvent(ctx, room, event.StateMember, user.String(), &m); err != nil {
			t.Fatalf("%s's member event as %s sees it: %v", user, cli.UserID, err)
		}
		if m["membership"] != "join" {
			t.Fatalf("%s's membership as %s sees it: %v", user, cli.UserID, m)
		}
		return m["join_authorised_via_users_server"]
	}
	join(bob, space, a.ServerName)
	join(bob, room, a.ServerName)
	if got := authoriser(bob, bob.UserID); got != alice.UserID.String() {
		t.Fatalf("bob's join authorised by %v", got)
	}

	// charlie joins the space on B (a local join), and A hears of it.
	join(charlie, space, b.ServerName)
	fmWaitMembership(t, alice, space, charlie.UserID, "join")
	// bob (power 0, invite 50) cannot authorise charlie's join: B joins through A.
	join(charlie, room, b.ServerName)
	if got := authoriser(charlie, charlie.UserID); got != alice.UserID.String() {
		t.Fatalf("charlie's join authorised by %v, want %s", got, alice.UserID)
	}
	fmWaitMembership(t, alice, room, charlie.UserID, "join")
	// Joining the space on B and the room right after, as clients joining a space's
	// rooms do: A authorises the join only once it has the space join, which B sends
	// before asking A (a join to A's make_join alone would often be refused).
	for _, name := range []string{"erin", "frank", "gina", "hank", "ines"} {
		u := udRegister(t, b, name)
		join(u, space, b.ServerName)
		join(u, room, b.ServerName)
		if got := authoriser(u, u.UserID); got != alice.UserID.String() {
			t.Fatalf("%s's join authorised by %v, want %s", name, got, alice.UserID)
		}
	}

	// alice lets bob invite; once B has the change, dave's join is B's own.
	if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{
		"invite": 50, "users": map[string]any{alice.UserID.String(): 100, bob.UserID.String(): 50}}); err != nil {
		t.Fatal(err)
	}
	fmWaitPower(t, bob, room, bob.UserID, 50)
	join(dave, space, b.ServerName)
	join(dave, room, b.ServerName)
	if got := authoriser(dave, dave.UserID); got != bob.UserID.String() {
		t.Fatalf("dave's join authorised by %v, want %s", got, bob.UserID)
	}
	fmWaitMembership(t, alice, room, dave.UserID, "join")
	if got := authoriser(alice, dave.UserID); got != bob.UserID.String() {
		t.Fatalf("dave's join as A sees it authorised by %v", got)
	}
}

// fmWaitPower waits until cli sees user at power level want in the room.
func fmWaitPower(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pl struct {
			Users map[string]int `json:"users"`
		}
		if err := cli.StateEvent(context.Background(), roomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Users[user.String()] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %s at power %d in %s: %v", cli.UserID, user, want, roomID, pl.Users)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
