package test

import (
	"context"
	"testing"

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
// one of B's members may invite, the join is a local one authorised by that member,
// even when B has not received that power-level change yet: B catches up from A first
// (Complement's TestRestrictedRoomsLocalJoinNoCreatorsUsesPowerLevels, which changes
// the power levels just before the join).
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

	// alice lets bob invite while B is cut off, so B has not heard of it when dave (in
	// the space already) joins: B finds it has no authoriser, catches up from A's
	// latest events, and then the join is B's own, authorised by bob.
	join(dave, space, b.ServerName)
	fmWaitMembership(t, alice, space, dave.UserID, "join")
	b.Partition()
	if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{
		"invite": 50, "users": map[string]any{alice.UserID.String(): 100, bob.UserID.String(): 50}}); err != nil {
		t.Fatal(err)
	}
	b.Heal()
	if lvl := fmPower(t, bob, room, bob.UserID); lvl != 0 {
		t.Fatalf("B already has the power-level change (bob at %d): nothing to catch up", lvl)
	}
	join(dave, room, b.ServerName)
	if got := authoriser(dave, dave.UserID); got != bob.UserID.String() {
		t.Fatalf("dave's join authorised by %v, want %s", got, bob.UserID)
	}
	if lvl := fmPower(t, bob, room, bob.UserID); lvl != 50 {
		t.Fatalf("bob's power on B after the join: %d", lvl)
	}
	fmWaitMembership(t, alice, room, dave.UserID, "join")
	if got := authoriser(alice, dave.UserID); got != bob.UserID.String() {
		t.Fatalf("dave's join as A sees it authorised by %v", got)
	}
}

// fmPower returns user's power level in the room as cli sees it (0 when not listed).
func fmPower(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID) int {
	t.Helper()
	var pl struct {
		Users map[string]int `json:"users"`
	}
	if err := cli.StateEvent(context.Background(), roomID, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	return pl.Users[user.String()]
}
