package test

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

func roomFilter(room map[string]any) string { return inlineFilter(map[string]any{"room": room}) }

// TestSyncFilterRooms: room.rooms and room.not_rooms select rooms; a stored filter
// (by ID) works like the same inline one.
func TestSyncFilterRooms(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		r1 := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		r2 := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		got := doSync(t, alice, mautrix.ReqSync{FilterID: roomFilter(map[string]any{"rooms": []string{r1}})})
		if len(got.Rooms.Join) != 1 || got.Rooms.Join[id.RoomID(r1)] == nil {
			t.Errorf("rooms filter: %d rooms", len(got.Rooms.Join))
		}
		got = doSync(t, alice, mautrix.ReqSync{FilterID: roomFilter(map[string]any{"not_rooms": []string{r1}})})
		if len(got.Rooms.Join) != 1 || got.Rooms.Join[id.RoomID(r2)] == nil {
			t.Errorf("not_rooms filter: %d rooms", len(got.Rooms.Join))
		}
		fr, err := alice.CreateFilter(e.ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{NotRooms: []id.RoomID{id.RoomID(r2)}}})
		if err != nil {
			t.Fatal(err)
		}
		got = doSync(t, alice, mautrix.ReqSync{FilterID: fr.FilterID})
		if len(got.Rooms.Join) != 1 || got.Rooms.Join[id.RoomID(r1)] == nil {
			t.Errorf("stored filter: %d rooms", len(got.Rooms.Join))
		}
		// Bad filters are refused.
		if _, err := alice.FullSyncRequest(e.ctx, mautrix.ReqSync{FilterID: "12345"}); err == nil {
			t.Error("unknown filter ID accepted")
		}
		if _, err := alice.FullSyncRequest(e.ctx, mautrix.ReqSync{FilterID: `{"room":{"timeline":{"limit":"x"}}}`}); err == nil {
			t.Error("invalid inline filter accepted")
		}
		if _, err := alice.FullSyncRequest(e.ctx, mautrix.ReqSync{Since: "garbage"}); err == nil {
			t.Error("invalid since token accepted")
		}
	})
}

// TestSyncFilterTimeline: limit, types, not_types (with '*'), senders, not_senders.
func TestSyncFilterTimeline(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		r0 := doSync(t, bob, mautrix.ReqSync{})
		e.send(alice, roomID, "a1")
		e.send(bob, roomID, "b1")
		e.sendState(alice, roomID, "m.room.topic", "", map[string]any{"topic": "x"})
		e.send(alice, roomID, "a2")
		e.send(bob, roomID, "b2")
		cases := []struct {
			name    string
			tl      map[string]any
			want    string // bodies, or types for state-only checks
			limited bool
		}{
			{"limit", map[string]any{"limit": 2}, "a2,b2", true},
			{"senders", map[string]any{"senders": []string{alice.UserID.String()}}, "a1,a2", false},
			{"not_senders", map[string]any{"not_senders": []string{alice.UserID.String()}}, "b1,b2", false},
			{"types", map[string]any{"types": []string{"m.room.message"}}, "a1,b1,a2,b2", false},
			{"not_types glob", map[string]any{"not_types": []string{"m.room.mess*"}}, "", false},
			{"types and limit", map[string]any{"types": []string{"m.room.message"}, "senders": []string{bob.UserID.String()}, "limit": 1}, "b2", true},
		}
		for _, c := range cases {
			r := doSync(t, bob, mautrix.ReqSync{Since: r0.NextBatch, FilterID: roomFilter(map[string]any{"timeline": c.tl})})
			jr := r.Rooms.Join[id.RoomID(roomID)]
			if jr == nil {
				t.Fatalf("%s: room missing", c.name)
			}
			if got := strings.Join(timelineBodies(jr.Timeline.Events), ","); got != c.want || jr.Timeline.Limited != c.limited {
				t.Errorf("%s: timeline %q limited=%v, want %q limited=%v", c.name, got, jr.Timeline.Limited, c.want, c.limited)
			}
			if c.name == "not_types glob" {
				if !hasState(jr.Timeline.Events, "m.room.topic", "") && !hasState(jr.State.Events, "m.room.topic", "") {
					t.Errorf("%s: topic change lost", c.name)
				}
			}
			if c.name == "types" && !hasState(jr.State.Events, "m.room.topic", "") {
				// The topic change filtered out of the timeline still reaches the client as state.
				t.Errorf("%s: filtered-out state change not in state: %v", c.name, eventIDs(jr.State.Events))
			}
		}
	})
}

