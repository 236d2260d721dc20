package test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// Helpers shared by the room tests (rooms, membership, messages, visibility).

func roomPath(roomID id.RoomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + esc(roomID.String()) + rest
}

// rmCreate creates a room with alice's client.
func rmCreate(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	return resp.RoomID
}

// rmSend sends a text message and returns its ID.
func rmSend(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(context.Background(), roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

// rmWantErr checks the status and errcode of a failed mautrix call.
func rmWantErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %d %s", what, status, code)
	}
	st, c := udErr(t, err)
	if st != status || (code != "" && c != code) {
		t.Fatalf("%s: got %d %s (%v), want %d %s", what, st, c, err, status, code)
	}
}

// rmBodies returns the bodies of the m.room.message events of a chunk.
func rmBodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage {
			b, _ := ev.Content.Raw["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

func TestRoomsCreate(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")

		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Name: "Ops", Topic: "Operations",
			Invite:             []id.UserID{bob.UserID},
			IsDirect:           true,
			CreationContent:    map[string]any{"m.federate": false},
			PowerLevelOverride: &event.PowerLevelsEventContent{EventsDefault: 0, StateDefaultPtr: ptr(40), Users: map[id.UserID]int{alice.UserID: 100}},
			InitialState:       []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}},
			RoomVersion:        "10",
		})
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx, roomID, event.StateRoomName, "", &name); err != nil || name.Name != "Ops" {
			t.Fatalf("name: %+v %v", name, err)
		}
		var topic event.TopicEventContent
		if err := alice.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "Operations" {
			t.Fatalf("topic: %+v %v", topic, err)
		}
		var create map[string]any
		if err := alice.StateEvent(ctx, roomID, event.StateCreate, "", &create); err != nil || create["m.federate"] != false || create["room_version"] != "10" {
			t.Fatalf("create: %v %v", create, err)
		}
		var pl map[string]any
		if err := alice.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil || pl["state_default"] != 40.0 {
			t.Fatalf("power levels: %v %v", pl, err)
		}
		var hv map[string]any
		if err := alice.StateEvent(ctx, roomID, event.StateHistoryVisibility, "", &hv); err != nil || hv["history_visibility"] != "joined" {
			t.Fatalf("initial_state: %v %v", hv, err)
		}
		var member map[string]any
		if err := alice.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &member); err != nil || member["membership"] != "invite" || member["is_direct"] != true {
			t.Fatalf("bob's invite: %v %v", member, err)
		}
		// The created room is in alice's joined rooms, not yet in bob's.
		if jr, err := alice.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 1 || jr.JoinedRooms[0] != roomID {
			t.Fatalf("alice joined rooms: %+v %v", jr, err)
		}
		if jr, err := bob.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 0 {
			t.Fatalf("bob joined rooms: %+v %v", jr, err)
		}

		// Refused requests.
		bad := []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"unknown room version", map[string]any{"room_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"numeric name", `{"name": 5}`, 400, "M_BAD_JSON"},
			{"invite not a list", `{"invite": "@bob:hs1.test"}`, 400, "M_BAD_JSON"},
			{"unknown preset", map[string]any{"preset": "everyone"}, 400, "M_BAD_JSON"},
			{"bad visibility", map[string]any{"visibility": "secret"}, 400, "M_BAD_JSON"},
			{"initial_state content not an object", `{"initial_state": [{"type": "m.room.topic", "content": "x"}]}`, 400, "M_BAD_JSON"},
			{"power override not an object", `{"power_level_content_override": [1]}`, 400, "M_BAD_JSON"},
			{"invalid invitee", map[string]any{"invite": []string{"bob"}}, 400, "M_INVALID_PARAM"},
			{"not JSON", `room please`, 400, "M_NOT_JSON"},
		}
		for _, b := range bad {
			status, body := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, b.body)
			udExpect(t, b.name, status, body, b.status, b.code)
		}
		status, body := s.Do(t, "POST", "/_matrix/client/v3/createRoom", "", map[string]any{})
		udExpect(t, "anonymous", status, body, 401, "M_MISSING_TOKEN")
		if jr, err := alice.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 1 {
			t.Fatalf("refused requests created rooms: %+v %v", jr, err)
		}
		// Room versions 11 and 12 work, and the default is used without one.
		for _, v := range []string{"11", "12", ""} {
			r := rmCreate(t, alice, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(v)})
			rmSend(t, alice, r, "hello in v"+v)
			// Every event, the create event of v12 rooms included, carries the room ID.
			msgs, err := alice.Messages(ctx, r, "", "", mautrix.DirectionForward, nil, 100)
			if err != nil || len(msgs.Chunk) < 5 {
				t.Fatalf("v%s messages: %+v %v", v, msgs, err)
			}
			for _, ev := range msgs.Chunk {
				if ev.RoomID != r {
					t.Fatalf("v%s: %s has room_id %q, want %s", v, ev.Type.Type, ev.RoomID, r)
				}
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestRoomsSendAndState(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})

		// Transaction idempotency: same user+device+txn → same event, also after a restart.
		sendPath := roomPath(roomID, "/send/m.room.message/txn1")
		status, body := s.Do(t, "PUT", sendPath, alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
		udExpect(t, "send", status, body, 200, "")
		first := body["event_id"]
		status, body = s.Do(t, "PUT", sendPath, alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
		if status != 200 || body["event_id"] != first {
			t.Fatalf("replay: %d %v, want %v", status, body, first)
		}
		alice2 := udLogin(t, s, "alice", "second device")
		status, body = s.Do(t, "PUT", sendPath, alice2.AccessToken, map[string]any{"msgtype": "m.text", "body": "other device"})
		if status != 200 || body["event_id"] == first {
			t.Fatalf("another device's txn: %d %v", status, body)
		}
		s.Restart()
		status, body = s.Do(t, "PUT", sendPath, alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
		if status != 200 || body["event_id"] != first {
			t.Fatalf("replay after restart: %d %v, want %v", status, body, first)
		}
		// Concurrent replays of one transaction make one event.
		ids := make(chan string, 8)
		for i := 0; i < 8; i++ {
			go func() {
				resp, err := alice2.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "racing"},
					mautrix.ReqSendEvent{TransactionID: "race"})
				if err != nil {
					ids <- "error: " + err.Error()
					return
				}
				ids <- resp.EventID.String()
			}()
		}
		race := <-ids
		for i := 1; i < 8; i++ {
			if got := <-ids; got != race || race[0] != '$' {
				t.Fatalf("concurrent replays: %s and %s", race, got)
			}
		}
		msgs, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		if got := rmBodies(msgs.Chunk); fmt.Sprint(got) != "[racing other device once]" {
			t.Fatalf("timeline after replays: %v", got)
		}
		// transaction_id is only shown to the sending device.
		ev, err := alice.GetEvent(ctx, roomID, id.EventID(first.(string)))
		if err != nil || ev.Unsigned.TransactionID != "txn1" {
			t.Fatalf("sender's view: %+v %v", ev, err)
		}
		if ev, err := alice2.GetEvent(ctx, roomID, id.EventID(first.(string))); err != nil || ev.Unsigned.TransactionID != "" {
			t.Fatalf("other device sees transaction_id: %+v %v", ev, err)
		}

		// Sends that are refused.
		_, err = bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"body": "not a member"})
		rmWantErr(t, "non-member send", err, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", roomPath("!nope:hs1.test", "/send/m.room.message/t"), alice.AccessToken, map[string]any{"body": "x"})
		udExpect(t, "unknown room", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/t2"), alice.AccessToken, `["x"]`)
		udExpect(t, "array body", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "PUT", roomPath(roomID, "/send/m.room.message/t3"), alice.AccessToken, `{"body":`)
		udExpect(t, "broken JSON", status, body, 400, "M_NOT_JSON")
		status, body = s.Do(t, "PUT", roomPath(roomID, "/send/m.room.create/t4"), alice.AccessToken, map[string]any{})
		udExpect(t, "m.room.create", status, body, 400, "M_BAD_JSON")
		// Also as state: the create event cannot be replaced (MSC4291).
		status, body = s.Do(t, "PUT", roomPath(roomID, "/state/m.room.create/"), alice.AccessToken, map[string]any{"room_version": "11", "x": 1})
		udExpect(t, "m.room.create state", status, body, 400, "M_BAD_JSON")

		// State with an empty state key, by the three paths.
		for i, p := range []string{"/state/org.example.cfg", "/state/org.example.cfg/", "/state/org.example.cfg/"} {
			status, body = s.Do(t, "PUT", roomPath(roomID, p), alice.AccessToken, map[string]any{"v": i})
			udExpect(t, "state put "+p, status, body, 200, "")
		}
		var cfg map[string]any
		if err := alice.StateEvent(ctx, roomID, event.Type{Type: "org.example.cfg", Class: event.StateEventType}, "", &cfg); err != nil || cfg["v"] != 2.0 {
			t.Fatalf("state read: %v %v", cfg, err)
		}
		status, body = s.Do(t, "GET", roomPath(roomID, "/state/org.example.cfg/?format=event"), alice.AccessToken, nil)
		if un, _ := body["unsigned"].(map[string]any); status != 200 || body["state_key"] != "" || body["type"] != "org.example.cfg" ||
			un["replaces_state"] == nil || un["prev_content"].(map[string]any)["v"] != 1.0 {
			t.Fatalf("format=event: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", roomPath(roomID, "/state/org.example.cfg?format=xml"), alice.AccessToken, nil)
		udExpect(t, "bad format", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "GET", roomPath(roomID, "/state/org.example.none/"), alice.AccessToken, nil)
		udExpect(t, "absent state", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "PUT", roomPath(roomID, "/state/org.example.cfg/"), alice.AccessToken, `"x"`)
		udExpect(t, "state content not an object", status, body, 400, "M_BAD_JSON")

		// Power levels and state keys.
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		_, err = bob.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]any{"name": "Bob's room"})
		rmWantErr(t, "insufficient power for state", err, 403, "M_FORBIDDEN")
		_, err = bob.SendStateEvent(ctx, roomID, event.StateMember, alice.UserID.String(), map[string]any{"membership": "join", "displayname": "evil"})
		rmWantErr(t, "another user's member event", err, 403, "M_FORBIDDEN")
		_, err = bob.SendStateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), map[string]any{"membership": "join", "displayname": "Bobby"})
		if err != nil {
			t.Fatalf("own member event: %v", err)
		}
		if _, err := alice.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]any{"topic": "before bob left"}); err != nil {
			t.Fatal(err)
		}

		// Non-members get 403; members who left see the state at their leave.
		err = carol.StateEvent(ctx, roomID, event.StateTopic, "", &cfg)
		rmWantErr(t, "non-member state read", err, 403, "M_FORBIDDEN")
		_, err = carol.State(ctx, roomID)
		rmWantErr(t, "non-member full state", err, 403, "M_FORBIDDEN")
		_, err = carol.State(ctx, "!unknown:hs1.test")
		rmWantErr(t, "unknown room state", err, 403, "M_FORBIDDEN")
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]any{"topic": "after bob left"}); err != nil {
			t.Fatal(err)
		}
		var topic event.TopicEventContent
		if err := bob.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "before bob left" {
			t.Fatalf("left user's topic: %+v %v", topic, err)
		}
		st, err := bob.State(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		if tp := st[event.StateTopic][""]; tp == nil || tp.Content.Raw["topic"] != "before bob left" {
			t.Fatalf("left user's full state: %+v", tp)
		}
		if m := st[event.StateMember][bob.UserID.String()]; m == nil || m.Content.Raw["membership"] != "leave" {
			t.Fatalf("left user's member event: %+v", m)
		}
		if err := alice.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "after bob left" {
			t.Fatalf("member's topic: %+v %v", topic, err)
		}
	})
}

