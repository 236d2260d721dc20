package roomserver

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func txnSend(rs *Roomserver, roomID, sender, device, scope, txn, body string) (*Event, error) {
	return rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.message",
		Content: msg(body), TxnID: txn, DeviceID: device, TxnScope: scope})
}

// TestIdempotentSend checks that a send with a transaction scope happens once per
// (sender, device, scope, txn ID): replays, sequential or racing the first send, get
// the first event; other keys and failed sends do not count.
func TestIdempotentSend(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice"), Preset: spec.PresetPublicChat})
		mustSend(t, rs, roomID, user("bob"), spec.MRoomMember, strp(user("bob")), map[string]any{"membership": "join"})
		scope := "send:" + roomID
		start := rs.StreamPosition()

		first, err := txnSend(rs, roomID, user("alice"), "DEV", scope, "t1", "one")
		if err != nil {
			t.Fatal(err)
		}
		again, err := txnSend(rs, roomID, user("alice"), "DEV", scope, "t1", "one again")
		if err != nil || again.EventID() != first.EventID() {
			t.Fatalf("replay: %v %v", again, err)
		}
		if again.TxnID != "t1" || again.DeviceID != "DEV" {
			t.Fatalf("replayed event lost its transaction: %q %q", again.TxnID, again.DeviceID)
		}
		// Another device, scope, sender or ID is another transaction.
		others := [][4]string{
			{user("alice"), "DEV2", scope, "t1"},
			{user("alice"), "DEV", "redact:" + roomID, "t1"},
			{user("bob"), "DEV", scope, "t1"},
			{user("alice"), "DEV", scope, "t2"},
		}
		for _, o := range others {
			ev, err := txnSend(rs, roomID, o[0], o[1], o[2], o[3], "other")
			if err != nil || ev.EventID() == first.EventID() {
				t.Fatalf("%v: %v %v", o, ev, err)
			}
		}
		// A send that fails is not recorded: the ID stays usable.
		_, err = rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: user("alice"), Type: "m.room.message",
			Content: []byte(`not json`), TxnID: "t3", DeviceID: "DEV", TxnScope: scope})
		wantErrCode(t, err, spec.ErrorBadJSON)
		_, err = txnSend(rs, roomID, user("stranger"), "DEV", scope, "t3", "not a member")
		wantErrCode(t, err, spec.ErrorForbidden)
		if _, err := txnSend(rs, roomID, user("alice"), "DEV", scope, "t3", "three"); err != nil {
			t.Fatal(err)
		}

		// Racing replays: every goroutine sends the same five transactions (and one
		// message of its own, which must not be lost when a replay is dropped from a
		// chain); each transaction makes exactly one event.
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[string]map[string]bool{}
		for g := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 5 {
					txn := fmt.Sprint("race", i)
					ev, err := txnSend(rs, roomID, user("alice"), "DEV", scope, txn, fmt.Sprint("race ", g, i))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if got[txn] == nil {
						got[txn] = map[string]bool{}
					}
					got[txn][ev.EventID()] = true
					mu.Unlock()
				}
				if _, err := txnSend(rs, roomID, user("bob"), "DEV", scope, fmt.Sprint("own", g), "own"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		for txn, ids := range got {
			if len(ids) != 1 {
				t.Fatalf("%s answered with %d events", txn, len(ids))
			}
		}
		evs, err := rs.StreamEvents(ctx, roomID, start, rs.StreamPosition(), 1000, false)
		if err != nil {
			t.Fatal(err)
		}
		perTxn := map[string]int{}
		for _, ev := range evs {
			perTxn[string(ev.SenderID())+"|"+ev.DeviceID+"|"+ev.TxnID]++
		}
		// t1, 4 others, t3, race0-4, own0-11.
		if len(evs) != 1+len(others)+1+5+12 {
			t.Fatalf("%d events stored: %v", len(evs), perTxn)
		}
		for k, n := range perTxn {
			// alice/DEV/t1 appears twice: once per scope (send and redact).
			if n != 1 && k != user("alice")+"|DEV|t1" {
				t.Fatalf("%s stored %d times", k, n)
			}
		}
	})
}
