package roomserver

import (
	"context"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestPrevBatchAfterPartition: alice sends 1..4 while an event 1' concurrent with 1
// (same prev event, so a low depth) is received after 4, then 5..7. A /sync timeline
// of the last four events is 1',5,6,7; paginating backwards from its prev_batch must
// give 4,3,2,1 (everything received before 1'), not skip them for being deeper than 1'.
func TestPrevBatchAfterPartition(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice := user("alice")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat, RoomVersion: "11"})
		base := mustSend(t, rs, roomID, alice, "m.room.message", nil, msg("0"))
		cur, err := rs.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		side := newBranch(cur, base.PDU)
		var ours []string
		for i := 1; i <= 4; i++ {
			ours = append(ours, mustSend(t, rs, roomID, alice, "m.room.message", nil, msg(fmt.Sprint(i))).EventID())
		}
		prime := side.build(t, rs, roomID, "11", alice, "m.room.message", nil, msg("1'"))
		res, err := rs.InputEvents(ctx, []InputEvent{{Event: prime}})
		if err != nil || res[0].Err != nil || res[0].Rejected || res[0].SoftFailed {
			t.Fatalf("1': %v %+v", err, res)
		}
		for i := 5; i <= 7; i++ {
			mustSend(t, rs, roomID, alice, "m.room.message", nil, msg(fmt.Sprint(i)))
		}
		token := PrevBatch(res[0].Event).String()
		from, err := ParsePosition(token)
		if err != nil {
			t.Fatal(err)
		}
		page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: from, Dir: Backward, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range page.Events {
			got = append(got, ev.EventID())
		}
		want := []string{ours[3], ours[2], ours[1], ours[0]}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("page from %s: %v, want 4,3,2,1 %v", token, got, want)
		}
		// The next page continues with 0 and the room's creation, never 1' or later.
		if page.Next == nil {
			t.Fatal("no next page")
		}
		next, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: *page.Next, Dir: Backward, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(next.Events) == 0 || next.Events[0].EventID() != base.EventID() {
			t.Fatalf("next page starts with %v, want 0", next.Events)
		}
		for _, ev := range next.Events {
			if ev.StreamPos > from.MaxStream {
				t.Fatalf("next page has %s, received after the timeline's start", ev.EventID())
			}
		}
	})
}
