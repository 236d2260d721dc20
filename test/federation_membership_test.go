package test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
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

// fmWaitBody waits until a message with body is in the room's latest messages for cli.
func fmWaitBody(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		msgs, err := cli.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 20)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(rmBodies(msgs.Chunk), body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %q in %s: %v", cli.UserID, body, roomID, rmBodies(msgs.Chunk))
		}
		time.Sleep(100 * time.Millisecond)
	}
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

	public := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Town square", RoomVersion: "11", RoomAliasName: "square"})
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
	// Messages travel both ways (the federation sender delivers them).
	fmWaitBody(t, alice, public, "hello from B")
	rmSend(t, alice, public, "welcome bob")
	fmWaitBody(t, bob, public, "welcome bob")
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

	// Alice invites carol (on B): carol's waiting /sync wakes up with the invite, which
	// carries the room's stripped state.
	private := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Back office", RoomVersion: "11"})
	code, first := b.Do(t, "GET", "/_matrix/client/v3/sync", carol.AccessToken, nil)
	if code != 200 {
		t.Fatalf("carol's first sync: %d %v", code, first)
	}
	polled := make(chan map[string]any, 1)
	go func() {
		_, body := b.Do(t, "GET", "/_matrix/client/v3/sync?timeout=30000&since="+url.QueryEscape(first["next_batch"].(string)), carol.AccessToken, nil)
		polled <- body
	}()
	time.Sleep(200 * time.Millisecond) // let the long-poll start waiting
	if _, err := alice.InviteUser(ctx, private, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("invite carol: %v", err)
	}
	if body := <-polled; !strings.Contains(string(mustJSON(t, body["rooms"])), `"invite":{"`+private.String()) {
		t.Fatalf("carol's long-poll did not return the invite: %v", body["rooms"])
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
				TS      int64          `json:"origin_server_ts"`
				Hashes  any            `json:"hashes"`
			} `json:"events"`
		} `json:"invite_state"`
	}
	_ = json.Unmarshal(mustJSON(t, rooms["invite"][private.String()]), &ir)
	// The inviting server sent the create event in full (MSC4311); clients get its
	// timestamp but no server-only fields.
	for _, e := range ir.InviteState.Events {
		if e.Type == "m.room.create" && e.TS == 0 || e.Hashes != nil {
			t.Fatalf("carol's invite_state event %+v", e)
		}
	}
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
	// Hank knocks on another room (B has no member there), then withdraws his knock:
	// A sees him leave.
	hank := udRegister(t, b, "hank")
	knockRoom = rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	if code, body := b.Do(t, "POST", "/_matrix/client/v3/knock/"+esc(knockRoom.String())+"?via="+url.QueryEscape(a.ServerName), hank.AccessToken, map[string]any{}); code != 200 {
		t.Fatalf("hank knocks: %d %v", code, body)
	}
	if m := rmMembership(t, alice, knockRoom, hank.UserID); m != "knock" {
		t.Fatalf("hank's membership on A: %q", m)
	}
	if _, err := hank.LeaveRoom(ctx, knockRoom); err != nil {
		t.Fatalf("hank withdraws his knock: %v", err)
	}
	if m := rmMembership(t, alice, knockRoom, hank.UserID); m != "leave" {
		t.Fatalf("hank's membership on A after withdrawing: %q", m)
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

	// Join by alias: B asks A's directory, then joins through the servers it names.
	gina := udRegister(t, b, "gina")
	alias := "#square:" + a.ServerName
	if resp, err := gina.JoinRoom(ctx, alias, nil); err != nil || resp.RoomID != public {
		t.Fatalf("gina joins by alias: %+v %v", resp, err)
	}
	if got := fmJoined(t, alice, public); !slices.Contains(got, gina.UserID.String()) {
		t.Fatalf("members on A after gina joined by alias: %v", got)
	}
	_, err = gina.JoinRoom(ctx, "#nothing:"+a.ServerName, nil)
	rmWantErr(t, "join of an unknown remote alias", err, 404, "M_NOT_FOUND")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// fmMakeJoin asks a for a join template of localpart (on o) and builds the signed
// join from it; it fails the test unless make_join succeeds.
func (o *fakeOrigin) fmMakeJoin(t *testing.T, a *harness.Server, roomID id.RoomID, localpart string) (gomatrixserverlib.PDU, map[string]any) {
	t.Helper()
	user := "@" + localpart + ":" + o.name
	code, ecode, raw := o.send(t, a, o.name, a.ServerName, o.key, "GET",
		"/_matrix/federation/v1/make_join/"+url.PathEscape(roomID.String())+"/"+url.PathEscape(user)+"?ver=10&ver=11&ver=12", nil, nil)
	if code != 200 {
		t.Fatalf("make_join for %s: %d %s %s", user, code, ecode, raw)
	}
	var resp struct {
		Event       gomatrixserverlib.ProtoEvent  `json:"event"`
		RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || (resp.RoomVersion != "11" && resp.RoomVersion != "12") {
		t.Fatalf("make_join answer: %s (%v)", raw, err)
	}
	var content map[string]any
	_ = json.Unmarshal(resp.Event.Content, &content)
	ev, err := gomatrixserverlib.MustGetRoomVersion(resp.RoomVersion).NewEventBuilderFromProtoEvent(&resp.Event).
		Build(time.Now(), spec.ServerName(o.name), o.key.ID, o.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev, content
}

// fmSendJoin sends a join with send_join v2 (with the given path event ID) and returns
// the status, errcode and answer.
func (o *fakeOrigin) fmSendJoin(t *testing.T, a *harness.Server, roomID id.RoomID, eventID string, body json.RawMessage) (int, string, map[string]json.RawMessage) {
	t.Helper()
	code, ecode, raw := o.send(t, a, o.name, a.ServerName, o.key, "PUT",
		"/_matrix/federation/v2/send_join/"+url.PathEscape(roomID.String())+"/"+url.PathEscape(eventID), body, nil)
	var out map[string]json.RawMessage
	_ = json.Unmarshal(raw, &out)
	return code, ecode, out
}

// withSignatures returns an event's JSON with its signatures replaced.
func withSignatures(t *testing.T, ev gomatrixserverlib.PDU, sigs any) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	if sigs == nil {
		delete(m, "signatures")
	} else {
		m["signatures"] = sigs
	}
	return mustJSON(t, m)
}

// TestFederationMembershipChecks: the incoming make_join/send_join/invite endpoints
// refuse what the spec says they must (unknown room, unsupported version, a user of
// another server, forged or unsigned events, banned users, unknown invitees) and
// answer a good join with the room's state and auth chain; restricted joins are
// authorised (and countersigned) by a local member; an invite from another server
// reaches the local user's /sync with the stripped state it carried.
func TestFederationMembershipChecks(t *testing.T) {
	harness.ForEachEngine(t, testFederationMembershipChecks)
}

func testFederationMembershipChecks(t *testing.T, engine string) {
	ctx := context.Background()
	o := startFakeOrigin(t)
	a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	alice := udRegister(t, a, "alice")
	room := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
	get := func(uri string) (int, string, []byte) {
		t.Helper()
		return o.send(t, a, o.name, a.ServerName, o.key, "GET", uri, nil, nil)
	}
	makeJoin := func(roomID, user, query string) string {
		return "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(user) + query
	}
	zed := "@zed:" + o.name

	if code, ecode, raw := get(makeJoin("!nowhere:"+a.ServerName, zed, "?ver=11")); code != 404 || ecode != "M_NOT_FOUND" {
		t.Fatalf("make_join of an unknown room: %d %s %s", code, ecode, raw)
	}
	code, ecode, raw := get(makeJoin(room.String(), zed, "?ver=1&ver=2"))
	if code != 400 || ecode != "M_INCOMPATIBLE_ROOM_VERSION" || !strings.Contains(string(raw), `"room_version":"11"`) {
		t.Fatalf("make_join without the room's version: %d %s %s", code, ecode, raw)
	}
	if code, ecode, raw := get(makeJoin(room.String(), "@zed:elsewhere.test", "?ver=11")); code != 403 || ecode != "M_FORBIDDEN" {
		t.Fatalf("make_join for a user of another server: %d %s %s", code, ecode, raw)
	}

	join, _ := o.fmMakeJoin(t, a, room, "zed")
	// Forged: another key's signature in the origin's name; unsigned: no signatures.
	otherKey, _ := config.GenerateSigningKey()
	forgedSigs := map[string]any{o.name: map[string]string{string(o.key.ID): base64.RawStdEncoding.EncodeToString(ed25519.Sign(otherKey.Private, []byte("x")))}}
	for name, body := range map[string]json.RawMessage{
		"forged signature": withSignatures(t, join, forgedSigs),
		"no signatures":    withSignatures(t, join, nil),
	} {
		if code, ecode, _ := o.fmSendJoin(t, a, room, join.EventID(), body); code != 403 || ecode != "M_FORBIDDEN" {
			t.Fatalf("send_join with %s: %d %s", name, code, ecode)
		}
	}
	if code, _, _ := o.fmSendJoin(t, a, room, "$other", join.JSON()); code != 400 {
		t.Fatalf("send_join under another event ID: %d", code)
	}
	// A join, leave or knock by zed about doris (state_key not the sender) is malformed: 400.
	doris := "@doris:" + o.name
	for _, m := range []string{"join", "leave", "knock"} {
		ev := o.event(t, room.String(), "zed", "m.room.member", &doris, map[string]string{"membership": m},
			join.PrevEventIDs(), join.AuthEventIDs(), join.Depth())
		ver := "v2"
		if m == "knock" {
			ver = "v1"
		}
		path := "/_matrix/federation/" + ver + "/send_" + m + "/" + url.PathEscape(room.String()) + "/" + url.PathEscape(ev.EventID())
		if code, ecode, raw := o.send(t, a, o.name, a.ServerName, o.key, "PUT", path, json.RawMessage(ev.JSON()), nil); code != 400 || ecode != "M_BAD_JSON" {
			t.Fatalf("send_%s with a mismatched state_key: %d %s %s", m, code, ecode, raw)
		}
	}
	if m := rmMembership(t, alice, room, id.UserID(zed)); m != "" {
		t.Fatalf("a refused join changed zed's membership: %q", m)
	}
	code, ecode, out := o.fmSendJoin(t, a, room, join.EventID(), join.JSON())
	if code != 200 {
		t.Fatalf("send_join: %d %s %v", code, ecode, out)
	}
	var state, chain []struct {
		Type     string  `json:"type"`
		StateKey *string `json:"state_key"`
	}
	_ = json.Unmarshal(out["state"], &state)
	_ = json.Unmarshal(out["auth_chain"], &chain)
	var stateTypes []string
	for _, e := range state {
		stateTypes = append(stateTypes, e.Type)
	}
	if !slices.Contains(stateTypes, "m.room.create") || !slices.Contains(stateTypes, "m.room.member") || len(chain) == 0 ||
		string(out["members_omitted"]) != "false" || !strings.Contains(string(out["servers_in_room"]), a.ServerName) {
		t.Fatalf("send_join answer: state %v, %d auth events, %s", stateTypes, len(chain), out["servers_in_room"])
	}
	if m := rmMembership(t, alice, room, id.UserID(zed)); m != "join" {
		t.Fatalf("zed's membership after send_join: %q", m)
	}
	// v1 answers [200, body]; a repeated join is accepted.
	code, _, raw = o.send(t, a, o.name, a.ServerName, o.key, "PUT",
		"/_matrix/federation/v1/send_join/"+url.PathEscape(room.String())+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()), nil)
	if code != 200 || !strings.HasPrefix(string(raw), "[200,") {
		t.Fatalf("send_join v1: %d %s", code, raw)
	}

	// A banned user is refused at make_join.
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: id.UserID("@yan:" + o.name)}); err != nil {
		t.Fatal(err)
	}
	if code, ecode, _ := get(makeJoin(room.String(), "@yan:"+o.name, "?ver=11")); code != 403 || ecode != "M_FORBIDDEN" {
		t.Fatalf("make_join of a banned user: %d %s", code, ecode)
	}

	// Restricted room: joining needs membership of the space; a local member authorises.
	space := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
	restricted := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.String()}}}}}}})
	if code, ecode, _ := get(makeJoin(restricted.String(), "@wes:"+o.name, "?ver=11")); code != 403 || ecode != "M_FORBIDDEN" {
		t.Fatalf("make_join of a restricted room without the space: %d %s", code, ecode)
	}
	spaceJoin, _ := o.fmMakeJoin(t, a, space, "wes")
	if code, ecode, _ := o.fmSendJoin(t, a, space, spaceJoin.EventID(), spaceJoin.JSON()); code != 200 {
		t.Fatalf("join the space: %d %s", code, ecode)
	}
	rJoin, content := o.fmMakeJoin(t, a, restricted, "wes")
	if content["join_authorised_via_users_server"] != alice.UserID.String() {
		t.Fatalf("restricted join template: %v", content)
	}
	code, ecode, out = o.fmSendJoin(t, a, restricted, rJoin.EventID(), rJoin.JSON())
	if code != 200 || !strings.Contains(string(out["event"]), `"`+a.ServerName+`"`) {
		t.Fatalf("restricted send_join: %d %s, event %s", code, ecode, out["event"])
	}
	aKeys := serverKeys(t, a)
	mustBeSignedBy(t, redactedForSigning(t, out["event"]), a.ServerName, aKeys)

	// An invite from o for alice: countersigned, and shown in her /sync with its state.
	inviteFor := func(target string) gomatrixserverlib.PDU {
		return o.event(t, "!faraway:"+o.name, "olga", "m.room.member", &target, map[string]any{"membership": "invite"},
			[]string{"$prev"}, []string{"$create", "$pl", "$olga"}, 5)
	}
	inv := inviteFor(alice.UserID.String())
	invPath := "/_matrix/federation/v2/invite/" + url.PathEscape("!faraway:"+o.name) + "/" + url.PathEscape(inv.EventID())
	inviteBody := func(ev gomatrixserverlib.PDU) map[string]any {
		return map[string]any{"room_version": "11", "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{
			map[string]any{"type": "m.room.name", "state_key": "", "sender": "@olga:" + o.name, "content": map[string]any{"name": "Far away"}},
			map[string]any{"type": "m.room.create", "state_key": "", "sender": "@olga:" + o.name, "content": map[string]any{"room_version": "11"}},
		}}
	}
	code, ecode, raw = o.send(t, a, o.name, a.ServerName, o.key, "PUT", invPath, inviteBody(inv), nil)
	if code != 200 || !strings.Contains(string(raw), `"`+a.ServerName+`"`) {
		t.Fatalf("invite: %d %s %s", code, ecode, raw)
	}
	var signed struct {
		Event json.RawMessage `json:"event"`
	}
	_ = json.Unmarshal(raw, &signed)
	mustBeSignedBy(t, redactedForSigning(t, signed.Event), a.ServerName, aKeys)
	var ir struct {
		InviteState struct {
			Events []struct {
				Type string `json:"type"`
			} `json:"events"`
		} `json:"invite_state"`
	}
	_ = json.Unmarshal(mustJSON(t, fmSync(t, a, alice)["invite"]["!faraway:"+o.name]), &ir)
	var types []string
	for _, e := range ir.InviteState.Events {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{"m.room.name", "m.room.create", "m.room.member"}) {
		t.Fatalf("alice's invite_state: %v", types)
	}
	// The inviting server does not answer make_leave: alice rejects the invite locally.
	if _, err := alice.LeaveRoom(ctx, id.RoomID("!faraway:"+o.name)); err != nil {
		t.Fatalf("reject an invite of an unreachable room: %v", err)
	}
	if _, ok := fmSync(t, a, alice)["invite"]["!faraway:"+o.name]; ok {
		t.Fatal("alice still sees the invite she rejected")
	}
	// Refused: an unknown local user, an invite sent for another server's user.
	nobody := inviteFor("@nobody:" + a.ServerName)
	if code, ecode, _ := o.send(t, a, o.name, a.ServerName, o.key, "PUT", "/_matrix/federation/v2/invite/"+url.PathEscape("!faraway:"+o.name)+"/"+url.PathEscape(nobody.EventID()), inviteBody(nobody), nil); code != 404 || ecode != "M_NOT_FOUND" {
		t.Fatalf("invite of an unknown user: %d %s", code, ecode)
	}
	if code, _, _ := o.send(t, a, o.name, a.ServerName, o.key, "PUT", invPath, map[string]any{"room_version": "nonsense", "event": json.RawMessage(inv.JSON())}, nil); code != 400 {
		t.Fatalf("invite with an unknown room version: %d", code)
	}
}

