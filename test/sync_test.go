package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/cmd/myelin/app"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// syncEnv is an in-process server (as cmd/myelin wires it) on one engine, driven over
// HTTP by mautrix clients. Room changes go through the roomserver's Go API, as the
// room endpoints belong to another area of the client API.
type syncEnv struct {
	t   testing.TB
	srv *app.Server
	hs  *httptest.Server
	ctx context.Context
}

func startSyncEnv(t testing.TB, engine string) *syncEnv {
	t.Helper()
	return startSyncEnvWith(t, engine, nil)
}

// startSyncEnvWith is startSyncEnv with a change to the configuration (nil: none).
func startSyncEnvWith(t testing.TB, engine string, configure func(cfg *config.Config)) *syncEnv {
	t.Helper()
	logrus.SetLevel(logrus.WarnLevel)
	cfg := config.Default()
	cfg.ServerName = "sync.test"
	cfg.DataDir = t.TempDir()
	cfg.Database.DSN = storagetest.DSN(t, engine)
	cfg.Database.SQLiteSynchronous = "normal"
	cfg.Registration.Mode = config.RegistrationOpen
	cfg.Passwords.BcryptCost = 4
	cfg.RateLimits.Enabled = false
	if configure != nil {
		configure(cfg)
	}
	srv, err := app.New(context.Background(), cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Client.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Close()
	})
	return &syncEnv{t: t, srv: srv, hs: hs, ctx: context.Background()}
}

// forEachSyncEngine runs fn on SQLite and PostgreSQL.
func forEachSyncEngine(t *testing.T, fn func(t *testing.T, e *syncEnv)) {
	for _, engine := range storagetest.Engines {
		t.Run(engine, func(t *testing.T) {
			if engine == "postgres" {
				storagetest.RequirePostgres(t)
			}
			fn(t, startSyncEnv(t, engine))
		})
	}
}

