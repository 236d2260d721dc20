package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/test/harness"
)

// fedServer is a Myelin started for federation tests, with its signing key (read from
// its data directory) so the test can speak for it where joins are not built yet.
type fedServer struct {
	*harness.Server
	key config.SigningKey
}

func startFedServer(t *testing.T, engine string) *fedServer {
	t.Helper()
	s := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	key, err := config.LoadSigningKey(filepath.Join(s.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &fedServer{Server: s, key: key}
}

// as returns a fake origin that signs requests and events as this server.
func (s *fedServer) as() *fakeOrigin { return &fakeOrigin{name: s.ServerName, key: s.key} }

// fedRequest sends a request signed by from to the federation API of to.
func fedRequest(t *testing.T, from, to *fedServer, method, uri string, body any) (int, []byte) {
	t.Helper()
	code, _, raw := from.as().send(t, to.Server, from.ServerName, to.ServerName, from.key, method, uri, body, nil)
	return code, raw
}

// shareRoom makes joiner (a user of b) a member of roomID (a room of a), the way a
// remote join ends, without make_join/send_join: b signs the join, a accepts it through
// /send, and b's roomserver is given the room's events read from a's federation API.
func shareRoom(t *testing.T, a, b *fedServer, creator *mautrix.Client, roomID string, joiner *mautrix.Client) {
	t.Helper()
	ctx := context.Background()
	state, err := creator.State(ctx, id.RoomID(roomID))
	if err != nil {
		t.Fatal(err)
	}
	stateID := func(typ event.Type) string { return state[typ][""].ID.String() }
	last, err := creator.Messages(ctx, id.RoomID(roomID), "", "", mautrix.DirectionBackward, nil, 1)
	if err != nil || len(last.Chunk) == 0 {
		t.Fatalf("latest event: %v", err)
	}
	localpart := strings.TrimPrefix(strings.Split(joiner.UserID.String(), ":")[0], "@")
	uid := joiner.UserID.String()
	join := b.as().event(t, roomID, localpart, "m.room.member", &uid, map[string]any{"membership": "join"},
		[]string{last.Chunk[0].ID.String()}, []string{stateID(event.StateCreate), stateID(event.StateJoinRules), stateID(event.StatePowerLevels)}, 50)
	txn := map[string]any{"origin": b.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{join.JSON()}}
	code, raw := fedRequest(t, b, a, "PUT", "/_matrix/federation/v1/send/share-"+join.EventID(), txn)
	if code != 200 || !strings.Contains(string(raw), `"`+join.EventID()+`":{}`) {
		t.Fatalf("join through /send: %d %s", code, raw)
	}
	// Everything before the join, from a, as b (now in the room).
	ver, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersionV11)
	events := map[string]gomatrixserverlib.PDU{join.EventID(): join}
	add := func(raws []json.RawMessage) {
		for _, r := range raws {
			ev, err := ver.NewEventFromTrustedJSON(r, false)
			if err != nil {
				t.Fatal(err)
			}
			events[ev.EventID()] = ev
		}
	}
	code, raw = fedRequest(t, b, a, "GET", "/_matrix/federation/v1/state/"+url.PathEscape(roomID)+"?event_id="+url.QueryEscape(join.EventID()), nil)
	var st struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if code != 200 || json.Unmarshal(raw, &st) != nil {
		t.Fatalf("state: %d %s", code, raw)
	}
	add(st.PDUs)
	add(st.AuthChain)
	for missing := true; missing; {
		missing = false
		for _, ev := range events {
			for _, p := range ev.PrevEventIDs() {
				if _, ok := events[p]; ok {
					continue
				}
				missing = true
				code, raw := fedRequest(t, b, a, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(p), nil)
				var one struct {
					PDUs []json.RawMessage `json:"pdus"`
				}
				if code != 200 || json.Unmarshal(raw, &one) != nil {
					t.Fatalf("event %s: %d %s", p, code, raw)
				}
				add(one.PDUs)
			}
		}
	}
	ordered := make([]gomatrixserverlib.PDU, 0, len(events))
	for _, ev := range events {
		ordered = append(ordered, ev)
	}
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].Depth() < ordered[j].Depth() })
	// b learns the room as after a send_join: stopped, its roomserver takes the events
	// (checked against their auth events and state as any federated event), restarted.
	b.Stop()
	cfg, err := config.Load(b.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(ctx, db, roomserver.ConfigFrom(cfg, b.key))
	if err != nil {
		t.Fatal(err)
	}
	var in []roomserver.InputEvent
	for _, ev := range ordered {
		in = append(in, roomserver.InputEvent{Kind: roomserver.InputNew, Event: ev})
	}
	res, err := rs.InputEvents(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil || r.Rejected {
			t.Fatalf("importing %s into %s: %v (rejected %v)", r.EventID, b.ServerName, r.Err, r.Rejected)
		}
	}
	_ = rs.Close()
	_ = db.Close()
	b.Restart()
	rooms, err := joiner.JoinedRooms(ctx)
	if err != nil || !slices.Contains(rooms.JoinedRooms, id.RoomID(roomID)) {
		t.Fatalf("joiner's rooms on %s: %v %v", b.ServerName, rooms, err)
	}
}

