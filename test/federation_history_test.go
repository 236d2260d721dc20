package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// fedRoom is a room of a Myelin server B (created by alice) that the fake origin's
// bob joined by sending his join in a transaction. The fake origin also serves, from
// its own copy of bob's events, /get_missing_events, /backfill and /state_ids.
type fedRoom struct {
	b      *harness.Server
	cli    *mautrix.Client
	roomID string
	o      *fakeOrigin
	join   gomatrixserverlib.PDU
	// auth are the auth events of bob's messages.
	auth []string

	mu sync.Mutex
	// events are bob's events the origin serves (by ID); noGap are events whose
	// /get_missing_events the origin refuses, gapMax limits how many events it gives
	// for others; stateBefore answers /state_ids, fullStateBefore /state.
	events          map[string]gomatrixserverlib.PDU
	fetched         map[string]int // /event requests per event ID
	noGap           map[string]bool
	gapMax          map[string]int
	stateBefore     map[string]json.RawMessage
	fullStateBefore map[string]json.RawMessage
	backfills       int
}

// stateIDs returns the IDs of the room's create, power levels and join rules events,
// as B's client API shows them (the auth events of bob's hand-made events).
func (f *fedRoom) stateIDs(t testing.TB) (createID, plID, jrID string) {
	t.Helper()
	state, err := f.cli.State(context.Background(), id.RoomID(f.roomID))
	if err != nil {
		t.Fatal(err)
	}
	return state[event.StateCreate][""].ID.String(), state[event.StatePowerLevels][""].ID.String(),
		state[event.StateJoinRules][""].ID.String()
}

func newFedRoom(t testing.TB, engine string, setup func(ctx context.Context, cli *mautrix.Client, roomID id.RoomID)) *fedRoom {
	t.Helper()
	ctx := context.Background()
	f := &fedRoom{o: startFakeOrigin(t), events: map[string]gomatrixserverlib.PDU{}, fetched: map[string]int{}, noGap: map[string]bool{}, gapMax: map[string]int{},
		stateBefore: map[string]json.RawMessage{}, fullStateBefore: map[string]json.RawMessage{}}
	f.b = harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	cli, err := mautrix.NewClient(f.b.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "histalice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(reg.UserID, reg.AccessToken)
	f.cli = cli
	created, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11", Visibility: "public", Name: "History room"})
	if err != nil {
		t.Fatal(err)
	}
	f.roomID = created.RoomID.String()
	if setup != nil {
		setup(ctx, cli, created.RoomID)
	}
	last, err := cli.SendText(ctx, created.RoomID, "before bob joined")
	if err != nil {
		t.Fatal(err)
	}
	state, err := cli.State(ctx, created.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	stateID := func(typ event.Type) string { return state[typ][""].ID.String() }
	bob := "@bob:" + f.o.name
	f.join = f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join"},
		[]string{last.EventID.String()}, []string{stateID(event.StateCreate), stateID(event.StateJoinRules), stateID(event.StatePowerLevels)}, 20)
	f.auth = []string{stateID(event.StateCreate), stateID(event.StatePowerLevels), f.join.EventID()}
	if res := f.send(t, f.o, f.join); res[f.join.EventID()] != "" {
		t.Fatalf("join: %v", res)
	}
	f.o.mux.HandleFunc("/_matrix/federation/v1/get_missing_events/", f.serveMissing)
	f.o.mux.HandleFunc("/_matrix/federation/v1/backfill/", f.serveBackfill)
	f.o.mux.HandleFunc("/_matrix/federation/v1/state_ids/", f.serveStateAt(f.stateBefore))
	f.o.mux.HandleFunc("/_matrix/federation/v1/state/", f.serveStateAt(f.fullStateBefore))
	f.o.mux.HandleFunc("/_matrix/federation/v1/event/", f.serveEvent)
	return f
}

// msg builds a message of bob's after prev and keeps it for the origin to serve.
func (f *fedRoom) msg(t testing.TB, body string, prev gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	t.Helper()
	ev := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body},
		[]string{prev.EventID()}, f.auth, prev.Depth()+1)
	f.mu.Lock()
	f.events[ev.EventID()] = ev
	f.mu.Unlock()
	return ev
}

// send puts PDUs to B in one transaction from o; it returns the error per event ID.
func (f *fedRoom) send(t testing.TB, o *fakeOrigin, pdus ...gomatrixserverlib.PDU) map[string]string {
	t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p.JSON()
	}
	return sendTxn(t, f.b, o.name, o.key, raws)
}

// call sends a signed request from o to B and decodes the answer.
func (f *fedRoom) call(t *testing.T, o *fakeOrigin, method, uri string, body any) (int, string, map[string]json.RawMessage) {
	t.Helper()
	code, ecode, raw := o.send(t, f.b, o.name, f.b.ServerName, o.key, method, uri, body, nil)
	var out map[string]json.RawMessage
	_ = json.Unmarshal(raw, &out)
	return code, ecode, out
}

