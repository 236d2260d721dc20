package roomserver

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func noneRejected(string) bool { return false }

func roomEvents(t *testing.T, rs *Roomserver, roomID string) []gomatrixserverlib.PDU {
	t.Helper()
	all, err := rs.Messages(context.Background(), MessagesRequest{RoomID: roomID, From: Start, Dir: Forward, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []gomatrixserverlib.PDU
	for _, ev := range all.Events {
		out = append(out, ev.PDU)
	}
	return out
}

// State res v2.1 starts from an empty partial state (MSC4297): a conflicted join rule
// change by a user who later left is checked against its own auth events (where its
// sender was joined), not against the unconflicted state (where they have left).
// State res v2 dropped both join rules and left the room without any.
func TestResolveV21StartsFromEmptySet(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "12", Preset: spec.PresetPublicChat})
		mustSend(t, rs, roomID, bob, spec.MRoomMember, strp(bob), map[string]any{"membership": "join"})
		public, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomJoinRules, "")
		invite := mustSend(t, rs, roomID, alice, spec.MRoomJoinRules, strp(""), map[string]any{"join_rule": "invite"})
		mustSend(t, rs, roomID, alice, spec.MRoomMember, strp(alice), map[string]any{"membership": "leave"})
		cur, err := rs.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		right := newBranch(cur)
		wrong := right.clone()
		wrong.state[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomJoinRules}] = public.PDU

		got, err := ResolveStateSets("12", [][]gomatrixserverlib.PDU{right.pdus(), wrong.pdus()}, roomEvents(t, rs, roomID), noneRejected)
		if err != nil {
			t.Fatal(err)
		}
		ids := pduIDs(got)
		if jr := ids[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomJoinRules}]; jr != invite.EventID() {
			t.Fatalf("join rules resolved to %q, want the invite-only change %s", jr, invite.EventID())
		}
		// The unconflicted state still wins at the end: alice stays out.
		if m := ids[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: alice}]; m != right.state[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: alice}].EventID() {
			t.Fatalf("alice's membership resolved to %s", m)
		}
	})
}

// The v2.1 full conflicted set includes the conflicted subgraph: events on an auth
// path between two conflicted events, even when every state set's auth chain has them.
func TestFullConflictedSetIncludesConflictedSubgraph(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob, carol := user("alice"), user("bob"), user("carol")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "12", Preset: spec.PresetPublicChat})
		cur, err := rs.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := rs.RoomInfo(ctx, roomID)
		head, _ := rs.eventByID(ctx, info.Extremities[0])
		br := newBranch(cur, head.PDU)
		pl := func(users map[string]any) gomatrixserverlib.PDU {
			return br.build(t, rs, roomID, "12", alice, spec.MRoomPowerLevels, strp(""), map[string]any{"users": users})
		}
		pl1 := pl(map[string]any{bob: 50})
		stateB := br.clone()
		pl2 := pl(map[string]any{bob: 50, carol: 10})
		x := br.build(t, rs, roomID, "12", carol, spec.MRoomMember, strp(carol), map[string]any{"membership": "join"})
		pl3 := pl(map[string]any{bob: 60, carol: 10})
		// B: PL1 as power levels, but carol's join (authorised by PL2) as in A.
		stateB.state[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: carol}] = x

		auth := roomEvents(t, rs, roomID)
		auth = append(auth, pl1, pl2, x, pl3)
		sets := [][]gomatrixserverlib.PDU{br.pdus(), stateB.pdus()}
		conflicted, _ := splitConflicted(sets)
		full := map[string]bool{}
		for _, p := range fullConflictedSet(sets, conflicted, auth) {
			full[p.EventID()] = true
		}
		for name, id := range map[string]string{"PL1": pl1.EventID(), "PL2": pl2.EventID(), "PL3": pl3.EventID()} {
			if !full[id] {
				t.Errorf("%s is not in the full conflicted set", name)
			}
		}
		got, err := ResolveStateSets("12", sets, auth, noneRejected)
		if err != nil {
			t.Fatal(err)
		}
		if p := pduIDs(got)[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}]; p != pl3.EventID() {
			t.Fatalf("power levels resolved to %s, want PL3", p)
		}
	})
}
