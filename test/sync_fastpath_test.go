package test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// The fast path of long-polling /sync answers a wake-up by new timeline events from
// memory (syncapi/fastpath.go). These tests check that it never answers something the
// database path would not: filtered types, non-members, a member removed by a state
// change, unread counts, and limited timelines.

// longPoll starts a long-poll of cli from since and returns its result channel, after
// giving the request time to start waiting.
func longPoll(t *testing.T, cli *mautrix.Client, since, filter string, timeout int) <-chan *mautrix.RespSync {
	t.Helper()
	done := make(chan *mautrix.RespSync, 1)
	go func() {
		resp, err := cli.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: timeout,
			FilterID: filter, SetPresence: event.PresenceOffline})
		if err != nil {
			t.Errorf("long-poll of %s: %v", cli.UserID, err)
		}
		done <- resp
	}()
	time.Sleep(300 * time.Millisecond)
	return done
}

func waitSync(t *testing.T, done <-chan *mautrix.RespSync) *mautrix.RespSync {
	t.Helper()
	select {
	case r := <-done:
		if r == nil {
			t.FailNow()
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll did not return")
	}
	return nil
}

// TestSyncFastPathMessage: a message wakes a waiting long-poll and is answered from
// memory with the same content the database path gives: the event, prev_batch, unread
// counts (reset by a read receipt), and the next token continuing without duplicates.
func TestSyncFastPathMessage(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		since := doSync(t, bob, mautrix.ReqSync{}).NextBatch
		before := e.srv.Sync.FastPathStats()

		done := longPoll(t, bob, since, "", 20000)
		first := e.send(alice, roomID, "one")
		r := waitSync(t, done)
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !slices.Equal(timelineBodies(jr.Timeline.Events), []string{"one"}) {
			t.Fatalf("woken sync = %+v", r.Rooms.Join)
		}
		if jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Errorf("timeline limited=%v prev_batch=%q", jr.Timeline.Limited, jr.Timeline.PrevBatch)
		}
		if jr.UnreadNotifications == nil || jr.UnreadNotifications.NotificationCount != 1 {
			t.Errorf("unread_notifications = %+v, want 1 notification", jr.UnreadNotifications)
		}
		if got := e.srv.Sync.FastPathStats(); got.Fast <= before.Fast {
			t.Errorf("the message was not answered by the fast path: %+v → %+v", before, got)
		}

		// Back-paginating from prev_batch starts before the message.
		msgs, err := bob.Messages(context.Background(), id.RoomID(roomID), jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(msgs.Chunk) != 1 || msgs.Chunk[0].ID == id.EventID(first) {
			t.Errorf("/messages from prev_batch = %+v %v", msgs, err)
		}

		// Bob reads the message: the next answer counts only the new one.
		if err := bob.SendReceipt(context.Background(), id.RoomID(roomID), id.EventID(first), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		since = r.NextBatch
		for { // the receipt itself comes down first
			r = doSync(t, bob, mautrix.ReqSync{Since: since})
			since = r.NextBatch
			if len(r.Rooms.Join) == 0 {
				break
			}
		}
		done = longPoll(t, bob, since, "", 20000)
		e.send(alice, roomID, "two")
		r = waitSync(t, done)
		jr = r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !slices.Equal(timelineBodies(jr.Timeline.Events), []string{"two"}) {
			t.Fatalf("second woken sync = %+v", r.Rooms.Join)
		}
		if jr.UnreadNotifications == nil || jr.UnreadNotifications.NotificationCount != 1 {
			t.Errorf("unread_notifications after the read receipt = %+v, want 1", jr.UnreadNotifications)
		}
		// Nothing is delivered twice.
		if r2 := doSync(t, bob, mautrix.ReqSync{Since: r.NextBatch}); len(r2.Rooms.Join) != 0 {
			t.Errorf("sync after the fast answer repeats: %+v", r2.Rooms.Join)
		}
	})
}