// walk returns up to limit of the origin's events from start back through prev
// events (start included when incl), deepest first, not going through stop.
func (f *fedRoom) walk(start []string, incl bool, stop map[string]bool, limit int) []gomatrixserverlib.PDU {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gomatrixserverlib.PDU
	seen := map[string]bool{}
	var front []string
	if incl {
		front = start
	} else {
		for _, id := range start {
			if ev := f.events[id]; ev != nil {
				front = append(front, ev.PrevEventIDs()...)
			}
		}
	}
	for len(front) > 0 && len(out) < limit {
		var next []string
		for _, id := range front {
			ev := f.events[id]
			if ev == nil || seen[id] || stop[id] || len(out) >= limit {
				continue
			}
			seen[id] = true
			out = append(out, ev)
			next = append(next, ev.PrevEventIDs()...)
		}
		front = next
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Depth() > out[j].Depth() })
	return out
}

func pduJSON(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = ev.JSON()
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fedRoom) serveMissing(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	refuse := len(body.Latest) == 1 && f.noGap[body.Latest[0]]
	if len(body.Latest) == 1 && f.gapMax[body.Latest[0]] > 0 {
		body.Limit = min(body.Limit, f.gapMax[body.Latest[0]])
	}
	f.mu.Unlock()
	if refuse {
		writeJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "not serving this gap"})
		return
	}
	stop := map[string]bool{}
	for _, id := range body.Earliest {
		stop[id] = true
	}
	evs := f.walk(body.Latest, false, stop, body.Limit)
	slices.Reverse(evs)
	writeJSON(w, 200, map[string]any{"events": pduJSON(evs)})
}

func (f *fedRoom) serveBackfill(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var limit int
	fmt.Sscan(q.Get("limit"), &limit)
	f.mu.Lock()
	f.backfills++
	f.mu.Unlock()
	evs := f.walk(q["v"], true, nil, limit)
	writeJSON(w, 200, map[string]any{"origin": f.o.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pduJSON(evs)})
}

func (f *fedRoom) serveEvent(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	id := strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/event/")
	ev := f.events[id]
	f.fetched[id]++
	f.mu.Unlock()
	if ev == nil {
		writeJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown event"})
		return
	}
	writeJSON(w, 200, map[string]any{"origin": f.o.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pduJSON([]gomatrixserverlib.PDU{ev})})
}

// serveStateAt answers /state_ids (from stateBefore) or /state (fullStateBefore) for
// the event_id asked.
func (f *fedRoom) serveStateAt(answers map[string]json.RawMessage) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		st, ok := answers[r.URL.Query().Get("event_id")]
		f.mu.Unlock()
		if !ok {
			writeJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown event"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(st)
	}
}

