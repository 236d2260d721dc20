package test

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/test/harness"
)

// TestSyncPresenceOfNewRoomMates: an incremental /sync carries the presence of users
// who newly share a room with the requester (both ways: the requester joined their
// room, or they joined the requester's), even when that presence did not change
// since the token; the next sync does not repeat it.
func TestSyncPresenceOfNewRoomMates(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		doSync(t, alice, mautrix.ReqSync{}) // alice is online (before bob's token)
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
		rb := doSync(t, bob, mautrix.ReqSync{}) // bob is online
		ra := doSync(t, alice, mautrix.ReqSync{})
		e.membership("join", bob, nil, roomID)

		rb2 := doSync(t, bob, mautrix.ReqSync{Since: rb.NextBatch})
		if _, ok := rb2.Rooms.Join[id.RoomID(roomID)]; !ok {
			t.Fatal("newly joined room missing")
		}
		if p := presenceOf(rb2, alice.UserID); p == nil || p["presence"] != "online" {
			t.Errorf("bob joined alice's room: alice's presence = %v", p)
		}
		ra2 := doSync(t, alice, mautrix.ReqSync{Since: ra.NextBatch})
		if p := presenceOf(ra2, bob.UserID); p == nil || p["presence"] != "online" {
			t.Errorf("bob joined: alice sees his presence as %v", p)
		}
		if again := doSync(t, alice, mautrix.ReqSync{Since: ra2.NextBatch}); presenceOf(again, bob.UserID) != nil {
			t.Error("bob's unchanged presence sent again")
		}
	})
}

// TestSyncNewlyJoinedRoomLimited: in an incremental /sync, a newly joined room whose
// timeline does not reach back to the room's creation is limited (the client has no
// earlier timeline of it; there is history to paginate), even when the timeline filter
// left fewer events than the limit.
func TestSyncNewlyJoinedRoomLimited(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
		for i := 0; i < 3; i++ {
			e.send(alice, roomID, "before")
		}
		f := inlineFilter(map[string]any{"room": map[string]any{
			"timeline": map[string]any{"limit": 10, "types": []string{"m.room.message"}},
			"state":    map[string]any{"types": []string{}}}})
		rb := doSync(t, bob, mautrix.ReqSync{FilterID: f})
		e.send(alice, roomID, "after")
		e.membership("join", bob, nil, roomID)
		r := doSync(t, bob, mautrix.ReqSync{Since: rb.NextBatch, FilterID: f})
		jr, ok := r.Rooms.Join[id.RoomID(roomID)]
		if !ok {
			t.Fatal("newly joined room missing")
		}
		if len(jr.Timeline.Events) != 4 || !jr.Timeline.Limited {
			t.Errorf("timeline %v limited %v, want 4 messages and limited", timelineBodies(jr.Timeline.Events), jr.Timeline.Limited)
		}
		// Unfiltered, the timeline starts at the room's creation: nothing before it.
		carol := e.register("carol")
		all := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}}})
		rc := doSync(t, carol, mautrix.ReqSync{FilterID: all})
		e.membership("join", carol, nil, roomID)
		r = doSync(t, carol, mautrix.ReqSync{Since: rc.NextBatch, FilterID: all})
		if jr := r.Rooms.Join[id.RoomID(roomID)]; jr == nil || jr.Timeline.Limited || len(jr.Timeline.Events) == 0 ||
			jr.Timeline.Events[0].Type != event.StateCreate {
			t.Errorf("whole history of a newly joined room: %+v", jr)
		}
	})
}

// TestSyncForgottenRoomLeave: a room left and forgotten still shows its leave in an
// incremental /sync from before the leave (another device must learn it), but not in
// an initial one.
func TestSyncForgottenRoomLeave(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		ra := doSync(t, alice, mautrix.ReqSync{})
		if _, err := alice.LeaveRoom(e.ctx, id.RoomID(roomID)); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.ForgetRoom(e.ctx, id.RoomID(roomID)); err != nil {
			t.Fatal(err)
		}
		e.send(bob, roomID, "after the forget")
		f := inlineFilter(map[string]any{"room": map[string]any{"include_leave": true}})
		r := doSync(t, alice, mautrix.ReqSync{Since: ra.NextBatch, FilterID: f})
		if _, ok := r.Rooms.Leave[id.RoomID(roomID)]; !ok {
			t.Error("leave of a forgotten room missing from the incremental sync")
		}
		r = doSync(t, alice, mautrix.ReqSync{FilterID: f})
		if _, ok := r.Rooms.Leave[id.RoomID(roomID)]; ok {
			t.Error("forgotten room in an initial sync")
		}
	})
}