func (e *syncEnv) register(localpart string) *mautrix.Client {
	e.t.Helper()
	cli, err := mautrix.NewClient(e.hs.URL, "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(e.ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: "password-" + localpart})
	if err != nil {
		e.t.Fatalf("register %s: %v", localpart, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

func (e *syncEnv) createRoom(creator *mautrix.Client, req roomserver.CreateRoomRequest) string {
	e.t.Helper()
	req.Creator = creator.UserID.String()
	roomID, err := e.srv.Rooms.CreateRoom(e.ctx, req)
	if err != nil {
		e.t.Fatalf("create room: %v", err)
	}
	return roomID
}

func (e *syncEnv) send(cli *mautrix.Client, roomID, body string) string {
	e.t.Helper()
	ev, err := e.srv.Rooms.SendEvent(e.ctx, roomserver.SendRequest{RoomID: roomID, Sender: cli.UserID.String(), Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.text", "body": body}})
	if err != nil {
		e.t.Fatalf("send: %v", err)
	}
	return ev.EventID()
}

func (e *syncEnv) sendState(cli *mautrix.Client, roomID, evType, stateKey string, content any) string {
	e.t.Helper()
	ev, err := e.srv.Rooms.SendEvent(e.ctx, roomserver.SendRequest{RoomID: roomID, Sender: cli.UserID.String(), Type: evType,
		StateKey: &stateKey, Content: content})
	if err != nil {
		e.t.Fatalf("send state: %v", err)
	}
	return ev.EventID()
}

func (e *syncEnv) membership(op string, actor, target *mautrix.Client, roomID string) {
	e.t.Helper()
	req := roomserver.MembershipRequest{RoomID: roomID, Sender: actor.UserID.String()}
	if target != nil {
		req.Target = target.UserID.String()
	}
	var err error
	switch op {
	case "invite":
		_, err = e.srv.Rooms.Invite(e.ctx, req)
	case "join":
		_, err = e.srv.Rooms.Join(e.ctx, req)
	case "leave":
		_, err = e.srv.Rooms.Leave(e.ctx, req)
	case "kick":
		_, err = e.srv.Rooms.Kick(e.ctx, req)
	case "ban":
		_, err = e.srv.Rooms.Ban(e.ctx, req)
	}
	if err != nil {
		e.t.Fatalf("%s: %v", op, err)
	}
}

// sharedRoom creates a public room of creator that the others join.
func (e *syncEnv) sharedRoom(creator *mautrix.Client, others ...*mautrix.Client) string {
	e.t.Helper()
	roomID := e.createRoom(creator, roomserver.CreateRoomRequest{Preset: "public_chat", Name: "shared"})
	for _, o := range others {
		e.membership("join", o, nil, roomID)
	}
	return roomID
}

func doSync(t *testing.T, cli *mautrix.Client, req mautrix.ReqSync) *mautrix.RespSync {
	t.Helper()
	if req.SetPresence == "" {
		req.SetPresence = event.PresenceOnline
	}
	resp, err := cli.FullSyncRequest(context.Background(), req)
	if err != nil {
		t.Fatalf("sync as %s: %v", cli.UserID, err)
	}
	return resp
}

func inlineFilter(f any) string {
	data, _ := json.Marshal(f)
	return string(data)
}

func timelineBodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		// A redacted message has no body.
		if body, ok := ev.Content.Raw["body"].(string); ok && ev.Type == event.EventMessage {
			out = append(out, body)
		}
	}
	return out
}

func eventIDs(evs []*event.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID.String()
	}
	return out
}

func hasState(evs []*event.Event, typ, stateKey string) bool {
	for _, ev := range evs {
		if ev.Type.Type == typ && ev.StateKey != nil && *ev.StateKey == stateKey {
			return true
		}
	}
	return false
}

func stateKeys(evs []*event.Event, typ string) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type.Type == typ && ev.StateKey != nil {
			out = append(out, *ev.StateKey)
		}
	}
	sort.Strings(out)
	return out
}

// TestSyncInitialAndIncremental: the initial sync gives the room with its state and
// timeline; an incremental sync gives exactly the new events; an idle long-poll returns
// empty at its timeout with a usable next_batch.
func TestSyncInitialAndIncremental(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "Room one", Topic: "t"})
		e.send(alice, roomID, "hello")
		r1 := doSync(t, alice, mautrix.ReqSync{})
		jr := r1.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatalf("room missing from initial sync: %+v", r1.Rooms)
		}
		if got := timelineBodies(jr.Timeline.Events); len(got) != 1 || got[0] != "hello" {
			t.Fatalf("timeline bodies = %v", got)
		}
		all := append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...)
		for _, typ := range []string{"m.room.create", "m.room.name", "m.room.power_levels", "m.room.join_rules"} {
			if !hasState(all, typ, "") {
				t.Errorf("state/timeline lacks %s", typ)
			}
		}
		if jr.Timeline.PrevBatch == "" {
			t.Error("no prev_batch")
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 1 {
			t.Errorf("summary = %+v", jr.Summary)
		}
		// Nothing new: an idle long-poll returns empty after its timeout.
		start := time.Now()
		r2 := doSync(t, alice, mautrix.ReqSync{Since: r1.NextBatch, Timeout: 300})
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Errorf("empty long-poll returned after %v, before its timeout", d)
		}
		if len(r2.Rooms.Join) != 0 {
			t.Errorf("idle sync returned rooms: %+v", r2.Rooms.Join)
		}
		e.send(alice, roomID, "second")
		e.send(alice, roomID, "third")
		r3 := doSync(t, alice, mautrix.ReqSync{Since: r2.NextBatch, Timeout: 1000})
		jr = r3.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatal("room missing from incremental sync")
		}
		if got := strings.Join(timelineBodies(jr.Timeline.Events), ","); got != "second,third" || jr.Timeline.Limited {
			t.Fatalf("incremental timeline = %s limited=%v", got, jr.Timeline.Limited)
		}
		if len(jr.State.Events) != 0 {
			t.Errorf("unlimited incremental sync has state %v", eventIDs(jr.State.Events))
		}
		// Transaction-less events from the Go API carry no transaction_id; age is set.
		if jr.Timeline.Events[0].Unsigned.Age <= 0 && jr.Timeline.Events[0].Unsigned.Age != 0 {
			t.Error("bad age")
		}
	})
}