// bodies returns the bodies of the timeline of B's room as alice sees it, newest first.
func (f *fedRoom) bodies(t *testing.T) []string {
	t.Helper()
	msgs, err := f.cli.Messages(context.Background(), id.RoomID(f.roomID), "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range msgs.Chunk {
		if b, ok := ev.Content.Raw["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

// expectAfterGap pushes m, whose prev events A lacks, and checks that A accepted it,
// shows it first in the timeline and took the state of the gap: user's display name.
func (f *fedRoom) expectAfterGap(t *testing.T, m gomatrixserverlib.PDU, body, user, displayName string) {
	t.Helper()
	if res := f.send(t, f.o, m); res[m.EventID()] != "" {
		t.Fatalf("%q after a gap: %v", body, res)
	}
	if got := f.bodies(t); len(got) == 0 || got[0] != body {
		t.Fatalf("timeline: %v, want %q first", got, body)
	}
	var profile struct {
		DisplayName string `json:"displayname"`
	}
	if err := f.cli.StateEvent(context.Background(), id.RoomID(f.roomID), event.StateMember, user, &profile); err != nil {
		t.Fatal(err)
	}
	if profile.DisplayName != displayName {
		t.Fatalf("%s's display name: %q, want %q from the gap's state", user, profile.DisplayName, displayName)
	}
}

// pageBackToStart pages /messages backwards from the end of a room in pages of pageSize
// until the end token runs out (at most maxPages pages) and returns the message bodies
// oldest first, and whether the room's create event was among the events.
func pageBackToStart(t *testing.T, cli *mautrix.Client, roomID id.RoomID, pageSize, maxPages int) (bodies []string, sawCreate bool) {
	t.Helper()
	from := ""
	for page := 0; page < maxPages; page++ {
		msgs, err := cli.Messages(context.Background(), roomID, from, "", mautrix.DirectionBackward, nil, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			sawCreate = sawCreate || ev.Type.Type == "m.room.create"
			if body, ok := ev.Content.Raw["body"].(string); ok {
				bodies = append(bodies, body)
			}
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	slices.Reverse(bodies)
	return bodies, sawCreate
}

// eventIDsOf parses v11 PDUs and returns their IDs (and bodies, "" when redacted).
func eventIDsOf(t *testing.T, raws json.RawMessage) (ids, bodies []string) {
	t.Helper()
	var list []json.RawMessage
	if err := json.Unmarshal(raws, &list); err != nil {
		t.Fatalf("pdus: %v: %s", err, raws)
	}
	ver, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersionV11)
	for _, raw := range list {
		ev, err := ver.NewEventFromUntrustedJSON(raw)
		if err != nil {
			t.Fatalf("bad PDU %s: %v", raw, err)
		}
		ids = append(ids, ev.EventID())
		var c struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		bodies = append(bodies, c.Body)
	}
	return ids, bodies
}

// TestFederationServeHistory: B serves its room's history to a member server with
// /backfill (newest first, limit, redacted where history visibility hides it) and
// /get_missing_events (between earliest and latest, limit, min_depth, oldest first),
// and /timestamp_to_event; a server with nobody in the room gets 403; after an
// m.room.server_acl denying the origin, its requests get 403 and its PDUs are dropped.
func TestFederationServeHistory(t *testing.T) {
	harness.ForEachEngine(t, testFederationServeHistory)
}

func testFederationServeHistory(t *testing.T, engine string) {
	ctx := context.Background()
	f := newFedRoom(t, engine, func(ctx context.Context, cli *mautrix.Client, roomID id.RoomID) {
		if _, err := cli.SendStateEvent(ctx, roomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
			t.Fatal(err)
		}
	})
	stranger := startFakeOrigin(t)
	var m []string
	for i := 1; i <= 5; i++ {
		r, err := f.cli.SendText(ctx, id.RoomID(f.roomID), fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		m = append(m, r.EventID.String())
	}
	room := url.PathEscape(f.roomID)

	// Backfill: from m5, three events, newest first.
	code, ecode, out := f.call(t, f.o, "GET", "/_matrix/federation/v1/backfill/"+room+"?v="+url.QueryEscape(m[4])+"&limit=3", nil)
	if code != 200 {
		t.Fatalf("backfill: %d %s", code, ecode)
	}
	ids, bodies := eventIDsOf(t, out["pdus"])
	if !slices.Equal(ids, []string{m[4], m[3], m[2]}) || !slices.Equal(bodies, []string{"m5", "m4", "m3"}) {
		t.Fatalf("backfill from m5: %v %v, want %v", ids, bodies, m[2:])
	}
	// From bob's join back: the message before it is history bob's server may not
	// see (history_visibility joined): it comes redacted.
	code, _, out = f.call(t, f.o, "GET", "/_matrix/federation/v1/backfill/"+room+"?v="+url.QueryEscape(f.join.EventID())+"&limit=2", nil)
	ids, bodies = eventIDsOf(t, out["pdus"])
	if code != 200 || len(ids) != 2 || ids[0] != f.join.EventID() || bodies[1] != "" {
		t.Fatalf("backfill from the join: %d %v %v", code, ids, bodies)
	}
	if strings.Contains(string(out["pdus"]), "before bob joined") {
		t.Fatal("history before the join was sent unredacted")
	}

	// get_missing_events: between m1 and m5, oldest first, limit and min_depth.
	gme := func(body map[string]any) []string {
		t.Helper()
		code, ecode, out := f.call(t, f.o, "POST", "/_matrix/federation/v1/get_missing_events/"+room, body)
		if code != 200 {
			t.Fatalf("get_missing_events %v: %d %s", body, code, ecode)
		}
		ids, _ := eventIDsOf(t, out["events"])
		return ids
	}
	if got := gme(map[string]any{"earliest_events": []string{m[0]}, "latest_events": []string{m[4]}, "limit": 10}); !slices.Equal(got, m[1:4]) {
		t.Fatalf("missing events m1..m5: %v, want %v", got, m[1:4])
	}
	if got := gme(map[string]any{"earliest_events": []string{m[0]}, "latest_events": []string{m[4]}, "limit": 2}); !slices.Equal(got, m[2:4]) {
		t.Fatalf("missing events with limit 2: %v, want %v", got, m[2:4])
	}
	_, _, out = f.call(t, f.o, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(m[3]), nil)
	var m4 []struct {
		Depth int64 `json:"depth"`
	}
	_ = json.Unmarshal(out["pdus"], &m4)
	if got := gme(map[string]any{"earliest_events": []string{m[0]}, "latest_events": []string{m[4]}, "limit": 10, "min_depth": m4[0].Depth}); !slices.Equal(got, m[3:4]) {
		t.Fatalf("missing events with min_depth: %v, want %v", got, m[3:4])
	}

	// timestamp_to_event: the latest event at or before now.
	code, ecode, out = f.call(t, f.o, "GET", fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?dir=b&ts=%d", room, time.Now().Add(time.Minute).UnixMilli()), nil)
	if code != 200 || strings.Trim(string(out["event_id"]), `"`) != m[4] {
		t.Fatalf("timestamp_to_event: %d %s %s", code, ecode, out["event_id"])
	}

	// A server with nobody in the room.
	for _, c := range []struct{ method, uri string }{
		{"GET", "/_matrix/federation/v1/backfill/" + room + "?v=" + url.QueryEscape(m[4])},
		{"POST", "/_matrix/federation/v1/get_missing_events/" + room},
		{"GET", "/_matrix/federation/v1/timestamp_to_event/" + room + "?dir=b&ts=1"},
	} {
		var body any
		if c.method == "POST" {
			body = map[string]any{"earliest_events": []string{}, "latest_events": []string{m[4]}}
		}
		if code, ecode, _ := f.call(t, stranger, c.method, c.uri, body); code != 403 || ecode != "M_FORBIDDEN" {
			t.Fatalf("stranger %s: %d %s", c.uri, code, ecode)
		}
	}

	// The room's ACL denies the origin's host: its requests are refused and its PDUs dropped.
	if _, err := f.cli.SendStateEvent(ctx, id.RoomID(f.roomID), event.StateServerACL, "", map[string]any{
		"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true}); err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{
		"/_matrix/federation/v1/backfill/" + room + "?v=" + url.QueryEscape(m[4]),
		"/_matrix/federation/v1/state_ids/" + room + "?event_id=" + url.QueryEscape(m[4]),
		"/_matrix/federation/v1/event/" + url.PathEscape(m[4]),
	} {
		if code, ecode, _ := f.call(t, f.o, "GET", uri, nil); code != 403 || ecode != "M_FORBIDDEN" {
			t.Fatalf("denied server %s: %d %s", uri, code, ecode)
		}
	}
	denied := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "from a denied server"},
		[]string{f.join.EventID()}, f.auth, f.join.Depth()+1)
	if res := f.send(t, f.o, denied); res[denied.EventID()] == "" {
		t.Fatalf("a PDU of a denied server was accepted: %v", res)
	}
	if slices.Contains(f.bodies(t), "from a denied server") {
		t.Fatal("a PDU of a denied server reached the timeline")
	}
}

// TestFederationSendGapAndBackfill: a PDU whose prev events B lacks is accepted after
// B fetches the gap with /get_missing_events; when the origin will not serve the gap,
// the PDU is refused (no state is taken on the origin's word for a pushed event);
// when the gap it serves does not reach B's events, B takes the state after the
// missing prev event of the gap's oldest event from /state_ids (and that prev event
// from /event) and accepts both; /messages reaching the start of B's history then
// backfills the missing events from the origin, in order.
func TestFederationSendGapAndBackfill(t *testing.T) {
	harness.ForEachEngine(t, testFederationSendGapAndBackfill)
}

func testFederationSendGapAndBackfill(t *testing.T, engine string) {
	f := newFedRoom(t, engine, nil)
	// A gap of two events, filled with get_missing_events.
	g1 := f.msg(t, "g1", f.join)
	g2 := f.msg(t, "g2", g1)
	g3 := f.msg(t, "g3", g2)
	if res := f.send(t, f.o, g3); res[g3.EventID()] != "" {
		t.Fatalf("g3 with a gap: %v", res)
	}
	if got := f.bodies(t); len(got) < 3 || !slices.Equal(got[:3], []string{"g3", "g2", "g1"}) {
		t.Fatalf("timeline after the gap was filled: %v", got)
	}

	// A gap the origin will not serve: h4 is refused.
	h1 := f.msg(t, "h1", g3)
	h2 := f.msg(t, "h2", h1)
	h3 := f.msg(t, "h3", h2)
	h4 := f.msg(t, "h4", h3)
	f.mu.Lock()
	f.noGap[h4.EventID()] = true
	f.mu.Unlock()
	if res := f.send(t, f.o, h4); res[h4.EventID()] == "" {
		t.Fatalf("h4 with an unserved gap was accepted: %v", res)
	}
	if got := f.bodies(t); slices.Contains(got, "h4") {
		t.Fatalf("h4 reached the timeline: %v", got)
	}

	// The origin serves only h3 of the gap: B asks for the state at h2 (h3's missing
	// prev event) and for h2 itself.
	code, ecode, out := f.call(t, f.o, "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(f.roomID)+"?event_id="+url.QueryEscape(g3.EventID()), nil)
	if code != 200 {
		t.Fatalf("state_ids: %d %s", code, ecode)
	}
	raw, _ := json.Marshal(out) // messages change no state: the state at h2 is the state at g3
	f.mu.Lock()
	delete(f.noGap, h4.EventID())
	f.gapMax[h4.EventID()] = 1
	f.stateBefore[h2.EventID()] = raw
	f.mu.Unlock()
	if res := f.send(t, f.o, h4); res[h4.EventID()] != "" {
		t.Fatalf("h4 with a partly served gap: %v", res)
	}
	// /messages reads down to the start of the room, then backfills h1..h3.
	got := f.bodies(t)
	want := []string{"h4", "h3", "h2", "h1", "g3", "g2", "g1", "before bob joined"}
	if !slices.Equal(got, want) {
		t.Fatalf("timeline after backfill: %v, want %v", got, want)
	}
	f.mu.Lock()
	n := f.backfills
	f.mu.Unlock()
	if n == 0 {
		t.Fatal("B never asked the origin to backfill")
	}
	// Backfilled events are history: a /sync does not deliver them as new.
	resp, err := f.cli.SyncRequest(context.Background(), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Rooms.Join[id.RoomID(f.roomID)].Timeline.Events {
		if b, _ := ev.Content.Raw["body"].(string); b == "h1" && ev.ID.String() == h1.EventID() {
			if tl := resp.Rooms.Join[id.RoomID(f.roomID)].Timeline.Events; tl[len(tl)-1].ID.String() == h1.EventID() {
				t.Fatal("a backfilled event is the newest event of /sync")
			}
		}
	}
}

// TestFederationSendGapBringsAuthEvent: a pushed message whose missing prev event is
// also its missing auth event (bob's display name change just before it) is accepted:
// B fills the gap first, so the name change joins the timeline, instead of fetching it
// as an auth event first (an outlier, which the gap could then not bring into the
// timeline, leaving the gap open and the message refused).
func TestFederationSendGapBringsAuthEvent(t *testing.T) {
	harness.ForEachEngine(t, testFederationSendGapBringsAuthEvent)
}

func testFederationSendGapBringsAuthEvent(t *testing.T, engine string) {
	ctx := context.Background()
	f := newFedRoom(t, engine, nil)
	state, err := f.cli.State(ctx, id.RoomID(f.roomID))
	if err != nil {
		t.Fatal(err)
	}
	joinRules := state[event.StateJoinRules][""].ID.String()
	bob := "@bob:" + f.o.name
	name := f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join", "displayname": "Bob Renamed"},
		[]string{f.join.EventID()}, []string{f.auth[0], f.auth[1], joinRules, f.join.EventID()}, f.join.Depth()+1)
	m := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after the rename"},
		[]string{name.EventID()}, []string{f.auth[0], f.auth[1], name.EventID()}, name.Depth()+1)
	f.mu.Lock()
	f.events[name.EventID()] = name
	f.events[m.EventID()] = m
	f.mu.Unlock()
	f.expectAfterGap(t, m, "after the rename", bob, "Bob Renamed")
}

// TestFederationSendGapStateFromFullState: the only event of a gap B fetches (a
// display name change of bob's) has a missing prev event, whose state B mostly lacks:
// a chain of bob's earlier display names longer than B walks one by one for missing
// auth events. B takes that state with /state and the prev event itself with /event,
// storing the prev event after the state it refers to (not before, which dropped it
// and so rejected the gap event and the pushed message that refer to it): the message
// is accepted and bob's display name is his latest.
func TestFederationSendGapStateFromFullState(t *testing.T) {
	harness.ForEachEngine(t, testFederationSendGapStateFromFullState)
}

func testFederationSendGapStateFromFullState(t *testing.T, engine string) {
	ctx := context.Background()
	f := newFedRoom(t, engine, nil)
	g1 := f.msg(t, "g1", f.join)
	if res := f.send(t, f.o, g1); res[g1.EventID()] != "" {
		t.Fatalf("g1: %v", res)
	}
	state, err := f.cli.State(ctx, id.RoomID(f.roomID))
	if err != nil {
		t.Fatal(err)
	}
	joinRules := state[event.StateJoinRules][""].ID.String()
	bob := "@bob:" + f.o.name
	const n = 60
	names := make([]gomatrixserverlib.PDU, n)
	prev := g1
	member := f.join
	for i := range names {
		ev := f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join", "displayname": fmt.Sprintf("Bob %d", i)},
			[]string{prev.EventID()}, []string{f.auth[0], f.auth[1], joinRules, member.EventID()}, prev.Depth()+1)
		names[i] = ev
		prev, member = ev, ev
		// Distinct origin_server_ts: resolving bob's membership against the state at g1
		// orders his names by timestamp (then event ID), so the latest must be latest.
		time.Sleep(2 * time.Millisecond)
	}
	last := names[n-1]
	m := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after the names"},
		[]string{last.EventID()}, []string{f.auth[0], f.auth[1], last.EventID()}, last.Depth()+1)

	// The state before names[n-2] (the missing prev event of the gap's only event):
	// B's state at g1 with bob's membership names[n-3], whose auth chain adds the join
	// and the names before it.
	room := url.PathEscape(f.roomID)
	code, ecode, out := f.call(t, f.o, "GET", "/_matrix/federation/v1/state/"+room+"?event_id="+url.QueryEscape(g1.EventID()), nil)
	if code != 200 {
		t.Fatalf("state at g1: %d %s", code, ecode)
	}
	var pdus, chain []json.RawMessage
	if err := json.Unmarshal(out["pdus"], &pdus); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out["auth_chain"], &chain); err != nil {
		t.Fatal(err)
	}
	pduIDs, _ := eventIDsOf(t, out["pdus"])
	chainIDs, _ := eventIDsOf(t, out["auth_chain"])
	var st struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
		PDUIDs    []string          `json:"pdu_ids"`
		AuthIDs   []string          `json:"auth_chain_ids"`
	}
	for i, id := range pduIDs {
		if id != f.join.EventID() {
			st.PDUs, st.PDUIDs = append(st.PDUs, pdus[i]), append(st.PDUIDs, id)
		}
	}
	st.PDUs, st.PDUIDs = append(st.PDUs, names[n-3].JSON()), append(st.PDUIDs, names[n-3].EventID())
	for i, id := range chainIDs {
		if id != f.join.EventID() {
			st.AuthChain, st.AuthIDs = append(st.AuthChain, chain[i]), append(st.AuthIDs, id)
		}
	}
	for _, ev := range append([]gomatrixserverlib.PDU{f.join}, names[:n-3]...) {
		st.AuthChain, st.AuthIDs = append(st.AuthChain, ev.JSON()), append(st.AuthIDs, ev.EventID())
	}
	ids, _ := json.Marshal(map[string]any{"pdu_ids": st.PDUIDs, "auth_chain_ids": st.AuthIDs})
	full, _ := json.Marshal(map[string]any{"pdus": st.PDUs, "auth_chain": st.AuthChain})
	f.mu.Lock()
	for _, ev := range append(names, m) {
		f.events[ev.EventID()] = ev
	}
	f.gapMax[m.EventID()] = 1
	f.stateBefore[names[n-2].EventID()] = ids
	f.fullStateBefore[names[n-2].EventID()] = full
	f.mu.Unlock()

	f.expectAfterGap(t, m, "after the names", bob, fmt.Sprintf("Bob %d", n-1))
}

// TestFederationRemoteProfileDirectoryHierarchy: users of A read profiles of B's users,
// B's public room directory, and a space on A whose child room lives only on B, all
// through federation; the hierarchy endpoint of B answers for its public room. B also
// answers /query/directory for its aliases and /openid/userinfo for its tokens.
func TestFederationRemoteProfileDirectoryHierarchy(t *testing.T) {
	ctx := context.Background()
	a := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true})
	b := harness.Start(t, harness.Options{Engine: "postgres", Federation: true, NameFromFederationAddr: true})
	alice, bob := udRegister(t, a, "remotealice"), udRegister(t, b, "remotebob")
	if err := bob.SetDisplayName(ctx, "Bob Remote"); err != nil {
		t.Fatal(err)
	}
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Bob's lobby", Topic: "on B", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}

	// Profiles.
	p, err := alice.GetProfile(ctx, bob.UserID)
	if err != nil || p.DisplayName != "Bob Remote" {
		t.Fatalf("remote profile: %+v %v", p, err)
	}
	dn, err := alice.GetDisplayName(ctx, bob.UserID)
	if err != nil || dn.DisplayName != "Bob Remote" {
		t.Fatalf("remote displayname: %+v %v", dn, err)
	}
	_, err = alice.GetProfile(ctx, id.UserID("@nobody:"+b.ServerName))
	if code, ecode := udErr(t, err); code != 404 || ecode != "M_NOT_FOUND" {
		t.Fatalf("unknown remote user: %d %s", code, ecode)
	}

	// B's room directory.
	pr, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: b.ServerName})
	if err != nil || len(pr.Chunk) != 1 || pr.Chunk[0].RoomID != room.RoomID || pr.Chunk[0].Name != "Bob's lobby" {
		t.Fatalf("remote public rooms: %+v %v", pr, err)
	}
	var filtered struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	_, err = alice.MakeRequest(ctx, "POST", alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": b.ServerName}),
		map[string]any{"filter": map[string]any{"generic_search_term": "no such room"}}, &filtered)
	if err != nil || len(filtered.Chunk) != 0 {
		t.Fatalf("filtered remote public rooms: %v %v", filtered, err)
	}

	// A space on A whose child is B's room.
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Company space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, space.RoomID, event.StateSpaceChild, room.RoomID.String(), map[string]any{"via": []string{b.ServerName}}); err != nil {
		t.Fatal(err)
	}
	h, err := alice.Hierarchy(ctx, space.RoomID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range h.Rooms {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"Company space", "Bob's lobby"}) {
		t.Fatalf("hierarchy through federation: %v", names)
	}

	// B's alias, resolved by A through federation.
	ra, err := alice.ResolveAlias(ctx, id.RoomAlias("#lobby:"+b.ServerName))
	if err != nil || ra.RoomID != room.RoomID || !slices.Contains(ra.Servers, b.ServerName) {
		t.Fatalf("remote alias: %+v %v", ra, err)
	}

	// B's /query/directory and /openid/userinfo, asked by a fake origin.
	o := startFakeOrigin(t)
	code, ecode, raw := o.send(t, b, o.name, b.ServerName, o.key, "GET", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape("#lobby:"+b.ServerName), nil, nil)
	if code != 200 || !strings.Contains(string(raw), room.RoomID.String()) || !strings.Contains(string(raw), b.ServerName) {
		t.Fatalf("query/directory: %d %s %s", code, ecode, raw)
	}
	if code, ecode, _ := o.send(t, b, o.name, b.ServerName, o.key, "GET", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape("#nope:"+b.ServerName), nil, nil); code != 404 || ecode != "M_NOT_FOUND" {
		t.Fatalf("unknown alias: %d %s", code, ecode)
	}
	tok, err := bob.RequestOpenIDToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, raw = fedGetJSON(t, fedHTTP(t), "GET", b.FederationURL+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(tok.AccessToken), "")
	if code != 200 || !strings.Contains(string(raw), bob.UserID.String()) {
		t.Fatalf("openid userinfo: %d %s", code, raw)
	}
	code, raw = fedGetJSON(t, fedHTTP(t), "GET", b.FederationURL+"/_matrix/federation/v1/openid/userinfo?access_token=nope", "")
	if code != 401 || !strings.Contains(string(raw), "M_UNKNOWN_TOKEN") {
		t.Fatalf("bad openid token: %d %s", code, raw)
	}
}

