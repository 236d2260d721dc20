package roomserver

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// snapshotOf captures what an operation must not change.
type roomSnapshot struct {
	pos         int64
	extremities string
	state       map[string]string
}

func takeSnapshot(t *testing.T, rs *Roomserver, roomID string) roomSnapshot {
	t.Helper()
	ctx := context.Background()
	info, err := rs.RoomInfo(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	s := roomSnapshot{pos: rs.StreamPosition(), state: map[string]string{}}
	for _, x := range info.Extremities {
		s.extremities += x + ","
	}
	for _, ev := range st {
		s.state[ev.Type()+"|"+*ev.StateKey()] = ev.EventID()
	}
	return s
}

func (s roomSnapshot) same(t *testing.T, o roomSnapshot) {
	t.Helper()
	if s.pos != o.pos || s.extremities != o.extremities || len(s.state) != len(o.state) {
		t.Fatalf("room changed: %+v -> %+v", s, o)
	}
	for k, v := range s.state {
		if o.state[k] != v {
			t.Fatalf("state %s changed", k)
		}
	}
}

func TestAuthFailuresChangeNothing(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob, carol, dave := user("alice"), user("bob"), user("carol"), user("dave")
		public := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
		private := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPrivateChat})
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: public, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: public, Sender: dave}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Ban(ctx, MembershipRequest{RoomID: public, Sender: alice, Target: dave, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			room string
			do   func() error
		}{
			{"non-member message", public, func() error {
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: carol, Type: "m.room.message", Content: msg("hi")})
				return err
			}},
			{"state without power", public, func() error {
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: bob, Type: spec.MRoomName, StateKey: strp(""), Content: map[string]any{"name": "x"}})
				return err
			}},
			{"power levels without power", public, func() error {
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: bob, Type: spec.MRoomPowerLevels, StateKey: strp(""), Content: map[string]any{"users": map[string]any{bob: 100}}})
				return err
			}},
			{"banned user joins", public, func() error {
				_, err := rs.Join(ctx, MembershipRequest{RoomID: public, Sender: dave})
				return err
			}},
			{"banned user sends", public, func() error {
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: dave, Type: "m.room.message", Content: msg("hi")})
				return err
			}},
			{"invite-only join", private, func() error {
				_, err := rs.Join(ctx, MembershipRequest{RoomID: private, Sender: bob})
				return err
			}},
			{"kick without power", public, func() error {
				_, err := rs.Kick(ctx, MembershipRequest{RoomID: public, Sender: bob, Target: alice})
				return err
			}},
			{"redact someone else's event without power", public, func() error {
				ev := mustSendNoSnapshot(t, rs, public, alice)
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: bob, Type: spec.MRoomRedaction, Redacts: ev, Content: map[string]any{"redacts": ev}})
				return err
			}},
			{"leave a room never joined", private, func() error {
				_, err := rs.Leave(ctx, MembershipRequest{RoomID: private, Sender: carol})
				return err
			}},
			{"knock on a non-knock room", public, func() error {
				_, err := rs.Knock(ctx, MembershipRequest{RoomID: private, Sender: carol})
				return err
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if c.name == "redact someone else's event without power" {
					// the setup sends an event; snapshot after it inside do
					err := c.do()
					wantErrCode(t, err, spec.ErrorForbidden)
					return
				}
				before := takeSnapshot(t, rs, c.room)
				wantErrCode(t, c.do(), spec.ErrorForbidden)
				takeSnapshot(t, rs, c.room).same(t, before)
			})
		}
		_, err := rs.SendEvent(ctx, SendRequest{RoomID: "!nope:" + testServer, Sender: alice, Type: "m.room.message", Content: msg("hi")})
		wantErrCode(t, err, spec.ErrorNotFound)
		_, err = rs.SendEvent(ctx, SendRequest{RoomID: public, Sender: alice, Type: "m.room.message", Content: []byte(`[1]`)})
		wantErrCode(t, err, spec.ErrorBadJSON)
	})
}

func mustSendNoSnapshot(t *testing.T, rs *Roomserver, roomID, sender string) string {
	return mustSend(t, rs, roomID, sender, "m.room.message", nil, msg("target")).EventID()
}

