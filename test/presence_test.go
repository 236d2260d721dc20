package test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func presenceOf(r *mautrix.RespSync, user id.UserID) map[string]any {
	var out map[string]any
	for _, ev := range r.Presence.Events {
		if ev.Type.Type == "m.presence" && ev.Sender == user {
			out = ev.Content.Raw
		}
	}
	return out
}

// TestPresence: PUT/GET presence with status_msg, visible only to users sharing a
// room; presence changes reach room-mates' /sync (waking long-polls); /sync's
// set_presence; idle and offline timeouts.
func TestPresence(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol := e.register("alice"), e.register("bob"), e.register("carol")
		e.sharedRoom(alice, bob)
		rb0 := doSync(t, bob, mautrix.ReqSync{SetPresence: event.PresenceOffline})
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, _ := bob.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: rb0.NextBatch, Timeout: 10000, SetPresence: event.PresenceOffline})
			done <- r
		}()
		time.Sleep(200 * time.Millisecond)
		if err := alice.SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
			t.Fatal(err)
		}
		var rb1 *mautrix.RespSync
		select {
		case rb1 = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("presence change did not wake the long-poll")
		}
		if p := presenceOf(rb1, alice.UserID); p == nil || p["presence"] != "unavailable" || p["status_msg"] != "lunch" {
			t.Fatalf("bob sees alice's presence as %v", p)
		}
		got, err := bob.GetPresence(e.ctx, alice.UserID)
		if err != nil || got.Presence != event.PresenceUnavailable || got.StatusMsg != "lunch" {
			t.Fatalf("GET presence = %+v %v", got, err)
		}
		// Carol shares no room with alice.
		if _, err := carol.GetPresence(e.ctx, alice.UserID); !isHTTPStatus(err, 403) {
			t.Errorf("stranger reads presence: %v", err)
		}
		rc := doSync(t, carol, mautrix.ReqSync{SetPresence: event.PresenceOffline})
		if presenceOf(rc, alice.UserID) != nil {
			t.Error("presence leaked to a stranger in /sync")
		}
		// Only one's own presence may be set; states are checked.
		var out map[string]any
		_, err = alice.MakeRequest(e.ctx, "PUT", alice.BuildClientURL("v3", "presence", bob.UserID.String(), "status"), map[string]any{"presence": "online"}, &out)
		if !isHTTPStatus(err, 403) {
			t.Errorf("setting another user's presence: %v", err)
		}
		_, err = alice.MakeRequest(e.ctx, "PUT", alice.BuildClientURL("v3", "presence", alice.UserID.String(), "status"), map[string]any{"presence": "sleepy"}, &out)
		if !isHTTPStatus(err, 400) {
			t.Errorf("bad presence state: %v", err)
		}
		// set_presence=offline leaves an offline user offline; a default sync makes carol online.
		if p, _ := carol.GetPresence(e.ctx, carol.UserID); p.Presence != event.PresenceOffline {
			t.Errorf("carol after offline syncs: %s", p.Presence)
		}
		doSync(t, carol, mautrix.ReqSync{})
		if p, _ := carol.GetPresence(e.ctx, carol.UserID); p.Presence != event.PresenceOnline || !p.CurrentlyActive {
			t.Errorf("carol after an online sync: %+v", p)
		}
		// No /sync for a while: offline.
		e.srv.Sync.SweepPresence(e.ctx, time.Now().Add(2*time.Minute))
		if p, _ := carol.GetPresence(e.ctx, carol.UserID); p.Presence != event.PresenceOffline {
			t.Errorf("carol after the offline timeout: %s", p.Presence)
		}
		// Syncing but idle: unavailable.
		if err := alice.SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
			t.Fatal(err)
		}
		ra := doSync(t, alice, mautrix.ReqSync{})
		go func() {
			_, _ = alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: ra.NextBatch, Timeout: 3000})
		}()
		time.Sleep(200 * time.Millisecond)
		e.srv.Sync.SweepPresence(e.ctx, time.Now().Add(6*time.Minute))
		if p, _ := bob.GetPresence(e.ctx, alice.UserID); p.Presence != event.PresenceUnavailable {
			t.Errorf("alice after the idle timeout: %s", p.Presence)
		}
		// Sending a message makes her online again.
		roomID := e.sharedRoom(alice, bob)
		e.send(alice, roomID, "back")
		deadline := time.Now().Add(3 * time.Second)
		for {
			p, _ := bob.GetPresence(e.ctx, alice.UserID)
			if p.Presence == event.PresenceOnline {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice after sending: %s", p.Presence)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