// TestFederationBackfillAfterJoin: a user of A joins B's room over federation and
// paginates /messages back through the history B had before A joined: every message,
// in order, fetched from B with /backfill as the pagination reaches the start of A's
// copy. History B hides from A's users (joined visibility) stays hidden.
func TestFederationBackfillAfterJoin(t *testing.T) {
	harness.ForEachEngine(t, testFederationBackfillAfterJoin)
}

func testFederationBackfillAfterJoin(t *testing.T, engine string) {
	ctx := context.Background()
	a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	b := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true})
	alice, bob := udRegister(t, a, "bfalice"), udRegister(t, b, "bfbob")
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old room"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	var ts12 int64
	var id12 string
	for i := 1; i <= 23; i++ {
		body := fmt.Sprintf("old %02d", i)
		if i == 12 {
			// Milliseconds apart from both neighbours, so that only event 12 is the
			// first at or after ts12.
			time.Sleep(5 * time.Millisecond)
			ts12 = time.Now().UnixMilli()
			time.Sleep(5 * time.Millisecond)
		}
		r, err := bob.SendText(ctx, room.RoomID, body)
		if err != nil {
			t.Fatal(err)
		}
		if i == 12 {
			id12 = r.EventID.String()
		}
		want = append(want, body)
	}
	if _, err := alice.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err != nil {
		t.Fatalf("join over federation: %v", err)
	}
	// timestamp_to_event for a time before A joined: A asks B, stores B's event, and
	// /context works from it.
	roomPath := "/_matrix/client/v1/rooms/" + url.PathEscape(room.RoomID.String())
	code, body := a.Do(t, "GET", roomPath+"/timestamp_to_event?dir=f&ts="+fmt.Sprint(ts12), alice.AccessToken, nil)
	if code != 200 || body["event_id"] != id12 {
		t.Fatalf("timestamp_to_event on A: %d %v, want %s", code, body, id12)
	}
	code, body = a.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID.String())+"/context/"+url.PathEscape(id12)+"?limit=0", alice.AccessToken, nil)
	if code != 200 {
		t.Fatalf("context of the remote event on A: %d %v", code, body)
	}
	// Paginate back 5 at a time until the end.
	got, sawCreate := pageBackToStart(t, alice, room.RoomID, 5, 30)
	if !slices.Equal(got, want) {
		t.Fatalf("history seen on A:\n%v\nwant\n%v", got, want)
	}
	if !sawCreate {
		t.Fatal("the room's create event (known on A as part of the join's state) never reached the timeline")
	}

	// More history than one backfill brings (100 events), read with pages bigger than
	// that: every page's end token continues before its oldest event, so the next page
	// backfills further instead of stopping at the first backfill's edge.
	long, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Long room"})
	if err != nil {
		t.Fatal(err)
	}
	var wantLong []string
	for i := 1; i <= 130; i++ {
		body := fmt.Sprintf("long %03d", i)
		if _, err := bob.SendText(ctx, long.RoomID, body); err != nil {
			t.Fatal(err)
		}
		wantLong = append(wantLong, body)
	}
	if _, err := alice.JoinRoom(ctx, long.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err != nil {
		t.Fatal(err)
	}
	gotLong, _ := pageBackToStart(t, alice, long.RoomID, 200, 10)
	if !slices.Equal(gotLong, wantLong) {
		t.Fatalf("long history seen on A: %d messages, want %d:\n%v", len(gotLong), len(wantLong), gotLong)
	}

	// A room whose history is for joined members only: what came before the join stays hidden.
	private, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctx, private.RoomID, "before you came"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoom(ctx, private.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctx, private.RoomID, "after you came"); err != nil {
		t.Fatal(err)
	}
	msgs, err := alice.Messages(ctx, private.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range msgs.Chunk {
		if ev.Content.Raw["body"] == "before you came" {
			t.Fatal("history before the join was shown on A")
		}
	}
}

// TestFederationMissingAuthEvents: a PDU whose auth events include one B lacks makes B
// fetch it from the origin (/event_auth, or /event when the origin does not answer
// that); that event refers to a rejected one, so it is rejected, and so is the PDU (no
// error in the transaction's answer: it was processed). A later event on top of the
// rejected one is accepted and shown; the rejected ones never are (Complement's
// TestInboundFederationRejectsEventsWithRejectedAuthEvents).
func TestFederationMissingAuthEvents(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		t.Run("event_auth not answered", func(t *testing.T) { testFederationMissingAuthEvents(t, engine, false) })
		t.Run("event_auth answered", func(t *testing.T) { testFederationMissingAuthEvents(t, engine, true) })
	})
}