// TestSyncFastPathFilteredTypes: an event type the timeline filter drops does not end
// a long-poll; the next message does, alone.
func TestSyncFastPathFilteredTypes(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		filter := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"types": []string{"m.room.message"}},
			"ephemeral": map[string]any{"types": []string{}}}, "presence": map[string]any{"types": []string{}}})
		since := doSync(t, bob, mautrix.ReqSync{FilterID: filter}).NextBatch
		done := longPoll(t, bob, since, filter, 20000)
		if _, err := e.srv.Rooms.SendEvent(e.ctx, sendReq(roomID, alice, "org.example.hidden")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		select {
		case r := <-done:
			t.Fatalf("a filtered-out event ended the long-poll: %+v", r.Rooms.Join)
		default:
		}
		e.send(alice, roomID, "shown")
		r := waitSync(t, done)
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].Type.Type != "m.room.message" {
			t.Fatalf("woken sync = %+v", r.Rooms.Join)
		}
	})
}

// TestSyncFastPathNonMember: a user who is not in the room never gets its messages,
// and one kicked just before a message gets the kick and not the message.
func TestSyncFastPathNonMember(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol := e.register("alice"), e.register("bob"), e.register("carol")
		roomID := e.sharedRoom(alice, bob)
		carolSince := doSync(t, carol, mautrix.ReqSync{}).NextBatch
		bobSince := doSync(t, bob, mautrix.ReqSync{}).NextBatch
		carolDone := longPoll(t, carol, carolSince, "", 2000)
		bobDone := longPoll(t, bob, bobSince, "", 20000)
		e.membership("kick", alice, bob, roomID)
		e.send(alice, roomID, "secret")

		if r := waitSync(t, carolDone); len(r.Rooms.Join) != 0 {
			t.Errorf("a non-member got %+v", r.Rooms.Join)
		}
		// Bob's answers until the kick has come down must not hold the message.
		since := bobSince
		r := waitSync(t, bobDone)
		for i := 0; ; i++ {
			for _, jr := range r.Rooms.Join {
				if slices.Contains(timelineBodies(jr.Timeline.Events), "secret") {
					t.Fatal("the kicked member got the message sent after the kick (join)")
				}
			}
			if lr := r.Rooms.Leave[id.RoomID(roomID)]; lr != nil {
				if slices.Contains(timelineBodies(lr.Timeline.Events), "secret") {
					t.Fatal("the kicked member got the message sent after the kick (leave)")
				}
				break
			}
			if i == 5 {
				t.Fatal("the kick never came down")
			}
			since = r.NextBatch
			r = doSync(t, bob, mautrix.ReqSync{Since: since, Timeout: 2000})
		}
		if r2 := doSync(t, bob, mautrix.ReqSync{Since: r.NextBatch, Timeout: 1000}); len(r2.Rooms.Join) != 0 {
			t.Errorf("after the kick bob got %+v", r2.Rooms.Join)
		}
	})
}

// TestSyncFastPathStateChange: a state change in the room reaches a waiting long-poll
// with the state (the fast path leaves it to the database path), then messages after
// it come through.
func TestSyncFastPathStateChange(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		filter := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"types": []string{"m.room.message"}}}})
		since := doSync(t, bob, mautrix.ReqSync{FilterID: filter}).NextBatch
		done := longPoll(t, bob, since, filter, 20000)
		e.sendState(alice, roomID, "m.room.name", "", map[string]any{"name": "renamed"})
		e.send(alice, roomID, "after the rename")
		var gotName bool
		var bodies []string
		r := waitSync(t, done)
		for i := 0; ; i++ {
			if jr := r.Rooms.Join[id.RoomID(roomID)]; jr != nil {
				gotName = gotName || hasState(jr.State.Events, "m.room.name", "")
				for _, ev := range jr.Timeline.Events {
					if ev.Type.Type == "m.room.name" {
						gotName = true
					}
				}
				bodies = append(bodies, timelineBodies(jr.Timeline.Events)...)
			}
			if slices.Contains(bodies, "after the rename") || i == 5 {
				break
			}
			r = doSync(t, bob, mautrix.ReqSync{Since: r.NextBatch, Timeout: 5000, FilterID: filter})
		}
		if !gotName {
			t.Error("the name change filtered out of the timeline did not come down in state")
		}
		if !slices.Equal(bodies, []string{"after the rename"}) {
			t.Errorf("messages = %v", bodies)
		}
	})
}

