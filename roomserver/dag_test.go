package roomserver

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// branch is a test-side view of a room state for building events by hand.
type branch struct {
	state map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
	last  []gomatrixserverlib.PDU // the prev events of the next event
}

func newBranch(evs []*Event, last ...gomatrixserverlib.PDU) *branch {
	b := &branch{state: map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}, last: last}
	for _, ev := range evs {
		b.state[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *ev.StateKey()}] = ev.PDU
	}
	return b
}

func (b *branch) clone() *branch {
	c := &branch{state: map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}, last: append([]gomatrixserverlib.PDU(nil), b.last...)}
	for k, v := range b.state {
		c.state[k] = v
	}
	return c
}

func (b *branch) pdus() []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	for _, p := range b.state {
		out = append(out, p)
	}
	return out
}

// build signs an event on top of the branch (prev events: b.last; auth events from
// b.state) and advances the branch.
func (b *branch) build(t *testing.T, rs *Roomserver, roomID string, ver gomatrixserverlib.RoomVersion, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(ver)
	var prevs []string
	var depth int64
	for _, p := range b.last {
		prevs = append(prevs, p.EventID())
		depth = max(depth, p.Depth())
	}
	c, _ := json.Marshal(content)
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		Content: c, PrevEvents: prevs, Depth: depth + 1}
	builder := verImpl.NewEventBuilderFromProtoEvent(proto)
	provider, err := gomatrixserverlib.NewAuthEvents(b.pdus())
	if err != nil {
		t.Fatal(err)
	}
	if err := builder.AddAuthEvents(provider); err != nil {
		t.Fatal(err)
	}
	ev, err := builder.Build(time.Now(), rs.cfg.ServerName, rs.cfg.KeyID, rs.cfg.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := gomatrixserverlib.Allowed(ev, provider, userIDForSender); err != nil {
		t.Fatalf("test event %s not allowed on its branch: %v", typ, err)
	}
	if stateKey != nil {
		b.state[gomatrixserverlib.StateKeyTuple{EventType: typ, StateKey: *stateKey}] = ev
	}
	b.last = []gomatrixserverlib.PDU{ev}
	return ev
}

func stateIDs(evs []*Event) map[gomatrixserverlib.StateKeyTuple]string {
	out := map[gomatrixserverlib.StateKeyTuple]string{}
	for _, ev := range evs {
		out[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *ev.StateKey()}] = ev.EventID()
	}
	return out
}

func pduIDs(pdus []gomatrixserverlib.PDU) map[gomatrixserverlib.StateKeyTuple]string {
	out := map[gomatrixserverlib.StateKeyTuple]string{}
	for _, p := range pdus {
		out[gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}] = p.EventID()
	}
	return out
}

func sameState(t *testing.T, what string, got, want map[gomatrixserverlib.StateKeyTuple]string) {
	t.Helper()
	var keys []gomatrixserverlib.StateKeyTuple
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].EventType+keys[i].StateKey < keys[j].EventType+keys[j].StateKey })
	bad := false
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: %s/%s = %q, want %q", what, k.EventType, k.StateKey, got[k], want[k])
			bad = true
		}
	}
	if bad {
		t.FailNow()
	}
}

// TestForkResolution builds two concurrent branches of state changes on forked
// prev_events (the creator demotes another admin while that admin changes the join
// rules), inputs them, and checks the resolved current state against gomatrixserverlib's
// state resolution computed independently from the same events.
func TestForkResolution(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		for _, ver := range []gomatrixserverlib.RoomVersion{"1", "2", "10", "11", "12"} {
			t.Run(string(ver), func(t *testing.T) { testForkResolution(t, db, ver) })
		}
	})
}

