package roomserver

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestInputStateBeforeAndBackfill: an event whose prev events are unknown enters the
// timeline with the state given (StateBefore) and becomes one more forward extremity;
// older events given as InputBackfill join the DAG as history (negative stream
// position, not extremities, not checked against the current state) and /messages
// orders everything by depth.
func TestInputStateBeforeAndBackfill(t *testing.T) {
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
		b := newBranch(cur, tip.PDU)
		m1 := b.build(t, rs, roomID, "11", bob, "m.room.message", nil, msg("m1"))
		m2 := b.build(t, rs, roomID, "11", bob, "m.room.message", nil, msg("m2"))
		m3 := b.build(t, rs, roomID, "11", bob, "m.room.message", nil, msg("m3"))
		var stateIDs []string
		for _, ev := range cur {
			stateIDs = append(stateIDs, ev.EventID())
		}

		// m3 alone: refused without state, accepted with it.
		res, err := rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: m3}})
		if err != nil || res[0].Err == nil {
			t.Fatalf("m3 without its prev events: %+v %v", res, err)
		}
		res, err = rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: m3, StateBefore: stateIDs}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed || res[0].Event.StreamPos <= 0 {
			t.Fatalf("m3 with its state: %+v %v", res, err)
		}
		info, _ = rs.RoomInfo(ctx, roomID)
		if len(info.Extremities) != 2 {
			t.Fatalf("extremities after m3: %v", info.Extremities)
		}

		// bob is banned; then his older messages arrive by backfill: history, not soft-failed.
		if _, err := rs.Ban(ctx, MembershipRequest{RoomID: roomID, Sender: alice, Target: bob}); err != nil {
			t.Fatal(err)
		}
		pos := rs.StreamPosition()
		res, err = rs.InputEvents(ctx, []InputEvent{{Kind: InputBackfill, Event: m1}, {Kind: InputBackfill, Event: m2}})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || r.Rejected || r.SoftFailed || r.Event.StreamPos >= 0 {
				t.Fatalf("backfilled m%d: %+v", i+1, r)
			}
		}
		if evs, err := rs.StreamEvents(ctx, roomID, pos, rs.StreamPosition(), 10, false); err != nil || len(evs) != 0 {
			t.Fatalf("backfilled events in the stream /sync reads: %d %v", len(evs), err)
		}
		info2, _ := rs.RoomInfo(ctx, roomID)
		if len(info2.Extremities) != 1 {
			t.Fatalf("backfill changed the extremities: %v", info2.Extremities)
		}
		page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: End, Dir: Backward, Limit: 5, Types: []string{"m.room.message"}})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range page.Events {
			got = append(got, contentField(t, ev, "body").(string))
		}
		if len(got) != 3 || got[0] != "m3" || got[1] != "m2" || got[2] != "m1" {
			t.Fatalf("messages: %v", got)
		}
		// An outlier reached by backfill is promoted into the timeline.
		o1 := b.build(t, rs, roomID, "11", alice, "m.room.topic", strp(""), map[string]any{"topic": "t"})
		o2 := b.build(t, rs, roomID, "11", alice, "m.room.message", nil, msg("after topic"))
		if res, err := rs.InputEvents(ctx, []InputEvent{{Kind: InputOutlier, Event: o1}}); err != nil || res[0].Err != nil || !res[0].Event.Outlier {
			t.Fatalf("outlier: %+v %v", res, err)
		}
		res, err = rs.InputEvents(ctx, []InputEvent{{Kind: InputBackfill, Event: o1}, {Kind: InputBackfill, Event: o2}})
		if err != nil || res[0].Err != nil || res[0].Event.Outlier || res[0].Event.StreamPos >= 0 || res[1].Err != nil || res[1].Rejected {
			t.Fatalf("promoted outlier: %+v %v", res, err)
		}
		if ev, err := rs.Event(ctx, o1.EventID()); err != nil || ev.Outlier {
			t.Fatalf("promoted outlier reloaded: %+v %v", ev, err)
		}
		if st, err := rs.StateAtEvent(ctx, o2.EventID(), false); err != nil || len(st) == 0 {
			t.Fatalf("state after the promoted event: %v", err)
		}
		page2, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, Viewer: alice, From: End, Dir: Backward, Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		seen := false
		for _, ev := range page2.Events {
			seen = seen || ev.EventID() == o1.EventID()
		}
		if !seen {
			t.Fatal("the promoted outlier is not in alice's /messages")
		}

		// An outlier given as a new event joins the live timeline under its NID, with a
		// new stream position that /sync reads; a new leaf, it moves the head.
		o3 := b.build(t, rs, roomID, "11", alice, "m.room.topic", strp(""), map[string]any{"topic": "live"})
		res, err = rs.InputEvents(ctx, []InputEvent{{Kind: InputOutlier, Event: o3}})
		if err != nil || res[0].Err != nil || !res[0].Event.Outlier || res[0].Event.StreamPos != 0 {
			t.Fatalf("outlier o3: %+v %v", res, err)
		}
		nid := res[0].Event.NID
		pos = rs.StreamPosition()
		res, err = rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: o3}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed || res[0].Event.Outlier ||
			res[0].Event.NID != nid || res[0].Event.StreamPos <= pos {
			t.Fatalf("an outlier given as new: %+v %v (NID %d, position %d)", res, err, nid, pos)
		}
		if evs, err := rs.StreamEvents(ctx, roomID, pos, rs.StreamPosition(), 10, false); err != nil || len(evs) != 1 || evs[0].EventID() != o3.EventID() {
			t.Fatalf("the promoted outlier in the stream: %d %v", len(evs), err)
		}
		if cur, err := rs.CurrentStateEvent(ctx, roomID, "m.room.topic", ""); err != nil || cur.EventID() != o3.EventID() {
			t.Fatalf("current topic after the promotion: %v", err)
		}
		if res, err := rs.InputEvents(ctx, []InputEvent{{Kind: InputNew, Event: o3}}); err != nil || !res[0].AlreadyKnown {
			t.Fatalf("the promoted outlier again: %+v %v", res, err)
		}

		// The token of a backfilled event (negative stream) parses back.
		tok := page.Events[2].Position().String()
		if p, err := ParsePosition(tok); err != nil || p != page.Events[2].Position() {
			t.Fatalf("token %s: %+v %v", tok, p, err)
		}
	})
}

// TestServerACL: globs, ports, IP literals and precedence of m.room.server_acl.
func TestServerACL(t *testing.T) {
	acl := ParseServerACL([]byte(`{"allow":["*.example.com","good.org", 7],"deny":["bad.example.com","ev?l.example.com"],"allow_ip_literals":false}`))
	for server, want := range map[string]bool{
		"a.example.com":        true,
		"A.Example.COM:8448":   true,
		"good.org":             true,
		"good.org:1234":        true,
		"bad.example.com":      false,
		"bad.example.com:443":  false,
		"evil.example.com":     false,
		"other.org":            false,
		"1.2.3.4":              false,
		"[::1]:8448":           false,
		"not a server name!!!": false,
	} {
		if got := acl.Allows(spec.ServerName(server)); got != want {
			t.Errorf("%s: allowed %v, want %v", server, got, want)
		}
	}
	ip := ParseServerACL([]byte(`{"allow":["*"]}`))
	if !ip.Allows("127.0.0.1:8448") || !ip.Allows("x.org") {
		t.Error("allow_ip_literals defaults to true and * allows everything")
	}
	if ParseServerACL([]byte(`{}`)).Allows("x.org") {
		t.Error("an ACL without allow allows nobody")
	}
}
