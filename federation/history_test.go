package federation

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
)

// dagRooms serves Events from a map; other Rooms methods are not used by these tests.
type dagRooms struct {
	Rooms
	evs map[string]*roomserver.Event
}

func (d dagRooms) Events(_ context.Context, ids []string) (map[string]*roomserver.Event, error) {
	out := map[string]*roomserver.Event{}
	for _, id := range ids {
		if ev := d.evs[id]; ev != nil {
			out[id] = ev
		}
	}
	return out, nil
}

// testDAG builds a chain of n messages (each with the previous as prev event) plus a
// fork: returns the events in creation order.
func testDAG(t *testing.T, n int) []gomatrixserverlib.PDU {
	t.Helper()
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	var out []gomatrixserverlib.PDU
	prev, auth := []string{}, []string{}
	for i := 0; i < n; i++ {
		pe := gomatrixserverlib.ProtoEvent{SenderID: "@a:x.test", RoomID: "!r:x.test", Type: "m.room.message",
			PrevEvents: prev, AuthEvents: auth, Depth: int64(i + 1)}
		_ = pe.SetContent(map[string]any{"body": i})
		ev, err := ver.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), "x.test", key.ID, key.Private)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
		prev = []string{ev.EventID()}
		if i == 0 {
			auth = []string{ev.EventID()}
		}
	}
	return out
}

func TestWalkBack(t *testing.T) {
	chain := testDAG(t, 8)
	evs := map[string]*roomserver.Event{}
	var ids []string
	for _, p := range chain {
		evs[p.EventID()] = &roomserver.Event{PDU: p}
		ids = append(ids, p.EventID())
	}
	s := &Server{rooms: dagRooms{evs: evs}}
	idsOf := func(evs []*roomserver.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.EventID())
		}
		return out
	}
	ctx := context.Background()
	// Backfill: from the last event, included, three events newest first.
	got, err := s.walkBack(ctx, "!r:x.test", ids[7:8], true, nil, 0, 3)
	if err != nil || !slices.Equal(idsOf(got), []string{ids[7], ids[6], ids[5]}) {
		t.Fatalf("backfill: %v %v", idsOf(got), err)
	}
	// Missing events: latest excluded, stop at earliest, min depth, limit.
	stop := map[string]bool{ids[2]: true}
	got, _ = s.walkBack(ctx, "!r:x.test", ids[7:8], false, stop, 0, 10)
	if !slices.Equal(idsOf(got), []string{ids[6], ids[5], ids[4], ids[3]}) {
		t.Fatalf("missing events: %v", idsOf(got))
	}
	got, _ = s.walkBack(ctx, "!r:x.test", ids[7:8], false, stop, 6, 10)
	if !slices.Equal(idsOf(got), []string{ids[6], ids[5]}) {
		t.Fatalf("missing events with min_depth 6: %v", idsOf(got))
	}
	// Another room's events are not served through this room.
	if got, _ := s.walkBack(ctx, "!other:x.test", ids[7:8], true, nil, 0, 10); len(got) != 0 {
		t.Fatalf("events of another room: %v", idsOf(got))
	}
}

func TestAuthOrder(t *testing.T) {
	chain := testDAG(t, 4)
	// Every event after the first names the first as auth event: whatever the input
	// order, the first comes first.
	in := []gomatrixserverlib.PDU{chain[3], chain[1], chain[0], chain[2]}
	out := authOrder(in)
	if len(out) != 4 || out[0].EventID() != chain[0].EventID() {
		t.Fatalf("auth order: first is %s", out[0].EventID())
	}
}
