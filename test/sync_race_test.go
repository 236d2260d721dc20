package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// TestSyncLongPollRacesOwnJoin: a long-poll in flight while its user creates a room
// (and another user joins it a moment later) always comes back with the room, however
// the request and the room's commits interleave. A token that skipped the user's own
// join would hide the room from every later sync.
func TestSyncLongPollRacesOwnJoin(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		for i := 0; i < 60; i++ {
			alice, bob := e.register(fmt.Sprintf("alice%d", i)), e.register(fmt.Sprintf("bob%d", i))
			since := doSync(t, alice, mautrix.ReqSync{SetPresence: event.PresenceOffline}).NextBatch
			done := make(chan *mautrix.RespSync, 1)
			go func() {
				r, err := alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: 8000, SetPresence: event.PresenceOffline})
				if err != nil {
					t.Errorf("long-poll: %v", err)
				}
				done <- r
			}()
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
			e.membership("join", bob, nil, roomID)
			deadline := time.After(6 * time.Second)
			seen := false
			for !seen {
				var r *mautrix.RespSync
				select {
				case r = <-done:
				case <-deadline:
					t.Fatalf("round %d: alice's long-poll did not bring the room she created within 6 s", i)
				}
				if r == nil {
					t.FailNow()
				}
				if jr := r.Rooms.Join[id.RoomID(roomID)]; jr != nil {
					seen = true
					break
				}
				since = r.NextBatch
				go func() {
					r, err := alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: 8000, SetPresence: event.PresenceOffline})
					if err != nil {
						t.Errorf("long-poll: %v", err)
					}
					done <- r
				}()
			}
		}
	})
}
