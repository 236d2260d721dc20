package test

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// pushAs sends PDUs to target in one /send transaction signed as the server s (with
// its own signing key, read from its data directory), as s's federation sender
// would; it returns the error per event ID.
func pushAs(t *testing.T, s *fedServer, target *fedServer, pdus ...json.RawMessage) map[string]string {
	t.Helper()
	key, err := config.LoadSigningKey(filepath.Join(s.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	return sendTxn(t, target.Server, s.ServerName, key, pdus)
}

// fedEventJSON fetches an event's PDU from s over federation, asking as the server as.
func fedEventJSON(t *testing.T, as, s *fedServer, eventID string) json.RawMessage {
	t.Helper()
	key, err := config.LoadSigningKey(filepath.Join(as.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	code, ecode, raw := (&fakeOrigin{}).send(t, s.Server, as.ServerName, s.ServerName, key, "GET",
		"/_matrix/federation/v1/event/"+url.PathEscape(eventID), nil, nil)
	if code != 200 {
		t.Fatalf("event %s: %d %s %s", eventID, code, ecode, raw)
	}
	var out struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.PDUs) != 1 {
		t.Fatalf("event %s: %s %v", eventID, raw, err)
	}
	return out.PDUs[0]
}

// TestFederationOutlierJoinsTimeline: B joins a room of A, so it stores the room's
// state (here the topic and the name, the last events before the join) as outliers.
// A then delivers the name again as a timeline event, and sends a message whose prev
// event is the topic (made while B was joining): B accepts both, brings the name and
// the topic into its timeline under their event IDs, and bob sees each event once in
// /sync and in /messages, in topological order; /context works on the topic. The
// room's state on B is unchanged by the old events and follows the fork.
func TestFederationOutlierJoinsTimeline(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b := startFedServer(t, engine), startFedServer(t, engine)
		alice, bob := fedUser(t, a, "alice"), fedUser(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		topic, err := alice.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]any{"topic": "before the join"})
		if err != nil {
			t.Fatal(err)
		}
		name, err := alice.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]any{"name": "Outlier room"})
		if err != nil {
			t.Fatal(err)
		}
		joinRemote(t, bob, roomID.String(), a)
		since, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		if jr := since.Rooms.Join[roomID]; jr != nil {
			for _, ev := range jr.Timeline.Events {
				if ev.ID == topic.EventID || ev.ID == name.EventID {
					t.Fatalf("%s in bob's timeline before it was delivered", ev.ID)
				}
			}
		}

		// 1. The name, an outlier on B, delivered again as a timeline event.
		nameJSON := fedEventJSON(t, b, a, name.EventID.String())
		if res := pushAs(t, a, b, nameJSON); res[name.EventID.String()] != "" {
			t.Fatalf("name delivered as a timeline event: %v", res)
		}

		// bob's /sync, as a client polls it: each delivered event once.
		seen := map[id.EventID]int{}
		next := since.NextBatch
		syncSeen := func(until id.EventID) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				r, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: next, Timeout: 1000})
				if err != nil {
					t.Fatal(err)
				}
				if jr := r.Rooms.Join[roomID]; jr != nil {
					for _, ev := range jr.Timeline.Events {
						seen[ev.ID]++
					}
				}
				next = r.NextBatch
				if seen[until] > 0 || until == "" {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s did not reach bob's /sync (seen %v)", until, seen)
				}
			}
		}
		syncSeen(name.EventID)
		// The name's new stream position was the last one handed out: after a restart
		// B must not hand it out again (bob's message must be stored, and reach /sync).
		// (/sync, not /messages: paging back would backfill the topic from A first.)
		b.Restart()
		afterRestart, err := bob.SendText(ctx, roomID, "bob after the restart")
		if err != nil {
			t.Fatalf("bob's message after the restart: %v", err)
		}
		syncSeen(afterRestart.EventID)

		// 2. A message of alice's whose prev event is the topic (an outlier on B).
		var topicPDU struct {
			Depth int64 `json:"depth"`
		}
		if err := json.Unmarshal(fedEventJSON(t, b, a, topic.EventID.String()), &topicPDU); err != nil {
			t.Fatal(err)
		}
		state, err := alice.State(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		aKey, err := config.LoadSigningKey(filepath.Join(a.DataDir, "signing.key"))
		if err != nil {
			t.Fatal(err)
		}
		asA := &fakeOrigin{name: a.ServerName, key: aKey}
		aliceID := alice.UserID.String()
		msg := asA.event(t, roomID.String(), "alice", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after the topic"},
			[]string{topic.EventID.String()},
			[]string{state[event.StateCreate][""].ID.String(), state[event.StatePowerLevels][""].ID.String(), state[event.StateMember][aliceID].ID.String()},
			topicPDU.Depth+1)
		if res := pushAs(t, a, b, msg.JSON()); res[msg.EventID()] != "" {
			t.Fatalf("message after an outlier: %v", res)
		}

		want := []id.EventID{name.EventID, topic.EventID, id.EventID(msg.EventID())}
		syncSeen(want[2])
		syncSeen("")
		for _, w := range want {
			if seen[w] != 1 {
				t.Fatalf("bob's /sync showed %s %d times, want once (seen %v; name, topic, message: %v)", w, seen[w], seen, want)
			}
		}

		// /messages: each once, in topological order (topic, name, bob's join; the
		// message after the topic).
		msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var order []id.EventID
		for i := len(msgs.Chunk) - 1; i >= 0; i-- {
			order = append(order, msgs.Chunk[i].ID)
		}
		bobJoin := id.EventID("")
		for _, ev := range msgs.Chunk {
			if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() {
				bobJoin = ev.ID
			}
		}
		pos := func(e id.EventID) int {
			n := 0
			for _, o := range order {
				if o == e {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("/messages shows %s %d times: %v", e, n, order)
			}
			return slices.Index(order, e)
		}
		if !(pos(topic.EventID) < pos(name.EventID) && pos(name.EventID) < pos(bobJoin) && pos(topic.EventID) < pos(want[2])) {
			t.Fatalf("/messages order (oldest first): %v; topic %s name %s join %s message %s", order, topic.EventID, name.EventID, bobJoin, want[2])
		}

		// /context around the topic: the events after it include the message.
		c, err := bob.Context(ctx, roomID, topic.EventID, nil, 10)
		if err != nil {
			t.Fatalf("context of the promoted topic: %v", err)
		}
		if c.Event == nil || c.Event.ID != topic.EventID || !slices.ContainsFunc(c.EventsAfter, func(e *event.Event) bool { return e.ID == want[2] }) {
			t.Fatalf("context of the topic: %+v", c)
		}

		// The room's state on B: the old events changed nothing.
		var nameContent struct {
			Name string `json:"name"`
		}
		if err := bob.StateEvent(ctx, roomID, event.StateRoomName, "", &nameContent); err != nil || nameContent.Name != "Outlier room" {
			t.Fatalf("room name on B: %q %v", nameContent.Name, err)
		}
		members, err := bob.JoinedMembers(ctx, roomID)
		if err != nil || len(members.Joined) != 2 {
			t.Fatalf("members on B: %+v %v", members, err)
		}
		// bob's next message follows both forward extremities and is stored.
		sendText(t, bob, roomID.String(), "bob after the fork")
		if got := historyBodies(t, bob, roomID.String()); len(got) < 3 || got[len(got)-1] != "bob after the fork" || !slices.Contains(got, "after the topic") {
			t.Fatalf("bob's history: %v", got)
		}
	})
}

