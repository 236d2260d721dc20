package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// fedServer is a Myelin started for federation tests.
type fedServer struct{ *harness.Server }

func startFedServer(t *testing.T, engine string) *fedServer {
	t.Helper()
	return &fedServer{harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})}
}

// joinRemote makes joiner (a user of another server) join roomID through via's server
// (make_join/send_join) and checks the room is then joined on its server.
func joinRemote(t *testing.T, joiner *mautrix.Client, roomID string, via *fedServer) {
	t.Helper()
	ctx := context.Background()
	if _, err := joiner.JoinRoom(ctx, roomID, &mautrix.ReqJoinRoom{Via: []string{via.ServerName}}); err != nil {
		t.Fatalf("%s joins %s through %s: %v", joiner.UserID, roomID, via.ServerName, err)
	}
	rooms, err := joiner.JoinedRooms(ctx)
	if err != nil || !slices.Contains(rooms.JoinedRooms, id.RoomID(roomID)) {
		t.Fatalf("joined rooms of %s: %v %v", joiner.UserID, rooms, err)
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

// TestFederationSenderDelivers: three servers share a room; messages from each reach
// every other server through the outgoing queues, a state change (the room's name, by
// a user of B after A raised his power level) reaches A's and C's /sync, and typing, read receipts, presence, to-device messages, remote
// key queries and claims and device list changes reach the other server's users.
func TestFederationSenderDelivers(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b, c := startFedServer(t, engine), startFedServer(t, engine), startFedServer(t, engine)
		carol := fedUser(t, c, "carol")
		aliceDev := e2eRegister(t, a.Server, "alice")
		bobDev := e2eRegister(t, b.Server, "bob")
		alice, bob := aliceDev.cli, bobDev.cli
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		joinRemote(t, bob, roomID, a)
		joinRemote(t, carol, roomID, a)
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
		waitHistory(t, carol, roomID, []string{"hello from A", "hello from B"})
		sendText(t, carol, roomID, "hello from C")
		waitHistory(t, alice, roomID, []string{"hello from A", "hello from B", "hello from C"})
		waitHistory(t, bob, roomID, []string{"hello from A", "hello from B", "hello from C"})

		// A state change made on B (the room's name) reaches A's and C's /sync.
		alice1, _ := alice.FullSyncRequest(ctx, mautrix.ReqSync{})
		carol1, _ := carol.FullSyncRequest(ctx, mautrix.ReqSync{})
		if _, err := bob.SendStateEvent(ctx, created.RoomID, event.StateRoomName, "", map[string]any{"name": "Named on B"}); err == nil {
			t.Fatal("bob renamed the room without the power to")
		}
		setUserPower(t, alice, roomID, bob.UserID, 50)
		waitState(t, bob, roomID, func(st mautrix.RoomStateMap) bool {
			pl := st[event.StatePowerLevels][""]
			return pl != nil && pl.Content.AsPowerLevels().GetUserLevel(bob.UserID) == 50
		})
		if _, err := bob.SendStateEvent(ctx, created.RoomID, event.StateRoomName, "", map[string]any{"name": "Named on B"}); err != nil {
			t.Fatal(err)
		}
		for _, u := range []struct {
			cli   *mautrix.Client
			since string
			where string
		}{{alice, alice1.NextBatch, "A"}, {carol, carol1.NextBatch, "C"}} {
			syncUntil(t, u.cli, u.since, "the room name on "+u.where, func(r *mautrix.RespSync) bool {
				jr := r.Rooms.Join[created.RoomID]
				if jr == nil {
					return false
				}
				for _, ev := range append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...) {
					if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "Named on B" {
						return true
					}
				}
				return false
			})
		}

		// Typing, a read receipt and presence of alice reach bob's /sync on B and
		// carol's on C.
		bob1, _ := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
		carol2, _ := carol.FullSyncRequest(ctx, mautrix.ReqSync{})
		if _, err := alice.UserTyping(ctx, created.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bob1.NextBatch, "alice typing on B", func(r *mautrix.RespSync) bool {
			users, _ := typingUsers(r, roomID)
			return slices.Contains(users, alice.UserID.String())
		})
		syncUntil(t, carol, carol2.NextBatch, "alice typing on C", func(r *mautrix.RespSync) bool {
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
		for _, u := range []struct {
			cli   *mautrix.Client
			since string
			where string
		}{{bob, bob1.NextBatch, "B"}, {carol, carol2.NextBatch, "C"}} {
			syncUntil(t, u.cli, u.since, "alice's receipt on "+u.where, func(r *mautrix.RespSync) bool {
				c := ephemeralOf(r, roomID, "m.receipt")
				return e2eGet(c, readID.String(), "m.read", alice.UserID.String()) != nil
			})
		}
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "federating"}); err != nil {
			t.Fatal(err)
		}
		for _, u := range []struct {
			cli   *mautrix.Client
			since string
			where string
		}{{bob, bob1.NextBatch, "B"}, {carol, carol2.NextBatch, "C"}} {
			syncUntil(t, u.cli, u.since, "alice's presence on "+u.where, func(r *mautrix.RespSync) bool {
				for _, ev := range r.Presence.Events {
					if ev.Sender == alice.UserID && ev.Content.Raw["status_msg"] == "federating" {
						return true
					}
				}
				return false
			})
		}

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
		joinRemote(t, bob, roomID, a)
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

// setUserPower sets user's power level in the room's m.room.power_levels, as cli.
func setUserPower(t *testing.T, cli *mautrix.Client, roomID string, user id.UserID, level int) {
	t.Helper()
	var pl map[string]any
	if err := cli.StateEvent(context.Background(), id.RoomID(roomID), event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[user.String()] = level
	pl["users"] = users
	if _, err := cli.SendStateEvent(context.Background(), id.RoomID(roomID), event.StatePowerLevels, "", pl); err != nil {
		t.Fatalf("%s sets %s's power level: %v", cli.UserID, user, err)
	}
}

// waitState waits until the room's current state seen by cli satisfies ok.
func waitState(t *testing.T, cli *mautrix.Client, roomID string, ok func(mautrix.RoomStateMap) bool) mautrix.RoomStateMap {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := cli.State(context.Background(), id.RoomID(roomID))
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("room state of %s never as expected: %v", cli.UserID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
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

// TestFederationIncomingEDUs: EDUs a remote server sends in /send reach local users
// (typing, receipts, presence, to-device once per message ID, device list changes);
// EDUs speaking for users of another server, and typing from a server the room's ACL
// denies, are dropped. The user key endpoints refuse bad requests.
func TestFederationIncomingEDUs(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		o := startFakeOrigin(t)
		b := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
		aliceDev := e2eRegister(t, b, "alice")
		alice := aliceDev.cli
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		state, err := alice.State(ctx, created.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := alice.Messages(ctx, created.RoomID, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		sid := func(typ event.Type) string { return state[typ][""].ID.String() }
		bob := "@bob:" + o.name
		join := o.event(t, roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join"},
			[]string{last.Chunk[0].ID.String()}, []string{sid(event.StateCreate), sid(event.StateJoinRules), sid(event.StatePowerLevels)}, 20)
		txnN := 0
		send := func(pdus []any, edus ...map[string]any) {
			t.Helper()
			txnN++
			txn := map[string]any{"origin": o.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus}
			code, ecode, raw := o.send(t, b, o.name, b.ServerName, o.key, "PUT", fmt.Sprintf("/_matrix/federation/v1/send/edus%d", txnN), txn, nil)
			if code != 200 {
				t.Fatalf("send: %d %s %s", code, ecode, raw)
			}
		}
		send([]any{join})
		s0, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		mallory := "@mallory:elsewhere.test"
		toDevice := func(sender, messageID, secret string) map[string]any {
			return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": sender, "type": "org.example.secret",
				"message_id": messageID, "messages": map[string]any{aliceDev.userID: map[string]any{"*": map[string]any{"secret": secret}}}}}
		}
		send(nil,
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": bob, "typing": true}},
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": mallory, "typing": true}},
			map[string]any{"edu_type": "m.receipt", "content": map[string]any{roomID: map[string]any{"m.read": map[string]any{
				bob: map[string]any{"event_ids": []string{join.EventID()}, "data": map[string]any{"ts": time.Now().UnixMilli()}}}}}},
			map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
				map[string]any{"user_id": bob, "presence": "online", "status_msg": "remote", "last_active_ago": 1000},
				map[string]any{"user_id": mallory, "presence": "online", "status_msg": "forged"}}}},
			toDevice(bob, "msg-1", "first"),
			toDevice(mallory, "msg-2", "forged"),
			map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": bob, "device_id": "PHONE",
				"stream_id": 5, "prev_id": []int{}, "deleted": true}},
			map[string]any{"edu_type": "org.example.unknown", "content": map[string]any{}},
		)
		// The same message ID again (a retried transaction with a new txnId): not delivered twice.
		send(nil, toDevice(bob, "msg-1", "first"))
		r, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Since: s0.NextBatch})
		if err != nil {
			t.Fatal(err)
		}
		if users, _ := typingUsers(r, roomID); !slices.Equal(users, []string{bob}) {
			t.Errorf("typing = %v, want only %s", users, bob)
		}
		if e2eGet(ephemeralOf(r, roomID, "m.receipt"), join.EventID(), "m.read", bob) == nil {
			t.Errorf("receipt missing: %v", ephemeralOf(r, roomID, "m.receipt"))
		}
		var presence []string
		for _, ev := range r.Presence.Events {
			presence = append(presence, ev.Sender.String()+"="+fmt.Sprint(ev.Content.Raw["status_msg"]))
		}
		if !slices.Equal(presence, []string{bob + "=remote"}) {
			t.Errorf("presence = %v", presence)
		}
		if len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Sender.String() != bob || r.ToDevice.Events[0].Content.Raw["secret"] != "first" {
			t.Errorf("to-device = %+v", r.ToDevice.Events)
		}
		if !slices.Contains(r.DeviceLists.Changed, id.UserID(bob)) {
			t.Errorf("device_lists.changed = %v", r.DeviceLists.Changed)
		}

		// The room's ACL denies the origin: its typing is dropped.
		if _, err := alice.SendStateEvent(ctx, created.RoomID, event.StateServerACL, "", map[string]any{
			"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true}); err != nil {
			t.Fatal(err)
		}
		send(nil, map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": bob, "typing": false}})
		r2, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Since: r.NextBatch})
		if err != nil {
			t.Fatal(err)
		}
		if users, present := typingUsers(r2, roomID); present {
			t.Errorf("typing from a denied server applied: %v", users)
		}

		// User key endpoints: bad requests.
		for _, c := range []struct {
			method, uri string
			body        any
			code        int
			errcode     string
		}{
			{"POST", "/_matrix/federation/v1/user/keys/query", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"GET", "/_matrix/federation/v1/user/devices/" + url.PathEscape(bob), nil, 400, "M_INVALID_PARAM"},
		} {
			if code, ecode, raw := o.send(t, b, o.name, b.ServerName, o.key, c.method, c.uri, c.body, nil); code != c.code || ecode != c.errcode {
				t.Errorf("%s %s: %d %s %s", c.method, c.uri, code, ecode, raw)
			}
		}
		// A local user without devices: an empty list at stream 0.
		code, _, raw := o.send(t, b, o.name, b.ServerName, o.key, "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(aliceDev.userID), nil, nil)
		var devs struct {
			UserID   string `json:"user_id"`
			StreamID int64  `json:"stream_id"`
			Devices  []any  `json:"devices"`
		}
		if code != 200 || json.Unmarshal(raw, &devs) != nil || devs.UserID != aliceDev.userID || devs.Devices == nil {
			t.Errorf("user/devices: %d %s", code, raw)
		}
	})
}