// TestSyncLongPollWakes: a long-poll with a long timeout returns soon after a message
// is sent, with that message.
func TestSyncLongPollWakes(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		r1 := doSync(t, bob, mautrix.ReqSync{})
		type result struct {
			resp *mautrix.RespSync
			err  error
			at   time.Time
		}
		done := make(chan result, 1)
		go func() {
			resp, err := bob.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: r1.NextBatch, Timeout: 20000, SetPresence: event.PresenceOffline})
			done <- result{resp, err, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond)
		select {
		case r := <-done:
			t.Fatalf("long-poll returned before any event: %+v %v", r.resp, r.err)
		default:
		}
		sent := time.Now()
		e.send(alice, roomID, "wake up")
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatal(r.err)
			}
			jr := r.resp.Rooms.Join[id.RoomID(roomID)]
			if jr == nil || strings.Join(timelineBodies(jr.Timeline.Events), ",") != "wake up" {
				t.Fatalf("woken sync = %+v", r.resp.Rooms.Join)
			}
			t.Logf("long-poll woke %v after the send", r.at.Sub(sent))
			if r.at.Sub(sent) > 5*time.Second {
				t.Fatalf("long-poll took %v to wake", r.at.Sub(sent))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("long-poll not woken by a new message")
		}
	})
}

// TestSyncLimitedTimelineBackPagination: a client away while 50 messages arrive gets a
// limited timeline of the newest ones, and back-paginating from prev_batch with
// /messages returns the rest with no duplicates and no holes.
func TestSyncLimitedTimelineBackPagination(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		r1 := doSync(t, bob, mautrix.ReqSync{})
		var want []string
		for i := range 50 {
			body := fmt.Sprintf("msg %02d", i)
			// Half through HTTP (with a transaction ID), half through the Go API.
			if i%2 == 0 {
				if _, err := alice.SendText(e.ctx, id.RoomID(roomID), body); err != nil {
					t.Fatal(err)
				}
			} else {
				e.send(alice, roomID, body)
			}
			want = append(want, body)
		}
		r2 := doSync(t, bob, mautrix.ReqSync{Since: r1.NextBatch, FilterID: inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})})
		jr := r2.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !jr.Timeline.Limited {
			t.Fatalf("expected a limited timeline, got %+v", jr)
		}
		got := timelineBodies(jr.Timeline.Events)
		if strings.Join(got, ",") != strings.Join(want[45:], ",") {
			t.Fatalf("limited timeline = %v, want %v", got, want[45:])
		}
		seen := map[string]bool{}
		for _, ev := range jr.Timeline.Events {
			seen[ev.ID.String()] = true
		}
		// Back-paginate the gap.
		from := jr.Timeline.PrevBatch
		var older []string
		for page := 0; page < 20 && from != ""; page++ {
			resp, err := bob.Messages(e.ctx, id.RoomID(roomID), from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			for _, ev := range resp.Chunk {
				if seen[ev.ID.String()] {
					t.Fatalf("duplicate event %s (%v) in back-pagination", ev.ID, ev.Content.Raw["body"])
				}
				seen[ev.ID.String()] = true
				if ev.Type == event.EventMessage {
					older = append([]string{ev.Content.Raw["body"].(string)}, older...)
				}
			}
			from = resp.End
		}
		if strings.Join(older, ",") != strings.Join(want[:45], ",") {
			t.Fatalf("back-paginated %v, want %v", older, want[:45])
		}
		// The sender's own sync shows transaction_id on events sent by this device only.
		ra := doSync(t, alice, mautrix.ReqSync{FilterID: inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 2}}})})
		evs := ra.Rooms.Join[id.RoomID(roomID)].Timeline.Events
		if len(evs) != 2 || evs[0].Unsigned.TransactionID == "" || evs[1].Unsigned.TransactionID != "" {
			t.Errorf("transaction IDs: %q %q", evs[0].Unsigned.TransactionID, evs[1].Unsigned.TransactionID)
		}
		if rb := r2.Rooms.Join[id.RoomID(roomID)].Timeline.Events; rb[0].Unsigned.TransactionID != "" {
			t.Error("transaction_id leaked to another user")
		}
	})
}