func testForkResolution(t *testing.T, db *storage.DB, ver gomatrixserverlib.RoomVersion) {
	ctx := context.Background()
	var outputs []OutputEvent
	rs := newRS(t, db, func(c *Config) { c.Output = OutputFunc(func(ev OutputEvent) { outputs = append(outputs, ev) }) })
	alice, bob, carol := user("alice"), user("bob"), user("carol")
	roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: string(ver), Preset: spec.PresetPublicChat})
	for _, u := range []string{bob, carol} {
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: u}); err != nil {
			t.Fatal(err)
		}
	}
	pl, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomPowerLevels, "")
	var plContent map[string]any
	_ = json.Unmarshal(pl.Content(), &plContent)
	plContent["users"].(map[string]any)[bob] = 50
	head := mustSend(t, rs, roomID, alice, spec.MRoomPowerLevels, strp(""), plContent)

	cur, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	base := newBranch(cur, head.PDU)

	// Branch A: alice demotes bob. Branch B: bob makes the room invite-only, then renames it.
	a := base.clone()
	demoted := map[string]any{}
	for k, v := range plContent {
		demoted[k] = v
	}
	users := map[string]any{}
	for k, v := range plContent["users"].(map[string]any) {
		users[k] = v
	}
	delete(users, bob)
	demoted["users"] = users
	a1 := a.build(t, rs, roomID, ver, alice, spec.MRoomPowerLevels, strp(""), demoted)
	b := base.clone()
	b1 := b.build(t, rs, roomID, ver, bob, spec.MRoomJoinRules, strp(""), map[string]any{"join_rule": "invite"})
	b2 := b.build(t, rs, roomID, ver, bob, spec.MRoomName, strp(""), map[string]any{"name": "bob's room"})

	res, err := rs.InputEvents(ctx, []InputEvent{{Event: b1}, {Event: b2}, {Event: a1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil || r.Rejected || r.SoftFailed {
			t.Fatalf("input %s: err=%v rejected=%v softfailed=%v", r.EventID, r.Err, r.Rejected, r.SoftFailed)
		}
	}
	info, _ := rs.RoomInfo(ctx, roomID)
	if len(info.Extremities) != 2 {
		t.Fatalf("extremities %v, want the two branch tips", info.Extremities)
	}

	// Independent resolution of the two branches with gomatrixserverlib.
	all, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: Start, Dir: Forward, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var authEvents []gomatrixserverlib.PDU
	for _, ev := range all.Events {
		authEvents = append(authEvents, ev.PDU)
	}
	var want []gomatrixserverlib.PDU
	if ver == "12" {
		// See ResolveStateSets: v2.1 goes through resolveV21 (the sanity checks below
		// hold it to the expected outcome).
		want, err = ResolveStateSets(ver, [][]gomatrixserverlib.PDU{a.pdus(), b.pdus()}, authEvents, func(string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
	} else {
		want, err = gomatrixserverlib.ResolveConflictsNew(ver, [][]gomatrixserverlib.PDU{a.pdus(), b.pdus()}, authEvents,
			userIDForSender, func(string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, "current state after fork", stateIDs(got), pduIDs(want))
	// Sanity: the demotion wins and bob's join rule change (no longer authorised) is dropped.
	wantIDs := pduIDs(want)
	if wantIDs[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}] != a1.EventID() {
		t.Fatalf("resolution kept %s as power levels", wantIDs[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}])
	}
	if ver != "1" && wantIDs[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomJoinRules}] == b1.EventID() {
		t.Fatalf("bob's join rules survived the demotion")
	}

	// A merge event from federation and a local event on top of it.
	m := newBranch(nil, a1, b2)
	m.state = map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}
	for _, p := range want {
		m.state[gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}] = p
	}
	merge := m.build(t, rs, roomID, ver, carol, "m.room.message", nil, msg("merge"))
	res, err = rs.InputEvents(ctx, []InputEvent{{Event: merge}})
	if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed {
		t.Fatalf("merge: %v %+v", err, res)
	}
	before, err := rs.StateAtEvent(ctx, merge.EventID(), false)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, "state before merge", stateIDs(before), pduIDs(want))
	info, _ = rs.RoomInfo(ctx, roomID)
	if len(info.Extremities) != 1 || info.Extremities[0] != merge.EventID() {
		t.Fatalf("extremities after merge %v", info.Extremities)
	}
	got, _ = rs.CurrentState(ctx, roomID)
	sameState(t, "current state after merge", stateIDs(got), pduIDs(want))
	local := mustSend(t, rs, roomID, carol, "m.room.message", nil, msg("after"))
	if prev := local.PrevEventIDs(); len(prev) != 1 || prev[0] != merge.EventID() {
		t.Fatalf("local event prev_events %v", prev)
	}

	// Outputs: every timeline event once, in stream order; the fork's resolution is
	// reported as a state change.
	var last int64
	seen := map[string]bool{}
	for _, o := range outputs {
		if o.StreamPos <= last {
			t.Fatalf("outputs out of order: %d after %d", o.StreamPos, last)
		}
		last = o.StreamPos
		seen[o.Event.EventID()] = true
	}
	for _, id := range []string{a1.EventID(), b1.EventID(), b2.EventID(), merge.EventID(), local.EventID()} {
		if !seen[id] {
			t.Fatalf("no output for %s", id)
		}
	}
	if rs.StreamPosition() != last {
		t.Fatalf("stream position %d, last output %d", rs.StreamPosition(), last)
	}
}