func TestMembershipOperations(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob, carol := user("alice"), user("bob"), user("carol")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPrivateChat})
		membership := func(u string) string {
			t.Helper()
			m, _, err := rs.Membership(ctx, roomID, u)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		step := func(name string, err error, u, want string) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := membership(u); got != want {
				t.Fatalf("%s: %s is %q, want %q", name, u, got, want)
			}
		}
		_, err := rs.Invite(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob, IsDirect: true})
		step("invite", err, bob, spec.Invite)
		_, err = rs.Invite(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: "@x:other.example"})
		wantErrCode(t, err, spec.ErrorForbidden)
		_, err = rs.Leave(ctx, MembershipRequest{RoomID: roomID, Sender: bob})
		step("reject invite", err, bob, spec.Leave)
		_, err = rs.Invite(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob})
		step("re-invite", err, bob, spec.Invite)
		j1, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob, Content: map[string]any{"displayname": "Bob"}})
		step("join", err, bob, spec.Join)
		j2, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob, Content: map[string]any{"displayname": "Bob"}})
		step("join again", err, bob, spec.Join)
		if j1.EventID() != j2.EventID() {
			t.Fatal("an unchanged join sent a new event")
		}
		_, err = rs.Kick(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: carol})
		wantErrCode(t, err, spec.ErrorForbidden) // carol is not in the room
		_, err = rs.Kick(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob, Reason: "bye"})
		step("kick", err, bob, spec.Leave)
		_, err = rs.Unban(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob})
		wantErrCode(t, err, spec.ErrorForbidden) // not banned
		_, err = rs.Ban(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob})
		step("ban", err, bob, spec.Ban)
		err = rs.Forget(ctx, roomID, alice)
		wantErrCode(t, err, spec.ErrorUnknown) // alice is still joined
		if err := rs.Forget(ctx, roomID, bob); err != nil {
			t.Fatal(err)
		}
		rooms, _ := rs.RoomsOfUser(ctx, bob, "")
		if len(rooms) != 1 || !rooms[0].Forgotten || rooms[0].Membership != spec.Ban {
			t.Fatalf("bob's rooms %+v", rooms)
		}
		_, err = rs.Unban(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob})
		step("unban", err, bob, spec.Leave)
		rooms, _ = rs.RoomsOfUser(ctx, bob, "")
		if rooms[0].Forgotten {
			t.Fatal("a new membership must clear forgotten")
		}

		// Knocking (room version 7+, join rule knock).
		knockRoom := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "10",
			InitialState: []StateEvent{{Type: spec.MRoomJoinRules, Content: map[string]any{"join_rule": "knock"}}}})
		if _, err := rs.Knock(ctx, MembershipRequest{RoomID: knockRoom, Sender: carol, Reason: "let me in"}); err != nil {
			t.Fatal(err)
		}
		if m, _, _ := rs.Membership(ctx, knockRoom, carol); m != spec.Knock {
			t.Fatalf("carol %q", m)
		}
		if _, err := rs.Invite(ctx, MembershipRequest{RoomID: knockRoom, Sender: alice, Target: carol}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: knockRoom, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		v6 := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "6",
			InitialState: []StateEvent{{Type: spec.MRoomJoinRules, Content: map[string]any{"join_rule": "knock"}}}})
		_, err = rs.Knock(ctx, MembershipRequest{RoomID: v6, Sender: carol})
		wantErrCode(t, err, spec.ErrorForbidden)

		// Restricted join: members of the space may join, authorised by a local admin.
		space := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
		restricted := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "10",
			InitialState: []StateEvent{{Type: spec.MRoomJoinRules, Content: map[string]any{"join_rule": "restricted",
				"allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}}}}})
		_, err = rs.Join(ctx, MembershipRequest{RoomID: restricted, Sender: carol})
		wantErrCode(t, err, spec.ErrorForbidden)
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: space, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		ev, err := rs.Join(ctx, MembershipRequest{RoomID: restricted, Sender: carol})
		if err != nil {
			t.Fatal(err)
		}
		if got := contentField(t, ev, "join_authorised_via_users_server"); got != alice {
			t.Fatalf("authorised via %v", got)
		}

		// Joined rooms and members.
		joined, _ := rs.JoinedRooms(ctx, carol)
		if len(joined) != 3 {
			t.Fatalf("carol joined %v", joined)
		}
		members, err := rs.Members(ctx, MembersRequest{RoomID: roomID, NotMembership: spec.Leave})
		if err != nil || len(members) != 1 || *members[0].StateKey() != alice {
			t.Fatalf("members %v %v", members, err)
		}
		all, _ := rs.Members(ctx, MembersRequest{RoomID: roomID})
		if len(all) != 2 {
			t.Fatalf("all members %d", len(all))
		}
		// Members at an earlier point: when bob was joined.
		past, _ := rs.Members(ctx, MembersRequest{RoomID: roomID, AtStream: j1.StreamPos, Membership: spec.Join})
		if len(past) != 2 {
			t.Fatalf("members at bob's join: %d", len(past))
		}
	})
}

// A restricted join through an allowed room this server has left cannot be authorised
// here (our copy of that room is no longer kept current): M_UNABLE_TO_AUTHORISE_JOIN, so
// the joining user's server may ask another server of the room. Also a test of
// SharesRoomWithServerSince, which says whether a user and a server have shared a room
// without a break since a stream position.
func TestRestrictedJoinThroughRoomWeLeft(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, carol := user("alice"), user("carol")
		space := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
		restricted := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "10",
			InitialState: []StateEvent{{Type: spec.MRoomJoinRules, Content: map[string]any{"join_rule": "restricted",
				"allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}}}}})
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: space, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		server := rs.ServerName()
		before := rs.StreamPosition()
		if ok, err := rs.SharesRoomWithServerSince(ctx, carol, server, before); err != nil || !ok {
			t.Fatalf("carol shares the space with a user of %s since now: %v %v", server, ok, err)
		}
		if ok, _ := rs.SharesRoomWithServerSince(ctx, carol, "other.example", -1); ok {
			t.Fatal("carol shares a room with a server nobody is from")
		}
		// Everyone of ours leaves the space (carol last, so her join is the stale one).
		if _, err := rs.Leave(ctx, MembershipRequest{RoomID: space, Sender: alice}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Leave(ctx, MembershipRequest{RoomID: space, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := rs.SharesRoomWithServerSince(ctx, carol, server, -1); ok {
			t.Fatal("carol still shares a room after leaving it")
		}
		// Carol rejoins: she shares the space again, but not since before.
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: space, Sender: carol}); err == nil {
			if ok, _ := rs.SharesRoomWithServerSince(ctx, carol, server, before); ok {
				t.Fatal("a rejoin counts as sharing the room without a break")
			}
			if _, err := rs.Leave(ctx, MembershipRequest{RoomID: space, Sender: carol}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := rs.Join(ctx, MembershipRequest{RoomID: restricted, Sender: carol})
		wantErrCode(t, err, spec.ErrorUnableToAuthoriseJoin)
	})
}