// TestSyncFastPathLimited: with a timeline limit of 1, three messages arriving while a
// client long-polls are never silently dropped: an answer that leaves messages out
// says limited, and its prev_batch leads back to them.
func TestSyncFastPathLimited(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		filter := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}})
		since := doSync(t, bob, mautrix.ReqSync{FilterID: filter}).NextBatch
		done := longPoll(t, bob, since, filter, 20000)
		sent := []string{"m1", "m2", "m3"}
		go func() {
			for _, b := range sent {
				e.send(alice, roomID, b)
			}
		}()
		var seen []string
		r := waitSync(t, done)
		limited := false
		for i := 0; i < 10; i++ {
			if jr := r.Rooms.Join[id.RoomID(roomID)]; jr != nil {
				got := timelineBodies(jr.Timeline.Events)
				if len(got) > 1 {
					t.Fatalf("limit 1 gave %v", got)
				}
				// Messages skipped between two answers must be announced by limited.
				if len(got) == 1 {
					next := slices.Index(sent, got[0])
					if next > len(seen) && !jr.Timeline.Limited {
						t.Fatalf("answer %v skipped %v without limited", got, sent[len(seen):next])
					}
					if next > len(seen) {
						limited = true
					}
					seen = sent[:next+1]
				}
			}
			if len(seen) == len(sent) {
				break
			}
			r = doSync(t, bob, mautrix.ReqSync{Since: r.NextBatch, Timeout: 5000, FilterID: filter})
		}
		if len(seen) != len(sent) {
			t.Fatalf("saw %v of %v", seen, sent)
		}
		t.Logf("limited answer seen: %v", limited)
	})
}

func sendReq(roomID string, sender *mautrix.Client, evType string) roomserver.SendRequest {
	return roomserver.SendRequest{RoomID: roomID, Sender: sender.UserID.String(), Type: evType, Content: map[string]any{"x": 1}}
}

// TestSyncFastPathLazyMembers: with lazy-loaded members, a message from a sender whose
// member event the device already has comes without state, and the first message of a
// new member comes with that member's event.
func TestSyncFastPathLazyMembers(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol := e.register("alice"), e.register("bob"), e.register("carol")
		roomID := e.sharedRoom(alice, bob)
		filter := inlineFilter(map[string]any{"room": map[string]any{
			"timeline": map[string]any{"types": []string{"m.room.message"}},
			"state":    map[string]any{"lazy_load_members": true}}})
		e.send(alice, roomID, "hello") // alice's member event goes with the initial sync
		since := doSync(t, bob, mautrix.ReqSync{FilterID: filter}).NextBatch

		done := longPoll(t, bob, since, filter, 20000)
		e.send(alice, roomID, "again")
		r := waitSync(t, done)
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !slices.Equal(timelineBodies(jr.Timeline.Events), []string{"again"}) {
			t.Fatalf("woken sync = %+v", r.Rooms.Join)
		}
		if len(jr.State.Events) != 0 {
			t.Errorf("alice's member event sent again: %v", stateKeys(jr.State.Events, "m.room.member"))
		}

		e.membership("join", carol, nil, roomID)
		since = r.NextBatch
		for { // the join (filtered out of the timeline) may or may not end a poll
			r = doSync(t, bob, mautrix.ReqSync{Since: since, FilterID: filter})
			since = r.NextBatch
			if len(r.Rooms.Join) == 0 {
				break
			}
		}
		done = longPoll(t, bob, since, filter, 20000)
		e.send(carol, roomID, "hi from carol")
		r = waitSync(t, done)
		jr = r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !slices.Equal(timelineBodies(jr.Timeline.Events), []string{"hi from carol"}) {
			t.Fatalf("woken sync = %+v", r.Rooms.Join)
		}
		if !hasState(jr.State.Events, "m.room.member", carol.UserID.String()) {
			t.Errorf("carol's first message came without her member event: %v", stateKeys(jr.State.Events, "m.room.member"))
		}
	})
}

// rawSync is GET /sync as raw JSON, decoded into a generic map.
func rawSync(t *testing.T, e *syncEnv, cli *mautrix.Client, q url.Values) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", e.hs.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("sync: %d %v %v", resp.StatusCode, err, out)
	}
	return out
}

// dropAges removes unsigned.age (it depends on when an answer was made) everywhere.
func dropAges(v any) {
	switch v := v.(type) {
	case map[string]any:
		if u, ok := v["unsigned"].(map[string]any); ok {
			delete(u, "age")
		}
		for _, c := range v {
			dropAges(c)
		}
	case []any:
		for _, c := range v {
			dropAges(c)
		}
	}
}