// TestSyncRejectInviteOfEmptyRoom: rejecting an invite to a room nobody of this server
// is in any more stores the leave out of band; /sync shows it in the left room's
// timeline, and no invite remains.
func TestSyncRejectInviteOfEmptyRoom(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		// Federation on: the rejection looks for another server of the room first.
		e := startSyncEnvWith(t, engine, func(cfg *config.Config) { cfg.Federation.Enabled = true })
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		e.membership("invite", alice, bob, roomID)
		rb := doSync(t, bob, mautrix.ReqSync{})
		if _, ok := rb.Rooms.Invite[id.RoomID(roomID)]; !ok {
			t.Fatal("invite missing")
		}
		e.membership("leave", alice, nil, roomID)
		if _, err := bob.LeaveRoom(e.ctx, id.RoomID(roomID)); err != nil {
			t.Fatal(err)
		}
		r := doSync(t, bob, mautrix.ReqSync{Since: rb.NextBatch})
		lr, ok := r.Rooms.Leave[id.RoomID(roomID)]
		if !ok {
			t.Fatal("rejected invite not in rooms.leave")
		}
		var found bool
		for _, ev := range append(lr.Timeline.Events, lr.State.Events...) {
			if ev.Type == event.StateMember && ev.StateKey != nil && *ev.StateKey == bob.UserID.String() &&
				ev.Content.Raw["membership"] == "leave" {
				found = true
			}
		}
		if !found {
			t.Errorf("bob's leave not in the left room: %+v", lr)
		}
		r = doSync(t, bob, mautrix.ReqSync{Since: r.NextBatch})
		if _, ok := r.Rooms.Invite[id.RoomID(roomID)]; ok {
			t.Error("invite still shown")
		}
	})
}

// TestUnsignedMembership: every event served to a client carries unsigned.membership,
// the requester's membership just after the event (leave before they joined), on
// /sync, /messages and /event (MSC4115).
func TestUnsignedMembership(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
		pre := e.send(alice, roomID, "prejoin")
		e.membership("join", bob, nil, roomID)
		post := e.send(alice, roomID, "postjoin")
		check := func(where string, evs []*event.Event) {
			t.Helper()
			joined := false
			for _, ev := range evs {
				if ev.Type == event.StateMember && ev.StateKey != nil && *ev.StateKey == bob.UserID.String() {
					joined = true
				}
				want := "leave"
				if joined {
					want = "join"
				}
				if got := ev.Unsigned.Membership; string(got) != want {
					t.Errorf("%s: %s %s: membership %q, want %q", where, ev.Type.Type, ev.ID, got, want)
				}
			}
		}
		r := doSync(t, bob, mautrix.ReqSync{})
		tl := r.Rooms.Join[id.RoomID(roomID)].Timeline.Events
		if ids := eventIDs(tl); len(ids) < 3 {
			t.Fatalf("timeline %v", ids)
		}
		check("/sync", tl)
		msgs, err := bob.Messages(e.ctx, id.RoomID(roomID), "", "", mautrix.DirectionForward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		check("/messages", msgs.Chunk)
		for evID, want := range map[string]string{pre: "leave", post: "join"} {
			ev, err := bob.GetEvent(e.ctx, id.RoomID(roomID), id.EventID(evID))
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Unsigned.Membership) != want {
				t.Errorf("/event %s: membership %q, want %q", evID, ev.Unsigned.Membership, want)
			}
		}
		// Alice was joined all along (from her own join on).
		ev, err := alice.GetEvent(e.ctx, id.RoomID(roomID), id.EventID(pre))
		if err != nil || ev.Unsigned.Membership != "join" {
			t.Errorf("alice's membership at her message: %q %v", ev.Unsigned.Membership, err)
		}
	})
}

// TestThreadedReceiptRules: a threaded receipt may name any event related to the
// thread (a reaction to a reference to the root), and when a user has both an
// unthreaded and a threaded receipt on one event, /sync shows the unthreaded one
// (MSC4102).
func TestThreadedReceiptRules(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		sendRel := func(evType string, content map[string]any) string {
			ev, err := e.srv.Rooms.SendEvent(e.ctx, roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID.String(),
				Type: evType, Content: content})
			if err != nil {
				t.Fatal(err)
			}
			return ev.EventID()
		}
		root := e.send(alice, roomID, "root")
		inThread := sendRel("m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		ref := sendRel("m.room.message", map[string]any{"msgtype": "m.text", "body": "reference",
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})
		reaction := sendRel("m.reaction", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": ref, "key": "👍"}})
		if err := bob.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(reaction), event.ReceiptTypeRead,
			map[string]any{"thread_id": root}); err != nil {
			t.Errorf("receipt on a reaction related to the thread: %v", err)
		}
		r0 := doSync(t, alice, mautrix.ReqSync{})
		if err := alice.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(inThread), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if err := alice.SendReceipt(e.ctx, id.RoomID(roomID), id.EventID(inThread), event.ReceiptTypeRead,
			map[string]any{"thread_id": root}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*mautrix.RespSync{doSync(t, alice, mautrix.ReqSync{}), doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch})} {
			u := receiptUsers(r, roomID, inThread, "m.read")[alice.UserID.String()]
			if u == nil || u["thread_id"] != nil {
				t.Errorf("receipt shown for alice: %v, want the unthreaded one", u)
			}
		}
	})
}