// TestSyncLimitedStateDelta: when the timeline is limited, state that changed in the
// gap comes in the state section.
func TestSyncLimitedStateDelta(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		r1 := doSync(t, bob, mautrix.ReqSync{})
		e.sendState(alice, roomID, "m.room.topic", "", map[string]any{"topic": "in the gap"})
		for i := range 5 {
			e.send(alice, roomID, fmt.Sprintf("m%d", i))
		}
		r2 := doSync(t, bob, mautrix.ReqSync{Since: r1.NextBatch, FilterID: inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 2}}})})
		jr := r2.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || !jr.Timeline.Limited {
			t.Fatal("expected limited timeline")
		}
		if !hasState(jr.State.Events, "m.room.topic", "") {
			t.Fatalf("state delta lacks the topic change: %v", eventIDs(jr.State.Events))
		}
		if hasState(jr.State.Events, "m.room.create", "") {
			t.Error("state delta has the unchanged create event")
		}
	})
}

// TestSyncMembershipSections: invites with stripped invite_state, a newly joined room
// with full state and timeline, leave/kick/ban in rooms.leave, include_leave.
func TestSyncMembershipSections(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "Secret plans", Topic: "topic"})
		for i := range 3 {
			e.send(alice, roomID, fmt.Sprintf("before %d", i))
		}
		r0 := doSync(t, bob, mautrix.ReqSync{})
		e.membership("invite", alice, bob, roomID)
		r1 := doSync(t, bob, mautrix.ReqSync{Since: r0.NextBatch, Timeout: 2000})
		inv := r1.Rooms.Invite[id.RoomID(roomID)]
		if inv == nil {
			t.Fatalf("no invite: %+v", r1.Rooms)
		}
		st := inv.State.Events
		for _, typ := range []string{"m.room.create", "m.room.join_rules", "m.room.name"} {
			if !hasState(st, typ, "") {
				t.Errorf("invite_state lacks %s", typ)
			}
		}
		if !hasState(st, "m.room.member", bob.UserID.String()) || !hasState(st, "m.room.member", alice.UserID.String()) {
			t.Errorf("invite_state lacks the invite or the inviter: %v", stateKeys(st, "m.room.member"))
		}
		if hasState(st, "m.room.power_levels", "") {
			t.Error("invite_state leaks power levels")
		}
		// The create event is given in full (MSC4311): its ID and timestamp identify the room.
		for _, ev := range st {
			if ev.Type.Type == "m.room.create" && (ev.ID == "" || ev.Timestamp == 0) {
				t.Errorf("invite_state's create event is stripped: %+v", ev)
			}
		}
		// Joining: full state and timeline in the next incremental sync.
		e.membership("join", bob, nil, roomID)
		r2 := doSync(t, bob, mautrix.ReqSync{Since: r1.NextBatch, Timeout: 2000})
		jr := r2.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatal("newly joined room missing")
		}
		all := append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...)
		for _, typ := range []string{"m.room.create", "m.room.power_levels", "m.room.name"} {
			if !hasState(all, typ, "") {
				t.Errorf("newly joined room lacks %s", typ)
			}
		}
		if len(r2.Rooms.Invite) != 0 {
			t.Error("room still in invite")
		}
		// A displayname change is not a new join: no full state again.
		e.send(alice, roomID, "after join")
		r3 := doSync(t, bob, mautrix.ReqSync{Since: r2.NextBatch, Timeout: 2000})
		if jr := r3.Rooms.Join[id.RoomID(roomID)]; jr == nil || len(jr.State.Events) != 0 || strings.Join(timelineBodies(jr.Timeline.Events), ",") != "after join" {
			t.Fatalf("incremental after join = %+v", jr)
		}
		// Kicked: the room moves to leave with the kick as last event.
		e.membership("kick", alice, bob, roomID)
		e.send(alice, roomID, "after kick")
		r4 := doSync(t, bob, mautrix.ReqSync{Since: r3.NextBatch, Timeout: 2000})
		lr := r4.Rooms.Leave[id.RoomID(roomID)]
		if lr == nil || len(lr.Timeline.Events) == 0 {
			t.Fatalf("kick not in leave: %+v", r4.Rooms)
		}
		last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
		if last.Type != event.StateMember || last.Content.Raw["membership"] != "leave" {
			t.Errorf("last leave event = %s %v", last.Type.Type, last.Content.Raw)
		}
		for _, b := range timelineBodies(lr.Timeline.Events) {
			if b == "after kick" {
				t.Error("event after the kick leaked")
			}
		}
		if _, ok := r4.Rooms.Join[id.RoomID(roomID)]; ok {
			t.Error("kicked room still in join")
		}
		// Initial sync: the left room only with include_leave.
		if r := doSync(t, bob, mautrix.ReqSync{}); len(r.Rooms.Leave) != 0 {
			t.Errorf("initial sync without include_leave has leave rooms")
		}
		r5 := doSync(t, bob, mautrix.ReqSync{FilterID: inlineFilter(map[string]any{"room": map[string]any{"include_leave": true}})})
		if r5.Rooms.Leave[id.RoomID(roomID)] == nil {
			t.Error("include_leave: left room missing")
		}
		// Ban after rejoin is not possible for a private room without invite: invite, join, ban.
		e.membership("invite", alice, bob, roomID)
		e.membership("join", bob, nil, roomID)
		r6 := doSync(t, bob, mautrix.ReqSync{Since: r4.NextBatch})
		if r6.Rooms.Join[id.RoomID(roomID)] == nil {
			t.Fatal("rejoined room missing")
		}
		e.membership("ban", alice, bob, roomID)
		r7 := doSync(t, bob, mautrix.ReqSync{Since: r6.NextBatch, Timeout: 2000})
		lr = r7.Rooms.Leave[id.RoomID(roomID)]
		if lr == nil {
			t.Fatal("ban not in leave")
		}
		last = lr.Timeline.Events[len(lr.Timeline.Events)-1]
		if last.Content.Raw["membership"] != "ban" {
			t.Errorf("last event = %v", last.Content.Raw)
		}
	})
}