// TestSyncFastPathCatchUp: a long-poll whose token is behind by a few messages (the
// client was busy while the room went on) is answered at once from the event log, with
// the same rooms section as the database path gives for the same token.
func TestSyncFastPathCatchUp(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		for _, f := range []string{
			inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"types": []string{"m.room.message"}},
				"ephemeral": map[string]any{"types": []string{}}}, "presence": map[string]any{"types": []string{}}}),
			inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}},
				"presence": map[string]any{"types": []string{}}}),
		} {
			since := rawSync(t, e, bob, url.Values{"filter": {f}})["next_batch"].(string)
			e.send(alice, roomID, "one")
			e.send(alice, roomID, "two")
			before := e.srv.Sync.FastPathStats()
			start := time.Now()
			fast := rawSync(t, e, bob, url.Values{"filter": {f}, "since": {since}, "timeout": {"20000"}})
			if time.Since(start) > 5*time.Second {
				t.Errorf("the long-poll waited %v though messages were there", time.Since(start))
			}
			if got := e.srv.Sync.FastPathStats(); got.CatchUp != before.CatchUp+1 {
				t.Errorf("not answered by catching up: %+v → %+v", before, got)
			}
			slow := rawSync(t, e, bob, url.Values{"filter": {f}, "since": {since}, "timeout": {"0"}})
			dropAges(fast)
			dropAges(slow)
			fj, _ := json.Marshal(fast["rooms"])
			sj, _ := json.Marshal(slow["rooms"])
			if string(fj) != string(sj) {
				t.Errorf("filter %s:\n fast path: %s\n database:  %s", f, fj, sj)
			}
			r := doSync(t, bob, mautrix.ReqSync{Since: fast["next_batch"].(string), FilterID: f, SetPresence: event.PresenceOffline})
			if len(r.Rooms.Join) != 0 {
				t.Errorf("the next sync repeats: %+v", r.Rooms.Join)
			}
		}
	})
}

// TestSyncQuietPoll: a timeout=0 poll with nothing new answers from memory with the
// same token and the device's key counts; anything new for the user (a message, a
// typing notification, a to-device message) still comes down at once.
func TestSyncQuietPoll(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		ctx := context.Background()
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		since := doSync(t, bob, mautrix.ReqSync{}).NextBatch
		since = doSync(t, bob, mautrix.ReqSync{Since: since}).NextBatch // presence of the first sync

		before := e.srv.Sync.FastPathStats()
		var raw map[string]any
		u := bob.BuildClientURL("v3", "sync") + "?timeout=0&set_presence=online&since=" + url.QueryEscape(since)
		if _, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, &raw); err != nil {
			t.Fatal(err)
		}
		if _, ok := raw["device_one_time_keys_count"].(map[string]any); raw["next_batch"] != since || raw["rooms"] != nil || !ok {
			t.Fatalf("quiet poll from %q = %v", since, raw)
		}
		if got := e.srv.Sync.FastPathStats(); got.Quiet <= before.Quiet || got.Built != before.Built {
			t.Errorf("the quiet poll read the database: %+v → %+v", before, got)
		}

		e.send(alice, roomID, "news")
		r := doSync(t, bob, mautrix.ReqSync{Since: since})
		if jr := r.Rooms.Join[id.RoomID(roomID)]; jr == nil || !slices.Equal(timelineBodies(jr.Timeline.Events), []string{"news"}) {
			t.Fatalf("poll after a message = %+v", r.Rooms.Join)
		}
		since = r.NextBatch

		if _, err := alice.UserTyping(ctx, id.RoomID(roomID), true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		r = doSync(t, bob, mautrix.ReqSync{Since: since})
		if jr := r.Rooms.Join[id.RoomID(roomID)]; jr == nil || len(jr.Ephemeral.Events) == 0 {
			t.Fatalf("poll after typing = %+v", r.Rooms.Join)
		}
		since = r.NextBatch

		_, err := alice.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob.UserID: {bob.DeviceID: {Raw: map[string]any{"n": 1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		r = doSync(t, bob, mautrix.ReqSync{Since: since})
		if len(r.ToDevice.Events) != 1 {
			t.Fatalf("poll after a to-device message: %d to-device events", len(r.ToDevice.Events))
		}
	})
}
