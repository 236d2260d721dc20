package test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// fmJoined returns the sorted joined members of a room as cli sees them.
func fmJoined(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	resp, err := cli.JoinedMembers(context.Background(), roomID)
	if err != nil {
		t.Fatalf("joined members of %s for %s: %v", roomID, cli.UserID, err)
	}
	var out []string
	for u := range resp.Joined {
		out = append(out, u.String())
	}
	sort.Strings(out)
	return out
}

// fmSync runs an initial /sync for cli and returns its rooms section.
func fmSync(t *testing.T, s *harness.Server, cli *mautrix.Client) map[string]map[string]json.RawMessage {
	t.Helper()
	code, body := s.Do(t, "GET", "/_matrix/client/v3/sync", cli.AccessToken, nil)
	if code != 200 {
		t.Fatalf("sync: %d %v", code, body)
	}
	raw, _ := json.Marshal(body["rooms"])
	var rooms map[string]map[string]json.RawMessage
	_ = json.Unmarshal(raw, &rooms)
	return rooms
}

// fmEventTypes lists the types of the events in a JSON list of events.
func fmEventTypes(raw json.RawMessage) []string {
	var evs []struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &evs)
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func fmWaitMembership(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := rmMembership(t, cli, roomID, user)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("membership of %s in %s as %s sees it: %q, want %q", user, roomID, cli.UserID, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFederationMembership: users of server B join a public room of server A (by room
// ID and by alias), leave it, are invited by A's user (the invite shows in B's /sync
// with the room's stripped state) and join or reject, and knock; both servers agree on
// the members after each step. Failures: unknown room, unsupported room version, a
// banned user.
func TestFederationMembership(t *testing.T) {
	harness.ForEachEngine(t, testFederationMembership)
}

func testFederationMembership(t *testing.T, engine string) {
	ctx := context.Background()
	a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	b := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	alice := udRegister(t, a, "alice")
	bob := udRegister(t, b, "bob")
	carol := udRegister(t, b, "carol")
	dave := udRegister(t, b, "dave")

	public := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Town square", RoomVersion: "11"})
	rmSend(t, alice, public, "before bob")

	// Join by room ID through A.
	resp, err := bob.JoinRoom(ctx, public.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
	if err != nil || resp.RoomID != public {
		t.Fatalf("bob joins A's room: %+v %v", resp, err)
	}
	want := []string{alice.UserID.String(), bob.UserID.String()}
	if got := fmJoined(t, bob, public); !slices.Equal(got, want) {
		t.Fatalf("members on B: %v, want %v", got, want)
	}
	if got := fmJoined(t, alice, public); !slices.Equal(got, want) {
		t.Fatalf("members on A: %v, want %v", got, want)
	}
	// B's /sync shows the room joined, with its state.
	rooms := fmSync(t, b, bob)
	var jr struct {
		State    struct{ Events json.RawMessage } `json:"state"`
		Timeline struct{ Events json.RawMessage } `json:"timeline"`
	}
	_ = json.Unmarshal(mustJSON(t, rooms["join"][public.String()]), &jr)
	stateTypes := fmEventTypes(jr.State.Events)
	for _, typ := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} {
		if !slices.Contains(stateTypes, typ) {
			t.Fatalf("B's sync of the joined room lacks %s in state: %v", typ, stateTypes)
		}
	}
	if !slices.Contains(fmEventTypes(jr.Timeline.Events), "m.room.member") {
		t.Fatalf("B's sync timeline lacks bob's join: %s", jr.Timeline.Events)
	}
	// The room works on B: bob can send to it and read its name.
	rmSend(t, bob, public, "hello from B")
	var name struct {
		Name string `json:"name"`
	}
	if err := bob.StateEvent(ctx, public, event.StateRoomName, "", &name); err != nil || name.Name != "Town square" {
		t.Fatalf("room name on B: %+v %v", name, err)
	}
	// A second join is a no-op done locally.
	if _, err := bob.JoinRoomByID(ctx, public); err != nil {
		t.Fatalf("join again: %v", err)
	}

	// Bob (B's only member) leaves: A hears of it.
	if _, err := bob.LeaveRoom(ctx, public); err != nil {
		t.Fatalf("bob leaves: %v", err)
	}
	fmWaitMembership(t, alice, public, bob.UserID, "leave")
	if got := fmJoined(t, alice, public); !slices.Equal(got, []string{alice.UserID.String()}) {
		t.Fatalf("members on A after bob left: %v", got)
	}

	// Alice invites carol (on B): carol sees the invite with the room's stripped state.
	private := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Back office", RoomVersion: "11"})
	if _, err := alice.InviteUser(ctx, private, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("invite carol: %v", err)
	}
	if m := rmMembership(t, alice, private, carol.UserID); m != "invite" {
		t.Fatalf("carol's membership on A: %q", m)
	}
	rooms = fmSync(t, b, carol)
	var ir struct {
		InviteState struct {
			Events []struct {
				Type    string         `json:"type"`
				Sender  string         `json:"sender"`
				Content map[string]any `json:"content"`
			} `json:"events"`
		} `json:"invite_state"`
	}
	_ = json.Unmarshal(mustJSON(t, rooms["invite"][private.String()]), &ir)
	var invTypes []string
	for _, e := range ir.InviteState.Events {
		invTypes = append(invTypes, e.Type)
	}
	evs := ir.InviteState.Events
	if !slices.Contains(invTypes, "m.room.create") || !slices.Contains(invTypes, "m.room.name") || len(evs) == 0 ||
		evs[len(evs)-1].Type != "m.room.member" || evs[len(evs)-1].Sender != alice.UserID.String() {
		t.Fatalf("carol's invite_state: %+v", ir.InviteState.Events)
	}
	// Carol accepts: she joins through the inviting server.
	if _, err := carol.JoinRoomByID(ctx, private); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	want = []string{alice.UserID.String(), carol.UserID.String()}
	if got := fmJoined(t, alice, private); !slices.Equal(got, want) {
		t.Fatalf("members on A after carol joined: %v", got)
	}
	if got := fmJoined(t, carol, private); !slices.Equal(got, want) {
		t.Fatalf("members on B after carol joined: %v", got)
	}
	rooms = fmSync(t, b, carol)
	if _, ok := rooms["join"][private.String()]; !ok {
		t.Fatalf("carol's sync does not show the room joined: %v", rooms)
	}
	if _, ok := rooms["invite"][private.String()]; ok {
		t.Fatalf("carol's sync still shows the invite")
	}

	// Dave rejects an invite: A sees him leave.
	other := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11"})
	if _, err := alice.InviteUser(ctx, other, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
		t.Fatalf("invite dave: %v", err)
	}
	if _, ok := fmSync(t, b, dave)["invite"][other.String()]; !ok {
		t.Fatal("dave does not see his invite")
	}
	if _, err := dave.LeaveRoom(ctx, other); err != nil {
		t.Fatalf("dave rejects: %v", err)
	}
	if m := rmMembership(t, alice, other, dave.UserID); m != "leave" {
		t.Fatalf("dave's membership on A after rejecting: %q", m)
	}
	if _, ok := fmSync(t, b, dave)["invite"][other.String()]; ok {
		t.Fatal("dave still sees the rejected invite")
	}

	// Knocking: erin (B) knocks on a knock room of A; alice sees the knock and lets her in.
	erin := udRegister(t, b, "erin")
	knockRoom := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11", Name: "Knock here",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	code, body := b.Do(t, "POST", "/_matrix/client/v3/knock/"+esc(knockRoom.String())+"?via="+url.QueryEscape(a.ServerName), erin.AccessToken, map[string]any{"reason": "let me in"})
	if code != 200 {
		t.Fatalf("erin knocks: %d %v", code, body)
	}
	if m := rmMembership(t, alice, knockRoom, erin.UserID); m != "knock" {
		t.Fatalf("erin's membership on A: %q", m)
	}
	var kr struct {
		KnockState struct {
			Events []struct {
				Type string `json:"type"`
			} `json:"events"`
		} `json:"knock_state"`
	}
	_ = json.Unmarshal(mustJSON(t, fmSync(t, b, erin)["knock"][knockRoom.String()]), &kr)
	var knockTypes []string
	for _, e := range kr.KnockState.Events {
		knockTypes = append(knockTypes, e.Type)
	}
	if !slices.Contains(knockTypes, "m.room.name") || !slices.Contains(knockTypes, "m.room.member") {
		t.Fatalf("erin's knock_state: %v", knockTypes)
	}
	if _, err := alice.InviteUser(ctx, knockRoom, &mautrix.ReqInviteUser{UserID: erin.UserID}); err != nil {
		t.Fatalf("alice accepts the knock: %v", err)
	}
	if _, err := erin.JoinRoomByID(ctx, knockRoom); err != nil {
		t.Fatalf("erin joins after her knock: %v", err)
	}
	if got := fmJoined(t, alice, knockRoom); !slices.Contains(got, erin.UserID.String()) {
		t.Fatalf("members on A after erin joined: %v", got)
	}

	// Failures.
	frank := udRegister(t, b, "frank")
	if _, err := alice.BanUser(ctx, public, &mautrix.ReqBanUser{UserID: frank.UserID, Reason: "spam"}); err != nil {
		t.Fatalf("ban frank: %v", err)
	}
	_, err = frank.JoinRoom(ctx, public.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
	rmWantErr(t, "banned user joins", err, 403, "M_FORBIDDEN")
	_, err = frank.JoinRoom(ctx, "!nowhere:"+a.ServerName, nil)
	rmWantErr(t, "join of a room A does not know", err, 404, "M_NOT_FOUND")
	_, err = frank.JoinRoom(ctx, private.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
	rmWantErr(t, "join of an invite-only room", err, 403, "M_FORBIDDEN")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
