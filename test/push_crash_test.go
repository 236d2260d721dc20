package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// pushWriteDelayEnv is the push service's test hook (syncapi/push): it holds back
// every notification write by the duration given, so that a kill lands between
// evaluation and commit.
const pushWriteDelayEnv = "MYELIN_TEST_PUSH_WRITE_DELAY"

// TestPushAfterKill: messages the server acknowledged just before a kill -9, evaluated
// (bob's /sync counted them) but with their notifications not yet written, are in
// bob's unread count and GET /notifications after the restart and reach his push
// gateway, once each; a message pushed before the kill is not pushed again.
func TestPushAfterKill(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		gw := newTestGateway(t)
		// Long enough for the sends, the /sync and the kill below on a busy machine;
		// the push of the first message waits for it too.
		t.Setenv(pushWriteDelayEnv, "3s")
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
			cfg.Push.AllowPrivateAddresses = true
		}})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		gwSetPusher(t, s, bob, "bob-key", map[string]any{"url": gw.url()})
		room := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		first := rmSend(t, alice, room, "before the kill, written")
		if n := gw.next(t, "the first message"); n.EventID != first.String() {
			t.Fatalf("first push: %+v", n)
		}
		second := rmSend(t, alice, room, "just before the kill")
		third := rmSend(t, alice, room, "right before the kill")
		// Evaluated: the counts (in memory) have them; their rows are held back.
		pnEventually(t, "the unread count before the kill", func() bool {
			n, _ := pnCounts(t, s, bob.AccessToken, room)
			return n == 3
		})
		t.Setenv(pushWriteDelayEnv, "") // the restarted process writes at once
		s.Kill()
		s.Restart()

		// The catch-up runs beside the first requests: wait for it, then check.
		pnEventually(t, "bob's unread count after the restart", func() bool {
			n, _ := pnCounts(t, s, bob.AccessToken, room)
			return n == 3
		})
		// The counts are kept in memory as the events are evaluated and the rows follow
		// in the push writer's next batch, so /notifications may lag them a moment.
		var got []string
		pnEventually(t, "bob's three notifications after the restart", func() bool {
			st, body := s.Do(t, "GET", "/_matrix/client/v3/notifications", bob.AccessToken, nil)
			if st != 200 {
				t.Fatalf("GET /notifications: %d %v", st, body)
			}
			got = got[:0]
			for _, n := range body["notifications"].([]any) {
				got = append(got, n.(map[string]any)["event"].(map[string]any)["event_id"].(string))
			}
			return len(got) >= 3
		})
		if want := []string{third.String(), second.String(), first.String()}; !slices.Equal(got, want) {
			t.Fatalf("GET /notifications after the restart: %v, want %v", got, want)
		}

		// The gateway: the two messages of the crash window once each, the first not again.
		pushed := map[string]int{}
		for range 2 {
			pushed[gw.next(t, "a message of the crash window").EventID]++
		}
		select {
		case n := <-gw.ch:
			pushed[n.EventID]++
		case <-time.After(time.Second):
		}
		if len(pushed) != 2 || pushed[second.String()] != 1 || pushed[third.String()] != 1 {
			t.Fatalf("pushes after the restart: %v, want %s and %s once each", pushed, second, third)
		}
	})
}