// TestSyncHistoryVisibility: a user joining a room with joined history visibility does
// not see events from before its join.
func TestSyncHistoryVisibility(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
		e.sendState(alice, roomID, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
		e.send(alice, roomID, "secret before join")
		e.membership("join", bob, nil, roomID)
		e.send(alice, roomID, "visible after join")
		r := doSync(t, bob, mautrix.ReqSync{})
		jr := r.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatal("room missing")
		}
		if got := strings.Join(timelineBodies(jr.Timeline.Events), ","); got != "visible after join" {
			t.Fatalf("bob sees %q", got)
		}
	})
}

// TestSyncToDeviceAndKeys: to-device messages are delivered until acknowledged by a
// later since and then deleted; device_lists.changed names a room-mate who uploads
// keys, device_lists.left one who no longer shares a room; OTK counts and fallback types.
func TestSyncToDeviceAndKeys(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, carol := e.register("alice"), e.register("bob"), e.register("carol")
		roomID := e.sharedRoom(alice, bob)
		r0 := doSync(t, bob, mautrix.ReqSync{})

		// To-device: delivered, redelivered with the same since, gone after ack.
		_, err := alice.SendToDevice(e.ctx, event.NewEventType("m.test.todevice"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob.UserID: {bob.DeviceID: {Raw: map[string]any{"n": 1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		r1 := doSync(t, bob, mautrix.ReqSync{Since: r0.NextBatch, Timeout: 2000})
		if len(r1.ToDevice.Events) != 1 || r1.ToDevice.Events[0].Sender != alice.UserID {
			t.Fatalf("to_device = %+v", r1.ToDevice.Events)
		}
		again := doSync(t, bob, mautrix.ReqSync{Since: r0.NextBatch})
		if len(again.ToDevice.Events) != 1 {
			t.Fatalf("unacknowledged to-device message not redelivered: %+v", again.ToDevice.Events)
		}
		r2 := doSync(t, bob, mautrix.ReqSync{Since: r1.NextBatch})
		if len(r2.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged to-device message delivered again")
		}
		if r3 := doSync(t, bob, mautrix.ReqSync{Since: r0.NextBatch}); len(r3.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged to-device message not deleted")
		}

		// Device lists and OTK counts.
		dev := e2eNewDev(t, alice)
		var up map[string]any
		body := map[string]any{"device_keys": dev.deviceKeys(t), "one_time_keys": dev.otks(t, "a", 3),
			"fallback_keys": map[string]any{"signed_curve25519:fb": dev.otk(t, true)}}
		if _, err := alice.MakeRequest(e.ctx, "POST", alice.BuildClientURL("v3", "keys", "upload"), body, &up); err != nil {
			t.Fatal(err)
		}
		r4 := doSync(t, bob, mautrix.ReqSync{Since: r2.NextBatch, Timeout: 2000})
		if !containsUser(r4.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("device_lists.changed = %v, want alice", r4.DeviceLists.Changed)
		}
		// Carol shares no room with alice: she does not hear of it.
		rc0 := doSync(t, carol, mautrix.ReqSync{})
		if _, err := alice.MakeRequest(e.ctx, "POST", alice.BuildClientURL("v3", "keys", "upload"), map[string]any{"device_keys": dev.deviceKeys(t)}, &up); err != nil {
			t.Fatal(err)
		}
		e2 := e2eNewDev(t, bob)
		if _, err := bob.MakeRequest(e.ctx, "POST", bob.BuildClientURL("v3", "keys", "upload"), map[string]any{"device_keys": e2.deviceKeys(t)}, &up); err != nil {
			t.Fatal(err)
		}
		if rc := doSync(t, carol, mautrix.ReqSync{Since: rc0.NextBatch}); len(rc.DeviceLists.Changed) != 0 {
			t.Errorf("carol hears of device changes of strangers: %v", rc.DeviceLists.Changed)
		}
		ra := doSync(t, alice, mautrix.ReqSync{})
		if ra.DeviceOTKCount.SignedCurve25519 != 3 {
			t.Errorf("OTK count = %+v", ra.DeviceOTKCount)
		}
		if len(ra.FallbackKeys) != 1 || ra.FallbackKeys[0] != "signed_curve25519" {
			t.Errorf("fallback key types = %v", ra.FallbackKeys)
		}
		// Alice leaves the only room she shares with bob: bob gets her in left.
		r5 := doSync(t, bob, mautrix.ReqSync{})
		e.membership("leave", alice, nil, roomID)
		r6 := doSync(t, bob, mautrix.ReqSync{Since: r5.NextBatch, Timeout: 2000})
		if !containsUser(r6.DeviceLists.Left, alice.UserID) {
			t.Errorf("device_lists.left = %v, want alice", r6.DeviceLists.Left)
		}
		// Carol joins bob's room: bob hears of carol's devices.
		e.membership("join", carol, nil, roomID)
		r7 := doSync(t, bob, mautrix.ReqSync{Since: r6.NextBatch, Timeout: 2000})
		if !containsUser(r7.DeviceLists.Changed, carol.UserID) {
			t.Errorf("device_lists.changed = %v, want carol", r7.DeviceLists.Changed)
		}
	})
}

func containsUser(list []id.UserID, u id.UserID) bool {
	for _, x := range list {
		if x == u {
			return true
		}
	}
	return false
}

// TestSyncAccountData: global and room account data arrive in their sections, and a
// write wakes a long-poll.
func TestSyncAccountData(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		r0 := doSync(t, alice, mautrix.ReqSync{})
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, _ := alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: r0.NextBatch, Timeout: 10000})
			done <- r
		}()
		time.Sleep(200 * time.Millisecond)
		if err := alice.SetAccountData(e.ctx, "org.example.global", map[string]any{"a": 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r == nil || len(r.AccountData.Events) != 1 || r.AccountData.Events[0].Type.Type != "org.example.global" {
				t.Fatalf("account data = %+v", r)
			}
			r0 = r
		case <-time.After(5 * time.Second):
			t.Fatal("account data write did not wake the long-poll")
		}
		if err := alice.SetRoomAccountData(e.ctx, id.RoomID(roomID), "org.example.room", map[string]any{"b": 2}); err != nil {
			t.Fatal(err)
		}
		r1 := doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch})
		jr := r1.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || len(jr.AccountData.Events) != 1 || jr.AccountData.Events[0].Type.Type != "org.example.room" {
			t.Fatalf("room account data = %+v", jr)
		}
		if len(r1.AccountData.Events) != 0 {
			t.Error("global account data repeated")
		}
	})
}