// TestInputRejectsAndSoftFails checks events that fail auth from federation: against
// their auth events or the state before them they are stored rejected; against the
// current state only they are soft-failed. Neither reaches the current state.
func TestInputRejectsAndSoftFails(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
		if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		cur, _ := rs.CurrentState(ctx, roomID)
		info, _ := rs.RoomInfo(ctx, roomID)
		tip, _ := rs.Event(ctx, info.Extremities[0])
		base := newBranch(cur, tip.PDU)

		// Rejected: bob (power 0) changes the name: his auth events say he may not.
		b := base.clone()
		verImpl := gomatrixserverlib.MustGetRoomVersion("11")
		c, _ := json.Marshal(map[string]any{"name": "nope"})
		proto := &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: spec.MRoomName, StateKey: strp(""),
			Content: c, PrevEvents: []string{tip.EventID()}, Depth: tip.Depth() + 1}
		builder := verImpl.NewEventBuilderFromProtoEvent(proto)
		provider, _ := gomatrixserverlib.NewAuthEvents(b.pdus())
		_ = builder.AddAuthEvents(provider)
		bad, err := builder.Build(time.Now(), testServer, rs.cfg.KeyID, rs.cfg.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		// Soft-failed: bob sends a message on a branch from before he is banned.
		beforeBan := base.clone()
		if _, err := rs.Ban(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob}); err != nil {
			t.Fatal(err)
		}
		late := beforeBan.build(t, rs, roomID, "11", bob, "m.room.message", nil, msg("sneaky"))

		// Rejected: a message from alice that lists an auth event the selection
		// algorithm would not pick (the join rules).
		jr := base.state[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomJoinRules}]
		c, _ = json.Marshal(msg("extra auth"))
		proto = &gomatrixserverlib.ProtoEvent{SenderID: alice, RoomID: roomID, Type: "m.room.message",
			Content: c, PrevEvents: []string{tip.EventID()}, Depth: tip.Depth() + 1}
		builder = verImpl.NewEventBuilderFromProtoEvent(proto)
		_ = builder.AddAuthEvents(provider)
		builder.AuthEvents = append(builder.AuthEvents.([]string), jr.EventID())
		extraAuth, err := builder.Build(time.Now(), testServer, rs.cfg.KeyID, rs.cfg.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}

		// Rejected: a message whose auth events include one nobody could fetch (an
		// outlier with the same unknown auth event is not stored at all).
		c, _ = json.Marshal(msg("unknown auth"))
		proto = &gomatrixserverlib.ProtoEvent{SenderID: alice, RoomID: roomID, Type: "m.room.message",
			Content: c, PrevEvents: []string{tip.EventID()}, Depth: tip.Depth() + 1}
		builder = verImpl.NewEventBuilderFromProtoEvent(proto)
		_ = builder.AddAuthEvents(provider)
		builder.AuthEvents = append(builder.AuthEvents.([]string), "$unknown-auth-event")
		unknownAuth, err := builder.Build(time.Now(), testServer, rs.cfg.KeyID, rs.cfg.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if res, err := rs.InputEvents(ctx, []InputEvent{{Kind: InputOutlier, Event: unknownAuth}}); err != nil || res[0].Err == nil {
			t.Fatalf("outlier with an unknown auth event: %+v %v", res, err)
		}

		posBefore := rs.StreamPosition()
		res, err := rs.InputEvents(ctx, []InputEvent{{Event: bad}, {Event: late}, {Event: extraAuth}, {Event: unknownAuth}})
		if err != nil {
			t.Fatal(err)
		}
		if !res[2].Rejected {
			t.Fatalf("event with an extra auth event: %+v", res[2])
		}
		if !res[3].Rejected || res[3].Err != nil {
			t.Fatalf("event with an unknown auth event: %+v", res[3])
		}
		if !res[0].Rejected || res[0].SoftFailed || res[0].Err != nil {
			t.Fatalf("bad name: %+v", res[0])
		}
		if res[1].Rejected || !res[1].SoftFailed || res[1].Err != nil {
			t.Fatalf("late message: %+v", res[1])
		}
		if name, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomName, ""); name != nil {
			t.Fatalf("rejected name entered the state")
		}
		if evs, err := rs.StreamEvents(ctx, roomID, posBefore, rs.StreamPosition(), 10, false); err != nil || len(evs) != 0 {
			t.Fatalf("rejected/soft-failed events reached the stream: %v %v", evs, err)
		}
		page, _ := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: End, Dir: Backward, Limit: 100})
		for _, ev := range page.Events {
			if ev.EventID() == bad.EventID() || ev.EventID() == late.EventID() {
				t.Fatalf("%s is in the timeline", ev.EventID())
			}
		}
		info2, _ := rs.RoomInfo(ctx, roomID)
		if len(info2.Extremities) != 1 {
			t.Fatalf("extremities %v", info2.Extremities)
		}
		// Stored, flagged.
		ev, err := rs.Event(ctx, late.EventID())
		if err != nil || !ev.SoftFailed {
			t.Fatalf("soft-failed event: %v %v", ev, err)
		}
		// Idempotent.
		res, _ = rs.InputEvents(ctx, []InputEvent{{Event: late}})
		if !res[0].AlreadyKnown {
			t.Fatalf("second input: %+v", res[0])
		}
	})
}

