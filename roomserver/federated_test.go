package roomserver

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// remoteServer is a second roomserver (its own database, name and key) that joins
// rooms of the first one the way federation does.
type remoteServer struct {
	rs   *Roomserver
	name spec.ServerName
	key  config.SigningKey
}

func newRemote(t *testing.T, engine string) *remoteServer {
	t.Helper()
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &remoteServer{name: "b.example", key: key}
	r.rs = newRS(t, storagetest.Open(t, engine), func(c *Config) {
		c.ServerName, c.KeyID, c.PrivateKey = r.name, key.ID, key.Private
	})
	return r
}

func (r *remoteServer) user(local string) string { return "@" + local + ":" + string(r.name) }

// buildFrom builds and signs (as the remote) an event from a template of rs.
func (r *remoteServer) buildFrom(t *testing.T, proto *gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.RoomVersion) gomatrixserverlib.PDU {
	t.Helper()
	ev, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(proto).
		Build(time.Now(), r.name, r.key.ID, r.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// joinAnswer is what send_join answers: the state before the join and its auth chain.
func joinAnswer(t *testing.T, rs *Roomserver, eventID string) (state, chain []gomatrixserverlib.PDU) {
	t.Helper()
	ctx := context.Background()
	evs, err := rs.StateAtEvent(ctx, eventID, false)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var next []string
	for _, ev := range evs {
		state = append(state, ev.PDU)
		next = append(next, ev.AuthEventIDs()...)
	}
	for len(next) > 0 {
		id := next[0]
		next = next[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		ev, err := rs.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, ev.PDU)
		next = append(next, ev.AuthEventIDs()...)
	}
	return state, chain
}

// input gives events to rs and fails unless they are accepted.
func mustInput(t *testing.T, rs *Roomserver, evs ...gomatrixserverlib.PDU) {
	t.Helper()
	for _, ev := range evs {
		res, err := rs.InputEvents(context.Background(), []InputEvent{{Kind: InputNew, Event: ev}})
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed {
			t.Fatalf("input %s: %+v %v", ev.Type(), res, err)
		}
	}
}

func TestJoinFromStateAndOutOfBandMemberships(t *testing.T) {
	for _, engine := range storagetest.Engines {
		t.Run(engine, func(t *testing.T) {
			if engine == "postgres" {
				storagetest.RequirePostgres(t)
			}
			testJoinFromState(t, engine)
		})
	}
}

func testJoinFromState(t *testing.T, engine string) {
	ctx := context.Background()
	rsA := newRS(t, storagetest.Open(t, engine))
	b := newRemote(t, engine)
	alice, bob, carol := user("alice"), b.user("bob"), b.user("carol")
	room := mustCreate(t, rsA, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat, Name: "Lobby"})
	mustSend(t, rsA, room, alice, "m.room.message", nil, msg("before bob"))

	// A template for bob's join, built and signed by B, accepted by A.
	if _, _, err := rsA.MembershipTemplate(ctx, room, bob, spec.Leave); err == nil {
		t.Fatal("a leave template for a user not in the room")
	}
	proto, ver, err := rsA.MembershipTemplate(ctx, room, bob, spec.Join)
	if err != nil {
		t.Fatal(err)
	}
	join := b.buildFrom(t, proto, ver)
	mustInput(t, rsA, join)
	state, chain := joinAnswer(t, rsA, join.EventID())

	// A join whose state does not allow it is refused and leaves B out of the room.
	var noJoinRules []gomatrixserverlib.PDU
	for _, ev := range state {
		if ev.Type() != spec.MRoomJoinRules {
			noJoinRules = append(noJoinRules, ev)
		}
	}
	if _, err := b.rs.JoinFromState(ctx, join, noJoinRules, chain); err == nil {
		t.Fatal("join accepted against a state without its join rules")
	}
	if _, err := b.rs.RoomInfo(ctx, room); err == nil {
		t.Fatal("a refused join stored the room")
	}

	ev, err := b.rs.JoinFromState(ctx, join, state, chain)
	if err != nil {
		t.Fatal(err)
	}
	if ev.StreamPos == 0 || ev.EventID() != join.EventID() {
		t.Fatalf("stored join: %+v", ev)
	}
	members, err := b.rs.JoinedMembers(ctx, room)
	if err != nil || !slices.Equal(members, []string{alice, bob}) {
		t.Fatalf("members on B: %v %v", members, err)
	}
	if name, err := b.rs.CurrentStateEvent(ctx, room, spec.MRoomName, ""); err != nil || name == nil {
		t.Fatalf("room name on B: %v %v", name, err)
	}
	// The room works on B: bob's message is built on his join and A accepts it.
	m := mustSend(t, b.rs, room, bob, "m.room.message", nil, msg("hello from B"))
	if !slices.Equal(m.PrevEventIDs(), []string{join.EventID()}) {
		t.Fatalf("bob's message prev events: %v", m.PrevEventIDs())
	}
	mustInput(t, rsA, m.PDU)
	// The room name, an outlier on B (state of the join), given again as a new event
	// with its state from A: it joins B's timeline with a new stream position, under
	// its NID; B's timeline descends from it, so the extremities stay.
	name, err := b.rs.CurrentStateEvent(ctx, room, spec.MRoomName, "")
	if err != nil {
		t.Fatal(err)
	}
	if name.Outlier {
		before, err := rsA.StateAtEvent(ctx, name.EventID(), false)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range before {
			ids = append(ids, e.EventID())
		}
		pos := b.rs.StreamPosition()
		res, err := b.rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: name.PDU, StateBefore: ids}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed || res[0].Event.Outlier ||
			res[0].Event.NID != name.NID || res[0].Event.StreamPos <= pos {
			t.Fatalf("the join's state event given as new: %+v %v", res, err)
		}
		if info, err := b.rs.RoomInfo(ctx, room); err != nil || !slices.Equal(info.Extremities, []string{m.EventID()}) {
			t.Fatalf("extremities after the promotion: %+v %v", info, err)
		}
	} else {
		t.Fatal("the room name of the join's state is not an outlier on B")
	}
	// Importing again changes nothing.
	if again, err := b.rs.JoinFromState(ctx, join, state, chain); err != nil || again.NID != ev.NID {
		t.Fatalf("second import: %v %v", again, err)
	}

	// Out of band: carol (B) is invited to a room B is not in.
	private := mustCreate(t, rsA, CreateRoomRequest{Creator: alice, Preset: spec.PresetPrivateChat})
	inv, err := rsA.BuildInvite(ctx, MembershipRequest{RoomID: private, Sender: alice, Target: carol})
	if err != nil {
		t.Fatal(err)
	}
	inv = inv.Sign(string(b.name), b.key.ID, b.key.Private)
	mustInput(t, rsA, inv)
	if _, err := b.rs.StoreOutOfBandMembership(ctx, inv); err != nil {
		t.Fatal(err)
	}
	ms, err := b.rs.RoomsOfUser(ctx, carol, "")
	if err != nil || len(ms) != 1 || ms[0].Membership != spec.Invite || ms[0].StreamPos == 0 {
		t.Fatalf("carol's rooms on B: %+v %v", ms, err)
	}
	if _, err := b.rs.SendEvent(ctx, SendRequest{RoomID: private, Sender: carol, Type: "m.room.message", Content: msg("x")}); err == nil {
		t.Fatal("sent to a room only known from an invite")
	}
	// The invite pushed as a room event: B is not in the room, it stays out of band.
	if res, err := b.rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: inv}}); err != nil || res[0].Err == nil {
		t.Fatalf("out-of-band invite given as new: %+v %v", res, err)
	}
	if ev, err := b.rs.Event(ctx, inv.EventID()); err != nil || !ev.Outlier || ev.Rejected {
		t.Fatalf("out-of-band invite after: %+v %v", ev, err)
	}
	// In a room B is in, memberships must come through the DAG.
	if _, err := b.rs.StoreOutOfBandMembership(ctx, m.PDU); err == nil {
		t.Fatal("out-of-band event accepted in a room B is in")
	}
	// Carol accepts: the join imports the room over the invite.
	proto, ver, err = rsA.MembershipTemplate(ctx, private, carol, spec.Join)
	if err != nil {
		t.Fatal(err)
	}
	cjoin := b.buildFrom(t, proto, ver)
	mustInput(t, rsA, cjoin)
	state, chain = joinAnswer(t, rsA, cjoin.EventID())
	if _, err := b.rs.JoinFromState(ctx, cjoin, state, chain); err != nil {
		t.Fatal(err)
	}
	ms, err = b.rs.RoomsOfUser(ctx, carol, spec.Join)
	if err != nil || len(ms) != 1 || ms[0].RoomID != private {
		t.Fatalf("carol's joined rooms on B: %+v %v", ms, err)
	}
	mustSend(t, b.rs, private, carol, "m.room.message", nil, msg("thanks"))
}