// TestSyncFilterStateEphemeralAccountData: state.types/not_types, ephemeral not_types,
// account_data types.
func TestSyncFilterStateEphemeralAccountData(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "n", Topic: "t"})
		for i := range 3 {
			e.send(alice, roomID, fmt.Sprintf("m%d", i))
		}
		r := doSync(t, alice, mautrix.ReqSync{FilterID: roomFilter(map[string]any{
			"timeline": map[string]any{"limit": 1},
			"state":    map[string]any{"types": []string{"m.room.name", "m.room.create"}},
		})})
		jr := r.Rooms.Join[id.RoomID(roomID)]
		for _, ev := range jr.State.Events {
			if ev.Type.Type != "m.room.name" && ev.Type.Type != "m.room.create" {
				t.Errorf("state filter let %s through", ev.Type.Type)
			}
		}
		if !hasState(jr.State.Events, "m.room.name", "") {
			t.Error("state filter dropped m.room.name")
		}
		r = doSync(t, alice, mautrix.ReqSync{FilterID: roomFilter(map[string]any{
			"timeline": map[string]any{"limit": 1},
			"state":    map[string]any{"not_types": []string{"m.room.member"}},
		})})
		if hasState(r.Rooms.Join[id.RoomID(roomID)].State.Events, "m.room.member", alice.UserID.String()) {
			t.Error("state not_types let a member event through")
		}

		// Ephemeral: typing filtered out by not_types.
		if _, err := alice.UserTyping(e.ctx, id.RoomID(roomID), true, 10000); err != nil {
			t.Fatal(err)
		}
		r = doSync(t, alice, mautrix.ReqSync{})
		if !hasEphemeral(r.Rooms.Join[id.RoomID(roomID)], "m.typing") {
			t.Error("typing missing without filter")
		}
		r = doSync(t, alice, mautrix.ReqSync{FilterID: roomFilter(map[string]any{"ephemeral": map[string]any{"not_types": []string{"m.typing"}}})})
		if hasEphemeral(r.Rooms.Join[id.RoomID(roomID)], "m.typing") {
			t.Error("ephemeral filter let typing through")
		}

		// Account data types.
		_ = alice.SetAccountData(e.ctx, "org.example.keep", map[string]any{"k": 1})
		_ = alice.SetAccountData(e.ctx, "org.example.drop", map[string]any{"d": 1})
		r = doSync(t, alice, mautrix.ReqSync{FilterID: inlineFilter(map[string]any{"account_data": map[string]any{"types": []string{"org.example.keep"}}})})
		if len(r.AccountData.Events) != 1 || r.AccountData.Events[0].Type.Type != "org.example.keep" {
			t.Errorf("account_data filter: %d events", len(r.AccountData.Events))
		}
		r = doSync(t, alice, mautrix.ReqSync{FilterID: inlineFilter(map[string]any{"account_data": map[string]any{"limit": 0, "not_types": []string{"*"}}})})
		if len(r.AccountData.Events) != 0 {
			t.Errorf("account_data not_types *: %d events", len(r.AccountData.Events))
		}
	})
}

func hasEphemeral(jr *mautrix.SyncJoinedRoom, typ string) bool {
	if jr == nil {
		return false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type.Type == typ {
			return true
		}
	}
	return false
}