// TestSyncFullState: full_state=true with a since token gives the whole state but an
// incremental timeline.
func TestSyncFullState(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "full"})
		e.send(alice, roomID, "old")
		r0 := doSync(t, alice, mautrix.ReqSync{})
		e.send(alice, roomID, "new")
		r1 := doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch, FullState: true})
		jr := r1.Rooms.Join[id.RoomID(roomID)]
		if jr == nil {
			t.Fatal("room missing")
		}
		if got := strings.Join(timelineBodies(jr.Timeline.Events), ","); got != "new" {
			t.Errorf("full_state timeline = %q, want only the new message", got)
		}
		for _, typ := range []string{"m.room.create", "m.room.name", "m.room.power_levels"} {
			if !hasState(jr.State.Events, typ, "") {
				t.Errorf("full_state lacks %s", typ)
			}
		}
	})
}

// TestSyncKnock: a knock puts the room in rooms.knock with stripped knock_state.
func TestSyncKnock(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, carol := e.register("alice"), e.register("carol")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "Knock knock",
			InitialState: []roomserver.StateEvent{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "knock"}}}})
		r0 := doSync(t, carol, mautrix.ReqSync{})
		if _, err := e.srv.Rooms.Knock(e.ctx, roomserver.MembershipRequest{RoomID: roomID, Sender: carol.UserID.String()}); err != nil {
			t.Fatal(err)
		}
		r1 := doSync(t, carol, mautrix.ReqSync{Since: r0.NextBatch, Timeout: 2000})
		kr := r1.Rooms.Knock[id.RoomID(roomID)]
		if kr == nil {
			t.Fatalf("no knock: %+v", r1.Rooms)
		}
		if !hasState(kr.State.Events, "m.room.name", "") || !hasState(kr.State.Events, "m.room.member", carol.UserID.String()) {
			t.Errorf("knock_state = %v", eventIDs(kr.State.Events))
		}
		if len(r1.Rooms.Join) != 0 {
			t.Error("knocked room in join")
		}
	})
}