// TestFederationOutlierFromGapJoinsTimeline: B stores bob's display name change O as
// an outlier (fetched as a missing auth event of a message X; O was never sent). Then
// the origin sends M after O: /get_missing_events gives O, which joins B's live
// timeline (its prev event is in it) as a new forward extremity beside X, so bob's new
// display name becomes B's current state; M follows it. Alice's /sync shows O and M
// once each, and /messages puts O before M.
func TestFederationOutlierFromGapJoinsTimeline(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		f := newFedRoom(t, engine, nil)
		createID, plID, jrID := f.stateIDs(t)
		bob := "@bob:" + f.o.name
		since, err := f.cli.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}

		o := f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join", "displayname": "Bob Renamed"},
			[]string{f.join.EventID()}, []string{createID, jrID, plID, f.join.EventID()}, f.join.Depth()+1)
		f.mu.Lock()
		f.events[o.EventID()] = o
		f.mu.Unlock()
		x := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x needs O"},
			[]string{f.join.EventID()}, []string{createID, plID, o.EventID()}, f.join.Depth()+1)
		if res := f.send(t, f.o, x); res[x.EventID()] != "" {
			t.Fatalf("x: %v", res)
		}
		if _, err := f.cli.GetEvent(ctx, id.RoomID(f.roomID), id.EventID(o.EventID())); err == nil {
			t.Fatal("O is shown before it joined the timeline")
		}

		m := f.msg(t, "m after O", o)
		if res := f.send(t, f.o, m); res[m.EventID()] != "" {
			t.Fatalf("m after the outlier O: %v", res)
		}

		var profile struct {
			DisplayName string `json:"displayname"`
		}
		if err := f.cli.StateEvent(ctx, id.RoomID(f.roomID), event.StateMember, bob, &profile); err != nil || profile.DisplayName != "Bob Renamed" {
			t.Fatalf("bob's display name on B: %q %v", profile.DisplayName, err)
		}
		seen := map[string]int{}
		next := since.NextBatch
		for i := 0; i < 20 && seen[m.EventID()] == 0; i++ {
			r, err := f.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: next, Timeout: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if jr := r.Rooms.Join[id.RoomID(f.roomID)]; jr != nil {
				for _, ev := range jr.Timeline.Events {
					seen[ev.ID.String()]++
				}
			}
			next = r.NextBatch
		}
		for _, ev := range []string{x.EventID(), o.EventID(), m.EventID()} {
			if seen[ev] != 1 {
				t.Fatalf("alice's /sync showed %s %d times (seen %v; x, O, m: %s %s %s)", ev, seen[ev], seen, x.EventID(), o.EventID(), m.EventID())
			}
		}
		msgs, err := f.cli.Messages(ctx, id.RoomID(f.roomID), "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		iO, iM, n := -1, -1, 0
		for i, ev := range msgs.Chunk {
			switch ev.ID.String() {
			case o.EventID():
				iO, n = i, n+1
			case m.EventID():
				iM = i
			}
		}
		if n != 1 || iM < 0 || iO <= iM {
			t.Fatalf("/messages (newest first): O at %d (%d times), m at %d", iO, n, iM)
		}
	})
}