func TestRoomsReport(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		evID := rmSend(t, alice, roomID, "questionable")

		status, body := s.Do(t, "POST", roomPath(roomID, "/report/"+esc(evID.String())), alice.AccessToken, map[string]any{"reason": "spam", "score": -100})
		udExpect(t, "report", status, body, 200, "")
		status, body = s.Do(t, "POST", roomPath(roomID, "/report/"+esc("$unknown")), alice.AccessToken, map[string]any{"reason": "spam"})
		udExpect(t, "unknown event", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "POST", roomPath(roomID, "/report/"+esc(evID.String())), bob.AccessToken, map[string]any{"reason": "spam"})
		udExpect(t, "non-member reporting", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "POST", roomPath(roomID, "/report/"+esc(evID.String())), alice.AccessToken, `{"reason": 5}`)
		udExpect(t, "numeric reason", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", roomPath(roomID, "/report"), bob.AccessToken, map[string]any{"reason": "bad room"})
		udExpect(t, "room report", status, body, 200, "")
		status, body = s.Do(t, "POST", roomPath("!nope:hs1.test", "/report"), bob.AccessToken, map[string]any{"reason": "x"})
		udExpect(t, "unknown room report", status, body, 404, "M_NOT_FOUND")
	})
}

func TestRoomsCreateWithAlias(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "town-square"})
		alias := id.RoomAlias("#town-square:hs1.test")
		var ca event.CanonicalAliasEventContent
		if err := alice.StateEvent(ctx, roomID, event.StateCanonicalAlias, "", &ca); err != nil || ca.Alias != alias {
			t.Fatalf("canonical alias: %+v %v", ca, err)
		}
		if res, err := bob.ResolveAlias(ctx, alias); err != nil || res.RoomID != roomID {
			t.Fatalf("resolve: %+v %v", res, err)
		}
		// Joining by alias.
		if resp, err := bob.JoinRoom(ctx, alias.String(), nil); err != nil || resp.RoomID != roomID {
			t.Fatalf("join by alias: %+v %v", resp, err)
		}
		// The room is in the public directory.
		pub, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil || len(pub.Chunk) != 1 || pub.Chunk[0].RoomID != roomID {
			t.Fatalf("public rooms: %+v %v", pub, err)
		}
		// A taken alias fails and creates nothing.
		status, body := s.Do(t, "POST", "/_matrix/client/v3/createRoom", bob.AccessToken, map[string]any{"room_alias_name": "town-square"})
		udExpect(t, "taken alias", status, body, 400, "M_ROOM_IN_USE")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/createRoom", bob.AccessToken, map[string]any{"room_alias_name": "bad:alias"})
		udExpect(t, "invalid alias", status, body, 400, "M_INVALID_PARAM")
		if jr, err := bob.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 1 {
			t.Fatalf("refused createRoom made a room: %+v %v", jr, err)
		}
		// Canonical alias events must name aliases of this room.
		other := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		_, err = bob.SendStateEvent(ctx, other, event.StateCanonicalAlias, "", map[string]any{"alias": alias.String()})
		rmWantErr(t, "alias of another room", err, 400, "M_BAD_ALIAS")
		_, err = bob.SendStateEvent(ctx, other, event.StateCanonicalAlias, "", map[string]any{"alias": "nocolon"})
		rmWantErr(t, "malformed alias", err, 400, "M_INVALID_PARAM")
	})
}