// TestSyncThreadNotifications: with unread_thread_notifications, thread replies are
// counted per thread in unread_thread_notifications; without it they are not split out.
func TestSyncThreadNotifications(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob := e.register("alice"), e.register("bob")
		roomID := e.sharedRoom(alice, bob)
		root := e.send(alice, roomID, "root")
		if _, err := e.srv.Rooms.SendEvent(e.ctx, roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID.String(), Type: "m.room.message",
			Content: map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}}); err != nil {
			t.Fatal(err)
		}
		get := func(f string) map[string]any {
			var out map[string]any
			u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{"filter": f, "set_presence": "offline"})
			if _, err := bob.MakeRequest(e.ctx, "GET", u, nil, &out); err != nil {
				t.Fatal(err)
			}
			return out["rooms"].(map[string]any)["join"].(map[string]any)[roomID].(map[string]any)
		}
		var jr map[string]any
		for i := 0; i < 50; i++ { // counts are computed just after the events commit
			jr = get(roomFilter(map[string]any{"timeline": map[string]any{"unread_thread_notifications": true}}))
			if th, ok := jr["unread_thread_notifications"].(map[string]any); ok && th[root] != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		th, _ := jr["unread_thread_notifications"].(map[string]any)
		if th == nil || th[root] == nil || th[root].(map[string]any)["notification_count"].(float64) != 1 {
			t.Fatalf("unread_thread_notifications = %v (unread_notifications %v)", jr["unread_thread_notifications"], jr["unread_notifications"])
		}
		if jr = get("{}"); jr["unread_thread_notifications"] != nil {
			t.Errorf("thread counts without the filter flag: %v", jr["unread_thread_notifications"])
		}
	})
}

