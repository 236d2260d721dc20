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
	t   *testing.T
	srv *app.Server
	hs  *httptest.Server
	ctx context.Context
}

func startSyncEnv(t *testing.T, engine string) *syncEnv {
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
		if ev.Type == event.EventMessage {
			out = append(out, ev.Content.Raw["body"].(string))
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

var _ = fmt.Sprintf