// TestSyncLazyLoadMembers: with lazy_load_members only the members of timeline senders
// (and the syncing user) come in state; they are not resent in later syncs unless
// include_redundant_members.
func TestSyncLazyLoadMembers(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol, dave := e.register("alice"), e.register("bob"), e.register("carol"), e.register("dave")
		roomID := e.sharedRoom(alice, bob, carol, dave)
		for i := range 3 {
			e.send(alice, roomID, fmt.Sprintf("a%d", i))
		}
		e.send(carol, roomID, "c0")
		lazy := roomFilter(map[string]any{"timeline": map[string]any{"limit": 4}, "state": map[string]any{"lazy_load_members": true}})
		r := doSync(t, dave, mautrix.ReqSync{FilterID: lazy})
		jr := r.Rooms.Join[id.RoomID(roomID)]
		got := strings.Join(stateKeys(jr.State.Events, "m.room.member"), ",")
		want := strings.Join(sortedStrings(alice.UserID.String(), carol.UserID.String(), dave.UserID.String()), ",")
		if got != want {
			t.Fatalf("lazy members = %s, want %s", got, want)
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 4 || len(jr.Summary.Heroes) == 0 {
			t.Errorf("summary = %+v", jr.Summary)
		}
		// Without lazy loading every member is there.
		full := doSync(t, dave, mautrix.ReqSync{FilterID: roomFilter(map[string]any{"timeline": map[string]any{"limit": 4}})})
		if n := len(stateKeys(full.Rooms.Join[id.RoomID(roomID)].State.Events, "m.room.member")); n != 4 {
			t.Errorf("non-lazy members = %d, want 4", n)
		}
		// Incremental: bob speaks for the first time (his member comes), carol again (not resent).
		r = doSync(t, dave, mautrix.ReqSync{FilterID: lazy})
		e.send(bob, roomID, "b0")
		e.send(carol, roomID, "c1")
		r2 := doSync(t, dave, mautrix.ReqSync{Since: r.NextBatch, FilterID: lazy})
		got = strings.Join(stateKeys(r2.Rooms.Join[id.RoomID(roomID)].State.Events, "m.room.member"), ",")
		if got != bob.UserID.String() {
			t.Errorf("incremental lazy members = %q, want only bob", got)
		}
		redundant := roomFilter(map[string]any{"timeline": map[string]any{"limit": 4}, "state": map[string]any{"lazy_load_members": true, "include_redundant_members": true}})
		e.send(carol, roomID, "c2")
		r3 := doSync(t, dave, mautrix.ReqSync{Since: r2.NextBatch, FilterID: redundant})
		got = strings.Join(stateKeys(r3.Rooms.Join[id.RoomID(roomID)].State.Events, "m.room.member"), ",")
		if got != carol.UserID.String() {
			t.Errorf("include_redundant_members: members = %q, want carol", got)
		}
	})
}

func sortedStrings(s ...string) []string {
	out := append([]string{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestSyncFilterEventFields: event_fields keeps only the listed fields of room events.
func TestSyncFilterEventFields(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		e.send(alice, roomID, "fields")
		var out map[string]any
		u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{
			"filter": inlineFilter(map[string]any{"event_fields": []string{"type", "content.body"}, "room": map[string]any{"timeline": map[string]any{"limit": 1}}})})
		if _, err := alice.MakeRequest(e.ctx, "GET", u, nil, &out); err != nil {
			t.Fatal(err)
		}
		evs := out["rooms"].(map[string]any)["join"].(map[string]any)[roomID].(map[string]any)["timeline"].(map[string]any)["events"].([]any)
		got := toJSON(evs[0])
		if got != `{"content":{"body":"fields"},"type":"m.room.message"}` {
			t.Fatalf("event with event_fields = %s", got)
		}
	})
}

// TestSyncFilterPresence: the presence filter selects presence events.
func TestSyncFilterPresence(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		e.sharedRoom(alice, bob)
		if err := alice.SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here"}); err != nil {
			t.Fatal(err)
		}
		r := doSync(t, bob, mautrix.ReqSync{SetPresence: event.PresenceOffline})
		if presenceOf(r, alice.UserID) == nil {
			t.Fatal("no presence without a filter")
		}
		r = doSync(t, bob, mautrix.ReqSync{SetPresence: event.PresenceOffline, FilterID: inlineFilter(map[string]any{"presence": map[string]any{"not_types": []string{"*"}}})})
		if len(r.Presence.Events) != 0 {
			t.Errorf("presence not_types *: %d events", len(r.Presence.Events))
		}
		r = doSync(t, bob, mautrix.ReqSync{SetPresence: event.PresenceOffline, FilterID: inlineFilter(map[string]any{"presence": map[string]any{"senders": []string{bob.UserID.String()}}})})
		if presenceOf(r, alice.UserID) != nil {
			t.Error("presence senders filter let alice through")
		}
	})
}