// TestSyncUseStateAfter: with use_state_after, state_after holds the state up to the end
// of the timeline (timeline state events included) and state is omitted.
func TestSyncUseStateAfter(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice := e.register("alice")
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: "after"})
		r0 := doSync(t, alice, mautrix.ReqSync{UseStateAfter: true})
		jr := r0.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || jr.StateAfter == nil || len(jr.State.Events) != 0 {
			t.Fatalf("initial: state_after %v, state %d events", jr.StateAfter, len(jr.State.Events))
		}
		for _, typ := range []string{"m.room.create", "m.room.name", "m.room.power_levels"} {
			if !hasState(jr.StateAfter.Events, typ, "") {
				t.Errorf("initial state_after lacks %s", typ)
			}
		}
		e.sendState(alice, roomID, "m.room.topic", "", map[string]any{"topic": "new"})
		e.send(alice, roomID, "msg")
		r1 := doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch, UseStateAfter: true})
		jr = r1.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || jr.StateAfter == nil {
			t.Fatal("incremental: no state_after")
		}
		if got := stateKeys(jr.StateAfter.Events, "m.room.topic"); len(got) != 1 || len(jr.StateAfter.Events) != 1 {
			t.Errorf("incremental state_after = %v", eventIDs(jr.StateAfter.Events))
		}
		if !hasState(jr.Timeline.Events, "m.room.topic", "") {
			t.Error("topic change missing from the timeline")
		}
		// A room with only ephemeral news still carries an (empty) state_after.
		_, _ = alice.UserTyping(e.ctx, id.RoomID(roomID), true, 5*time.Second)
		r2 := doSync(t, alice, mautrix.ReqSync{Since: r1.NextBatch, UseStateAfter: true})
		if jr = r2.Rooms.Join[id.RoomID(roomID)]; jr == nil || jr.StateAfter == nil || len(jr.StateAfter.Events) != 0 {
			t.Errorf("typing-only room: %+v", jr)
		}
	})
}

// TestSyncIgnoredUsers: messages and invites from ignored users are not sent; their
// state events are.
func TestSyncIgnoredUsers(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		alice, bob, troll := e.register("alice"), e.register("bob"), e.register("troll")
		roomID := e.sharedRoom(alice, bob, troll)
		if err := alice.SetAccountData(e.ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{troll.UserID.String(): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		r0 := doSync(t, alice, mautrix.ReqSync{})
		e.send(troll, roomID, "spam")
		e.send(bob, roomID, "hello")
		e.sendState(troll, roomID, "m.room.member", troll.UserID.String(), map[string]any{"membership": "join", "displayname": "Troll"})
		r1 := doSync(t, alice, mautrix.ReqSync{Since: r0.NextBatch})
		jr := r1.Rooms.Join[id.RoomID(roomID)]
		if jr == nil || strings.Join(timelineBodies(jr.Timeline.Events), ",") != "hello" {
			t.Fatalf("alice's timeline = %v", jr)
		}
		if !hasState(jr.Timeline.Events, "m.room.member", troll.UserID.String()) {
			t.Error("state event of an ignored user dropped")
		}
		room2 := e.createRoom(troll, roomserver.CreateRoomRequest{Preset: "private_chat"})
		e.membership("invite", troll, alice, room2)
		if r := doSync(t, alice, mautrix.ReqSync{Since: r1.NextBatch}); r.Rooms.Invite[id.RoomID(room2)] != nil {
			t.Error("invite from an ignored user delivered")
		}
		if r := doSync(t, bob, mautrix.ReqSync{}); !strings.Contains(strings.Join(timelineBodies(r.Rooms.Join[id.RoomID(roomID)].Timeline.Events), ","), "spam") {
			t.Error("bob (not ignoring) lost the message")
		}
	})
}