// TestSyncTimelineStopsAtGap: an event whose prev events are missing here (it came with
// its state from another server, a gap /get_missing_events did not close) ends the
// timeline: /sync returns it and what follows, limited, never the events from before
// the hole; the long-poll path answers the same.
func TestSyncTimelineStopsAtGap(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		r0 := doSync(t, alice, mautrix.ReqSync{})
		e.send(alice, roomID, "before the gap")

		cur, err := e.srv.Rooms.CurrentState(e.ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		var stateIDs []string
		var pdus []gomatrixserverlib.PDU
		for _, ev := range cur {
			stateIDs = append(stateIDs, ev.EventID())
			pdus = append(pdus, ev.PDU)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(pdus)
		if err != nil {
			t.Fatal(err)
		}
		_, key, _ := ed25519.GenerateKey(nil)
		build := func(prev string, depth int64, body string) gomatrixserverlib.PDU {
			c, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
			proto := &gomatrixserverlib.ProtoEvent{SenderID: bob.UserID.String(), RoomID: roomID, Type: "m.room.message",
				Content: c, PrevEvents: []string{prev}, Depth: depth}
			b := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).NewEventBuilderFromProtoEvent(proto)
			if err := b.AddAuthEvents(provider); err != nil {
				t.Fatal(err)
			}
			ev, err := b.Build(time.Now(), "sync.test", "ed25519:test", key)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		afterGap := build("$missing-before-the-gap", 100, "after the gap")
		next := build(afterGap.EventID(), 101, "next")
		res, err := e.srv.Rooms.InputEvents(e.ctx, []roomserver.InputEvent{
			{Kind: roomserver.InputNew, Event: afterGap, StateBefore: stateIDs},
			{Kind: roomserver.InputNew, Event: next}})
		if err != nil || res[0].Err != nil || res[1].Err != nil || res[0].Rejected || res[1].Rejected {
			t.Fatalf("input: %+v %v", res, err)
		}
		check := func(where string, r *mautrix.RespSync) {
			t.Helper()
			jr := r.Rooms.Join[id.RoomID(roomID)]
			if jr == nil {
				t.Fatalf("%s: room missing", where)
			}
			if got := timelineBodies(jr.Timeline.Events); len(got) != 2 || got[0] != "after the gap" || got[1] != "next" || !jr.Timeline.Limited {
				t.Errorf("%s: timeline %v limited %v, want [after the gap next] limited", where, got, jr.Timeline.Limited)
			}
		}
		check("incremental", doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch}))
		check("initial", doSync(t, alice, mautrix.ReqSync{}))
	})
}

// TestSyncStateOfMergedFork: a state change on another fork of the room's DAG, merged
// by an event the timeline filter drops, still reaches the client: the initial
// timeline is the latest events in topological order (those of the local fork) and
// the state section carries the other fork's change.
func TestSyncStateOfMergedFork(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		e1 := e.send(alice, roomID, "E1")
		cur, err := e.srv.Rooms.CurrentState(e.ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		var pdus []gomatrixserverlib.PDU
		for _, ev := range cur {
			pdus = append(pdus, ev.PDU)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(pdus)
		if err != nil {
			t.Fatal(err)
		}
		first, err := e.srv.Rooms.Event(e.ctx, e1)
		if err != nil {
			t.Fatal(err)
		}
		// S2 on a fork from E1, built now but arriving after E3 and E4.
		sk := ""
		c, _ := json.Marshal(map[string]any{"name": "fork name"})
		proto := &gomatrixserverlib.ProtoEvent{SenderID: alice.UserID.String(), RoomID: roomID, Type: "m.room.name",
			StateKey: &sk, Content: c, PrevEvents: []string{e1}, Depth: first.Depth() + 1}
		b := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).NewEventBuilderFromProtoEvent(proto)
		if err := b.AddAuthEvents(provider); err != nil {
			t.Fatal(err)
		}
		_, key, _ := ed25519.GenerateKey(nil)
		s2, err := b.Build(time.Now(), "sync.test", "ed25519:test", key)
		if err != nil {
			t.Fatal(err)
		}
		e.send(alice, roomID, "E3")
		e.send(alice, roomID, "E4")
		res, err := e.srv.Rooms.InputEvents(e.ctx, []roomserver.InputEvent{{Kind: roomserver.InputNew, Event: s2}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed {
			t.Fatalf("input S2: %+v %v", res, err)
		}
		if _, err := e.srv.Rooms.SendEvent(e.ctx, roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID.String(),
			Type: "please_filter_me", Content: map[string]any{"body": "E5"}}); err != nil {
			t.Fatal(err)
		}
		f := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{
			"not_types": []string{"please_filter_me"}, "limit": 1}}})
		r := doSync(t, alice, mautrix.ReqSync{FilterID: f})
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatal("room missing")
		}
		if got := timelineBodies(jr.Timeline.Events); len(got) != 1 || got[0] != "E4" {
			t.Errorf("timeline %v, want [E4]", got)
		}
		found := false
		for _, ev := range jr.State.Events {
			if ev.ID.String() == s2.EventID() {
				found = true
			}
		}
		if !found {
			t.Errorf("the fork's room name is not in the state: %v", eventIDs(jr.State.Events))
		}
	})
}
