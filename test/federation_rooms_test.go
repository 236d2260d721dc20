package test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// remoteEvent builds an event of roomID sent by localpart on the fake origin.
func (o *fakeOrigin) event(t testing.TB, roomID, localpart, evType string, stateKey *string, content any, prev, auth []string, depth int64) gomatrixserverlib.PDU {
	t.Helper()
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersionV11)
	if err != nil {
		t.Fatal(err)
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: "@" + localpart + ":" + o.name, RoomID: roomID, Type: evType, StateKey: stateKey,
		PrevEvents: prev, AuthEvents: auth, Depth: depth}
	if err := pe.SetContent(content); err != nil {
		t.Fatal(err)
	}
	ev, err := ver.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), spec.ServerName(o.name), o.key.ID, o.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestFederationRoomEndpointsAndSend: a remote server joins a public room on B by
// sending its join in a transaction, then reads the room's events, state and auth
// chains; a server not in the room is refused; a PDU with a bad signature is refused
// and a good one reaches B's clients.
func TestFederationRoomEndpointsAndSend(t *testing.T) {
	o, stranger := startFakeOrigin(t), startFakeOrigin(t)
	b := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true})
	ctx := context.Background()
	cli, err := mautrix.NewClient(b.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "roomalice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(reg.UserID, reg.AccessToken)
	created, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID.String()
	sent, err := cli.SendText(ctx, created.RoomID, "hello federation")
	if err != nil {
		t.Fatal(err)
	}
	state, err := cli.State(ctx, created.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	stateID := func(typ event.Type, key string) string { return state[typ][key].ID.String() }
	createID, jrID, plID := stateID(event.StateCreate, ""), stateID(event.StateJoinRules, ""), stateID(event.StatePowerLevels, "")
	aliceMember := stateID(event.StateMember, reg.UserID.String())

	get := func(from *fakeOrigin, uri string) (int, string, map[string]json.RawMessage) {
		t.Helper()
		code, ecode, raw := from.send(t, b, from.name, b.ServerName, from.key, "GET", uri, nil, nil)
		var out map[string]json.RawMessage
		_ = json.Unmarshal(raw, &out)
		return code, ecode, out
	}
	eventURI := "/_matrix/federation/v1/event/" + url.PathEscape(sent.EventID.String())
	if code, ecode, _ := get(o, eventURI); code != 403 || ecode != "M_FORBIDDEN" {
		t.Fatalf("event before joining: %d %s", code, ecode)
	}

	bob := "@bob:" + o.name
	join := o.event(t, roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join"},
		[]string{sent.EventID.String()}, []string{createID, jrID, plID}, 10)
	txn := map[string]any{"origin": o.name, "origin_server_ts": time.Now().UnixMilli(),
		"pdus": []json.RawMessage{join.JSON()}, "edus": []any{map[string]any{"edu_type": "org.example.unknown", "content": map[string]any{}}}}
	code, ecode, raw := o.send(t, b, o.name, b.ServerName, o.key, "PUT", "/_matrix/federation/v1/send/txn1", txn, nil)
	if code != 200 || !strings.Contains(string(raw), `"`+join.EventID()+`":{}`) {
		t.Fatalf("send join: %d %s %s", code, ecode, raw)
	}
	members, err := cli.JoinedMembers(ctx, created.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := members.Joined[id.UserID(bob)]; !ok {
		t.Fatalf("remote join not applied: %+v", members.Joined)
	}

	// Now in the room: /event, /state_ids, /state, /event_auth.
	code, ecode, out := get(o, eventURI)
	if code != 200 || !strings.Contains(string(out["pdus"]), "hello federation") {
		t.Fatalf("event: %d %s %s", code, ecode, out["pdus"])
	}
	q := "?event_id=" + url.QueryEscape(join.EventID())
	code, ecode, out = get(o, "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+q)
	if code != 200 {
		t.Fatalf("state_ids: %d %s", code, ecode)
	}
	var pduIDs, chainIDs []string
	_ = json.Unmarshal(out["pdu_ids"], &pduIDs)
	_ = json.Unmarshal(out["auth_chain_ids"], &chainIDs)
	for _, want := range []string{createID, jrID, plID, aliceMember} {
		if !slices.Contains(pduIDs, want) {
			t.Fatalf("state_ids lacks %s: %v", want, pduIDs)
		}
	}
	if slices.Contains(pduIDs, join.EventID()) {
		t.Fatalf("state_ids is the state before the event, not after: %v", pduIDs)
	}
	if !slices.Contains(chainIDs, createID) {
		t.Fatalf("auth_chain_ids lacks the create event: %v", chainIDs)
	}
	code, ecode, out = get(o, "/_matrix/federation/v1/state/"+url.PathEscape(roomID)+q)
	var statePDUs, chain []json.RawMessage
	_ = json.Unmarshal(out["pdus"], &statePDUs)
	_ = json.Unmarshal(out["auth_chain"], &chain)
	if code != 200 || len(statePDUs) != len(pduIDs) || len(chain) != len(chainIDs) {
		t.Fatalf("state: %d %s %d/%d events", code, ecode, len(statePDUs), len(chain))
	}
	code, ecode, out = get(o, "/_matrix/federation/v1/event_auth/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.EventID()))
	_ = json.Unmarshal(out["auth_chain"], &chain)
	if code != 200 || len(chain) < 3 {
		t.Fatalf("event_auth: %d %s %d events", code, ecode, len(chain))
	}
	// Event of another room through this room's path: not found.
	if code, _, _ := get(o, "/_matrix/federation/v1/state_ids/"+url.PathEscape("!other:"+b.ServerName)+q); code != 404 {
		t.Fatalf("state_ids with a mismatched room: %d", code)
	}

	// A server with nobody in the room is refused.
	for _, uri := range []string{eventURI, "/_matrix/federation/v1/state_ids/" + url.PathEscape(roomID) + q,
		"/_matrix/federation/v1/event_auth/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID())} {
		if code, ecode, _ := get(stranger, uri); code != 403 || ecode != "M_FORBIDDEN" {
			t.Fatalf("stranger %s: %d %s", uri, code, ecode)
		}
	}

	// A message with a forged signature is refused; a good one is delivered.
	msgAuth := []string{createID, plID, join.EventID()}
	forged := o.event(t, roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "forged"}, []string{join.EventID()}, msgAuth, 11)
	var fj map[string]any
	_ = json.Unmarshal(forged.JSON(), &fj)
	other := o.event(t, roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}, []string{join.EventID()}, msgAuth, 11)
	var oj map[string]any
	_ = json.Unmarshal(other.JSON(), &oj)
	fj["signatures"] = oj["signatures"]
	forgedJSON, _ := json.Marshal(fj)
	good := o.event(t, roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "genuine"}, []string{join.EventID()}, msgAuth, 11)
	txn = map[string]any{"origin": o.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{forgedJSON, good.JSON()}}
	code, ecode, raw = o.send(t, b, o.name, b.ServerName, o.key, "PUT", "/_matrix/federation/v1/send/txn2", txn, nil)
	var res struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	_ = json.Unmarshal(raw, &res)
	if code != 200 || res.PDUs[forged.EventID()].Error == "" || res.PDUs[good.EventID()].Error != "" {
		t.Fatalf("send messages: %d %s %s", code, ecode, raw)
	}
	msgs, err := cli.Messages(ctx, created.RoomID, "", "", mautrix.DirectionBackward, nil, 20)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, ev := range msgs.Chunk {
		if b, ok := ev.Content.Raw["body"].(string); ok {
			bodies = append(bodies, b)
		}
	}
	if !slices.Contains(bodies, "genuine") || slices.Contains(bodies, "forged") {
		t.Fatalf("timeline bodies: %v", bodies)
	}
	// A retransmitted transaction (same txnId) gets the same answer and is not processed again.
	again := o.event(t, roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "retransmitted"}, []string{good.EventID()}, msgAuth, 12)
	txn["pdus"] = []json.RawMessage{again.JSON()}
	code, _, raw2 := o.send(t, b, o.name, b.ServerName, o.key, "PUT", "/_matrix/federation/v1/send/txn2", txn, nil)
	if code != 200 || string(raw2) != string(raw) {
		t.Fatalf("retransmission: %d %s, first answer %s", code, raw2, raw)
	}
	if _, err := cli.GetEvent(ctx, created.RoomID, id.EventID(again.EventID())); err == nil {
		t.Fatal("a retransmitted transaction was processed again")
	}
	// A transaction claiming another origin than the signed request is refused.
	txn["origin"] = "someone-else.test"
	if code, ecode, _ := o.send(t, b, o.name, b.ServerName, o.key, "PUT", "/_matrix/federation/v1/send/txn3", txn, nil); code != 403 || ecode != "M_FORBIDDEN" {
		t.Fatalf("mismatched origin: %d %s", code, ecode)
	}
}
