package roomserver

import (
	"context"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestHistoryVisibleRule(t *testing.T) {
	for _, c := range []struct {
		vis, membership string
		joinedLater     bool
		want            bool
	}{
		{"world_readable", "", false, true},
		{"shared", "join", false, true},
		{"shared", "", true, true},
		{"shared", "leave", false, false},
		{"shared", "invite", false, false},
		{"invited", "invite", false, true},
		{"invited", "", true, false},
		{"joined", "join", false, true},
		{"joined", "invite", true, false},
		{"bogus", "", true, true}, // unknown values are treated as shared
	} {
		if got := HistoryVisible(c.vis, c.membership, c.joinedLater); got != c.want {
			t.Errorf("HistoryVisible(%q, %q, %v) = %v", c.vis, c.membership, c.joinedLater, got)
		}
	}
}

// TestHistoryVisibility runs each history visibility against users who join at
// different times: bob is invited after E1, joins after E2 and leaves after E3;
// carol never joins; dave joins after E4.
func TestHistoryVisibility(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob, carol, dave := user("alice"), user("bob"), user("carol"), user("dave")
		want := map[string]map[string]string{ // visibility -> user -> visible among E1..E4
			"world_readable": {bob: "1111", carol: "1111", dave: "1111"},
			"shared":         {bob: "1110", carol: "0000", dave: "1111"},
			"invited":        {bob: "0110", carol: "0000", dave: "0000"},
			"joined":         {bob: "0010", carol: "0000", dave: "0000"},
		}
		for _, vis := range []string{"world_readable", "shared", "invited", "joined"} {
			t.Run(vis, func(t *testing.T) {
				roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat,
					InitialState: []StateEvent{{Type: spec.MRoomHistoryVisibility, Content: map[string]any{"history_visibility": vis}}}})
				var evs []*Event
				send := func(i int) {
					evs = append(evs, mustSend(t, rs, roomID, alice, "m.room.message", nil, msg(fmt.Sprint("E", i))))
				}
				send(1)
				if _, err := rs.Invite(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob}); err != nil {
					t.Fatal(err)
				}
				send(2)
				if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
					t.Fatal(err)
				}
				send(3)
				if _, err := rs.Leave(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
					t.Fatal(err)
				}
				send(4)
				if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: dave}); err != nil {
					t.Fatal(err)
				}
				for _, u := range []string{bob, carol, dave} {
					visible, err := rs.VisibleEvents(ctx, u, evs)
					if err != nil {
						t.Fatal(err)
					}
					seen := map[string]bool{}
					for _, ev := range visible {
						seen[ev.EventID()] = true
					}
					got := ""
					for _, ev := range evs {
						if seen[ev.EventID()] {
							got += "1"
						} else {
							got += "0"
						}
					}
					if got != want[vis][u] {
						t.Errorf("%s sees %s, want %s", u, got, want[vis][u])
					}
					// The read paths use the same rule.
					for i, ev := range evs {
						_, err := rs.EventForUser(ctx, u, roomID, ev.EventID())
						if (err == nil) != (want[vis][u][i] == '1') {
							t.Errorf("EventForUser(%s, E%d) = %v", u, i+1, err)
						}
					}
				}
				page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: End, Dir: Backward, Limit: 50, Viewer: carol})
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range page.Events {
					if ev.Type() == "m.room.message" && vis != "world_readable" {
						t.Errorf("carol sees %s through /messages", ev.EventID())
					}
				}
			})
		}
	})
}

// TestSharedHistoryConcurrentWithJoin: in a shared room, an event concurrent with
// bob's join (its prev events are before the join, as after a network partition) and
// received after it is visible to bob, who is a member after it was sent; once bob
// has left, it is not (he was never joined at it, nor joined after it arrived).
func TestSharedHistoryConcurrentWithJoin(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat, RoomVersion: "11"})
		before := mustSend(t, rs, roomID, alice, "m.room.message", nil, msg("before"))
		cur, err := rs.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		side := newBranch(cur, before.PDU)
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		concurrent := side.build(t, rs, roomID, "11", alice, "m.room.message", nil, msg("concurrent"))
		res, err := rs.InputEvents(ctx, []InputEvent{{Event: concurrent}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed {
			t.Fatalf("input: %v %+v", err, res)
		}
		if ok, err := rs.CanSeeEvent(ctx, bob, res[0].Event); err != nil || !ok {
			t.Fatalf("bob (joined) cannot see the concurrent event: %v", err)
		}
		if _, err := rs.Leave(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		if ok, err := rs.CanSeeEvent(ctx, bob, res[0].Event); err != nil || ok {
			t.Fatalf("bob (left) sees the concurrent event: %v", err)
		}
	})
}