// TestFederationCrossSigning: a remote user's cross-signing keys reach local users
// (device_lists.changed, then /keys/query through federation), and a local user signs
// the remote user's master key with their user-signing key and sees that signature in
// later queries; a signature of a key the remote user does not have is refused.
func TestFederationCrossSigning(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b := startFedServer(t, engine), startFedServer(t, engine)
		alice, bob := e2eRegister(t, a.Server, "alice"), e2eRegister(t, b.Server, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		joinRemote(t, bob.cli, created.RoomID.String(), a)
		const path = "/_matrix/client/v3/keys/device_signing/upload"
		acs, bcs := e2eNewCrossSigning(t), e2eNewCrossSigning(t)
		code, body := a.Do(t, "POST", path, alice.token, acs.body(t, alice.userID))
		e2eExpect(t, "alice's cross-signing keys", code, body, 200, "")
		s0, err := alice.cli.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		code, body = b.Do(t, "POST", path, bob.token, bcs.body(t, bob.userID))
		e2eExpect(t, "bob's cross-signing keys", code, body, 200, "")
		syncUntil(t, alice.cli, s0.NextBatch, "bob's signing key update on A", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, id.UserID(bob.userID))
		})
		var master map[string]any
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			q := e2eQuery(t, a.Server, alice.token, bob.userID)
			master, _ = e2eGet(q, "master_keys", bob.userID).(map[string]any)
			if e2eGet(master, "keys", "ed25519:"+bcs.master) == bcs.master && e2eGet(q, "self_signing_keys", bob.userID) != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bob's cross-signing keys not in alice's query: %v", q)
			}
		}

		signed := e2eSign(t, master, alice.userID, "ed25519:"+acs.usk, acs.uskPriv)
		code, body = a.Do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", alice.token,
			map[string]any{bob.userID: map[string]any{bcs.master: signed}})
		if code != 200 || len(body["failures"].(map[string]any)) != 0 {
			t.Fatalf("signing bob's master key: %d %v", code, body)
		}
		q := e2eQuery(t, a.Server, alice.token, bob.userID)
		if !e2eVerify(t, e2eGet(q, "master_keys", bob.userID), alice.userID, acs.usk, acs.usk) {
			t.Fatalf("alice's signature missing from bob's master key: %v", q)
		}
		// Not bob's master key: refused, per key.
		other := e2eSign(t, e2eCSKey(bob.userID, "master", acs.master), alice.userID, "ed25519:"+acs.usk, acs.uskPriv)
		code, body = a.Do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", alice.token,
			map[string]any{bob.userID: map[string]any{acs.master: other}})
		if code != 200 || e2eGet(body, "failures", bob.userID, acs.master, "errcode") != "M_NOT_FOUND" {
			t.Fatalf("signature of a key bob does not have: %d %v", code, body)
		}
	})
}