// redactedForSigning returns an event's JSON as its signatures cover it (redacted,
// without unsigned).
func redactedForSigning(t *testing.T, raw json.RawMessage) []byte {
	t.Helper()
	red, err := gomatrixserverlib.MustGetRoomVersion("11").RedactEventJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return red
}

// A restricted join of a room version 12 room, authorised by its creator: creators
// are not listed in the power levels (they have unlimited power), yet may authorise.
func TestFederationRestrictedJoinV12(t *testing.T) {
	o := startFakeOrigin(t)
	a := harness.Start(t, harness.Options{Engine: "sqlite", Federation: true, NameFromFederationAddr: true})
	alice := udRegister(t, a, "alice")
	space := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	restricted := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.String()}}}}}}})
	spaceJoin, _ := o.fmMakeJoin(t, a, space, "wes")
	if code, ecode, raw := o.fmSendJoin(t, a, space, spaceJoin.EventID(), spaceJoin.JSON()); code != 200 {
		t.Fatalf("join the space: %d %s %v", code, ecode, raw)
	}
	rJoin, content := o.fmMakeJoin(t, a, restricted, "wes")
	if content["join_authorised_via_users_server"] != alice.UserID.String() {
		t.Fatalf("restricted join template: %v", content)
	}
	if code, ecode, out := o.fmSendJoin(t, a, restricted, rJoin.EventID(), rJoin.JSON()); code != 200 {
		t.Fatalf("restricted send_join: %d %s %s", code, ecode, out["error"])
	}
}