func testFederationMissingAuthEvents(t *testing.T, engine string, answerEventAuth bool) {
	ctx := context.Background()
	f := newFedRoom(t, engine, nil)
	createID, plID, jrID := f.stateIDs(t)
	bob := "@bob:" + f.o.name
	// R: bob (power 0) changes the power levels: rejected on arrival.
	empty := ""
	rejected := f.o.event(t, f.roomID, "bob", "m.room.power_levels", &empty, map[string]any{"users": map[string]any{bob: 100}},
		[]string{f.join.EventID()}, []string{createID, plID, f.join.EventID()}, f.join.Depth()+1)
	if res := f.send(t, f.o, rejected); res[rejected.EventID()] != "" {
		t.Fatalf("rejected PL: %v", res)
	}
	// O: bob's member event authorised by R; never sent, only served.
	outlier := f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join", "displayname": "O"},
		[]string{f.join.EventID()}, []string{createID, jrID, rejected.EventID(), f.join.EventID()}, f.join.Depth()+1)
	f.mu.Lock()
	f.events[outlier.EventID()] = outlier
	f.mu.Unlock()
	// X: a message with O among its auth events.
	x := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x needs O"},
		[]string{f.join.EventID()}, []string{createID, plID, outlier.EventID()}, f.join.Depth()+1)
	f.mu.Lock()
	f.events[x.EventID()] = x
	f.mu.Unlock()
	if answerEventAuth {
		// The chain of x as the origin has it: O (whose own auth events B has, R rejected).
		f.o.mux.HandleFunc("/_matrix/federation/v1/event_auth/", func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/"+url.PathEscape(x.EventID())) && !strings.HasSuffix(r.URL.Path, "/"+x.EventID()) {
				writeJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown event"})
				return
			}
			writeJSON(w, 200, map[string]any{"auth_chain": pduJSON([]gomatrixserverlib.PDU{outlier})})
		})
	}
	sentinel := f.msg(t, "sentinel after x", x)
	if res := f.send(t, f.o, x, sentinel); res[x.EventID()] != "" || res[sentinel.EventID()] != "" {
		t.Fatalf("x and the sentinel: %v", res)
	}
	f.mu.Lock()
	n := f.fetched[outlier.EventID()]
	f.mu.Unlock()
	if n == 0 && !answerEventAuth {
		t.Fatal("B never fetched the missing auth event")
	}
	waitHistory(t, f.cli, f.roomID, []string{"before bob joined", "sentinel after x"})
	for _, ev := range []gomatrixserverlib.PDU{rejected, outlier, x} {
		if _, err := f.cli.GetEvent(ctx, id.RoomID(f.roomID), id.EventID(ev.EventID())); err == nil {
			t.Fatalf("%s (%s) is shown", ev.EventID(), ev.Type())
		}
	}
	var member map[string]any
	if err := f.cli.StateEvent(ctx, id.RoomID(f.roomID), event.StateMember, bob, &member); err != nil || member["displayname"] == "O" {
		t.Fatalf("bob's member event: %v %v", member, err)
	}
}