// TestInputNewRoom inputs a room built elsewhere from its create event on, then the
// same events again (already known).
func TestInputNewRoom(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		src := newRS(t, db)
		for _, ver := range []string{"1", "11", "12"} {
			roomID := mustCreate(t, src, CreateRoomRequest{Creator: user("alice"), RoomVersion: ver, Name: "elsewhere"})
			mustSend(t, src, roomID, user("alice"), "m.room.message", nil, msg("hi"))
			page, err := src.Messages(ctx, MessagesRequest{RoomID: roomID, From: Start, Dir: Forward, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var in []InputEvent
			for _, ev := range page.Events {
				in = append(in, InputEvent{Event: ev.PDU})
			}
			// A second roomserver on a second database receives them.
			dst := newRS(t, storagetest.Open(t, db.Dialect().String()))
			res, err := dst.InputEvents(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Err != nil || r.Rejected || r.SoftFailed {
					t.Fatalf("v%s: %+v", ver, r)
				}
			}
			want, _ := src.CurrentState(ctx, roomID)
			got, _ := dst.CurrentState(ctx, roomID)
			sameState(t, "copied room", stateIDs(got), stateIDs(want))
			res, _ = dst.InputEvents(ctx, in[:1])
			if !res[0].AlreadyKnown {
				t.Fatalf("create input twice: %+v", res[0])
			}
		}
	})
}