// fedUser registers a user on s.
func fedUser(t *testing.T, s *fedServer, localpart string) *mautrix.Client {
	t.Helper()
	return e2eRegister(t, s.Server, localpart).cli
}

// syncUntil long-polls cli's /sync from since until ok accepts a response, and returns
// it (failing after a minute).
func syncUntil(t *testing.T, cli *mautrix.Client, since string, what string, ok func(r *mautrix.RespSync) bool) *mautrix.RespSync {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r, err := cli.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: 5000})
		if err != nil {
			t.Fatalf("sync waiting for %s: %v", what, err)
		}
		if ok(r) {
			return r
		}
		since = r.NextBatch
	}
	t.Fatalf("%s did not arrive within a minute", what)
	return nil
}

// roomBodies returns the bodies of the text messages of a room's timeline in a sync response.
func roomBodies(r *mautrix.RespSync, roomID string) []string {
	jr := r.Rooms.Join[id.RoomID(roomID)]
	if jr == nil {
		return nil
	}
	return timelineBodies(jr.Timeline.Events)
}

// historyBodies returns every message body of a room's history, oldest first.
func historyBodies(t *testing.T, cli *mautrix.Client, roomID string) []string {
	t.Helper()
	msgs, err := cli.Messages(context.Background(), id.RoomID(roomID), "", "", mautrix.DirectionBackward, nil, 200)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(msgs.Chunk) - 1; i >= 0; i-- {
		if b, ok := msgs.Chunk[i].Content.Raw["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

func sendText(t *testing.T, cli *mautrix.Client, roomID, body string) {
	t.Helper()
	if _, err := cli.SendText(context.Background(), id.RoomID(roomID), body); err != nil {
		t.Fatal(err)
	}
}

// TestFederationSenderDelivers: two servers share a room; messages go both ways through
// the outgoing queues, and typing, read receipts, presence, to-device messages, remote
// key queries and claims and device list changes reach the other server's users.
func TestFederationSenderDelivers(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b := startFedServer(t, engine), startFedServer(t, engine)
		aliceDev := e2eRegister(t, a.Server, "alice")
		bobDev := e2eRegister(t, b.Server, "bob")
		alice, bob := aliceDev.cli, bobDev.cli
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		shareRoom(t, a, b, alice, roomID, bob)
		bob0, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		alice0, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}

		// Messages, both ways.
		sendText(t, alice, roomID, "hello from A")
		syncUntil(t, bob, bob0.NextBatch, "A's message on B", func(r *mautrix.RespSync) bool {
			return slices.Contains(roomBodies(r, roomID), "hello from A")
		})
		sendText(t, bob, roomID, "hello from B")
		syncUntil(t, alice, alice0.NextBatch, "B's message on A", func(r *mautrix.RespSync) bool {
			return slices.Contains(roomBodies(r, roomID), "hello from B")
		})

		// Typing, a read receipt and presence of alice reach bob's /sync on B.
		bob1, _ := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
		if _, err := alice.UserTyping(ctx, created.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bob1.NextBatch, "alice typing on B", func(r *mautrix.RespSync) bool {
			users, _ := typingUsers(r, roomID)
			return slices.Contains(users, alice.UserID.String())
		})
		last, err := alice.Messages(ctx, created.RoomID, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		readID := last.Chunk[0].ID
		if err := alice.SendReceipt(ctx, created.RoomID, readID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bob1.NextBatch, "alice's receipt on B", func(r *mautrix.RespSync) bool {
			c := ephemeralOf(r, roomID, "m.receipt")
			return e2eGet(c, readID.String(), "m.read", alice.UserID.String()) != nil
		})
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "federating"}); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bob1.NextBatch, "alice's presence on B", func(r *mautrix.RespSync) bool {
			for _, ev := range r.Presence.Events {
				if ev.Sender == alice.UserID && ev.Content.Raw["status_msg"] == "federating" {
					return true
				}
			}
			return false
		})

		// Keys: bob's device keys and one-time keys, queried and claimed from A.
		code, body := bobDev.upload(t, b.Server, map[string]any{"device_keys": bobDev.deviceKeys(t), "one_time_keys": bobDev.otks(t, "fed", 2)})
		e2eExpect(t, "bob uploads keys", code, body, 200, "")
		q := e2eQuery(t, a.Server, aliceDev.token, bob.UserID.String())
		got := e2eGet(q, "device_keys", bob.UserID.String(), bobDev.deviceID)
		if got == nil || !e2eVerify(t, got, bobDev.userID, bobDev.deviceID, bobDev.ed) {
			t.Fatalf("remote keys/query: %v", q)
		}
		claimed := e2eClaim(t, a.Server, aliceDev.token, bobDev.userID, bobDev.deviceID)
		if len(claimed[bobDev.deviceID]) != 1 {
			t.Fatalf("remote keys/claim: %v", claimed)
		}
		for keyID, k := range claimed[bobDev.deviceID] {
			if !strings.HasPrefix(keyID, "signed_curve25519:") || !e2eVerify(t, k, bobDev.userID, bobDev.deviceID, bobDev.ed) {
				t.Fatalf("claimed key %s: %v", keyID, k)
			}
		}
		// A server that cannot be reached is listed in failures.
		code, body = a.Do(t, "POST", "/_matrix/client/v3/keys/query", aliceDev.token,
			map[string]any{"device_keys": map[string]any{"@nobody:127.0.0.1:1": []string{}}, "timeout": 5000})
		if code != 200 || e2eGet(body, "failures", "127.0.0.1:1") == nil {
			t.Fatalf("unreachable server: %d %v", code, body)
		}

		// A new device of bob shows in alice's device_lists.changed, and its keys in a query.
		alice2, _ := alice.FullSyncRequest(ctx, mautrix.ReqSync{})
		bobPhone := e2eLogin(t, b.Server, "bob", "")
		code, body = bobPhone.upload(t, b.Server, map[string]any{"device_keys": bobPhone.deviceKeys(t)})
		e2eExpect(t, "bob's second device uploads keys", code, body, 200, "")
		syncUntil(t, alice, alice2.NextBatch, "bob's device list change on A", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, bob.UserID)
		})
		// The change may be the earlier one of bob's first device; the new device's
		// update follows it.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			q = e2eQuery(t, a.Server, aliceDev.token, bob.UserID.String())
			if e2eGet(q, "device_keys", bob.UserID.String(), bobPhone.deviceID) != nil && e2eGet(q, "device_keys", bob.UserID.String(), bobDev.deviceID) != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("keys/query after the device list update: %v", q)
			}
		}

		// To-device from alice to bob's device arrives once, even when the client retries.
		bob3, _ := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
		msg := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bobDev.deviceID: map[string]any{"secret": "for bob"}}}}
		for range 2 {
			code, body = a.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/org.example.fed/txn-1", aliceDev.token, msg)
			e2eExpect(t, "sendToDevice", code, body, 200, "")
		}
		r := syncUntil(t, bob, bob3.NextBatch, "to-device on B", func(r *mautrix.RespSync) bool { return len(r.ToDevice.Events) > 0 })
		if len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Sender != alice.UserID || r.ToDevice.Events[0].Content.Raw["secret"] != "for bob" {
			t.Fatalf("to-device: %+v", r.ToDevice.Events)
		}
		// A later message proves the queue moved on; the to-device message did not come again.
		sendText(t, alice, roomID, "after to-device")
		r = syncUntil(t, bob, r.NextBatch, "message after to-device", func(r *mautrix.RespSync) bool {
			return slices.Contains(roomBodies(r, roomID), "after to-device")
		})
		if len(r.ToDevice.Events) != 0 {
			t.Fatalf("to-device delivered again: %+v", r.ToDevice.Events)
		}
	})
}

// TestFederationSenderCatchUp: events sent while the other server is down (killed) are
// delivered after it restarts, in order, exactly once; a server restarted with a
// non-empty queue still delivers it.
func TestFederationSenderCatchUp(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b := startFedServer(t, engine), startFedServer(t, engine)
		alice, bob := fedUser(t, a, "alice"), fedUser(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		shareRoom(t, a, b, alice, roomID, bob)
		sendText(t, alice, roomID, "m0")
		waitHistory(t, bob, roomID, []string{"m0"})

		b.Kill()
		for i := 1; i <= 5; i++ {
			sendText(t, alice, roomID, fmt.Sprintf("m%d", i))
		}
		b.Restart()
		start := time.Now()
		want := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
		waitHistory(t, bob, roomID, want)
		t.Logf("caught up %v after the restart", time.Since(start))

		// A stops with a queue for B (B is down), restarts, and delivers it once B is back.
		b.Stop()
		sendText(t, alice, roomID, "m6")
		sendText(t, alice, roomID, "m7")
		a.Restart()
		b.Restart()
		// B's user types: the request from B tells A that B is back.
		if _, err := bob.UserTyping(ctx, created.RoomID, true, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		waitHistory(t, bob, roomID, append(want, "m6", "m7"))
		t.Logf("queue of the restarted server delivered %v after both restarted", time.Since(start))
	})
}

// waitHistory waits until the room's message history seen by cli is exactly want.
func waitHistory(t *testing.T, cli *mautrix.Client, roomID string, want []string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = historyBodies(t, cli, roomID)
		if len(got) >= len(want) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("history = %v, want %v", got, want)
	}
}
