package test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// gwNotification is what a push gateway receives.
type gwNotification struct {
	EventID      string         `json:"event_id"`
	RoomID       string         `json:"room_id"`
	Type         string         `json:"type"`
	Sender       string         `json:"sender"`
	Prio         string         `json:"prio"`
	UserIsTarget bool           `json:"user_is_target"`
	Content      map[string]any `json:"content"`
	Counts       struct {
		Unread *int `json:"unread"`
	} `json:"counts"`
	Devices []struct {
		AppID   string                     `json:"app_id"`
		PushKey string                     `json:"pushkey"`
		Data    map[string]any             `json:"data"`
		Tweaks  map[string]json.RawMessage `json:"tweaks"`
	} `json:"devices"`
}

// testGateway is a push gateway inside the test: it records notifications and
// rejects the pushkeys in reject; it answers 500 while failing is set.
type testGateway struct {
	srv     *httptest.Server
	ch      chan gwNotification
	mu      sync.Mutex
	reject  map[string]bool
	failing int
}

func newTestGateway(t *testing.T) *testGateway {
	g := &testGateway{ch: make(chan gwNotification, 100), reject: map[string]bool{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		g.mu.Lock()
		if g.failing > 0 {
			g.failing--
			g.mu.Unlock()
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		g.mu.Unlock()
		var body struct {
			Notification gwNotification `json:"notification"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		rejected := []string{}
		g.mu.Lock()
		for _, d := range body.Notification.Devices {
			if g.reject[d.PushKey] {
				rejected = append(rejected, d.PushKey)
			}
		}
		g.mu.Unlock()
		g.ch <- body.Notification
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *testGateway) url() string { return g.srv.URL + "/_matrix/push/v1/notify" }

// next waits for the next notification (10 s).
func (g *testGateway) next(t *testing.T, what string) gwNotification {
	t.Helper()
	select {
	case n := <-g.ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("no push received for %s", what)
	}
	return gwNotification{}
}

func gwSetPusher(t *testing.T, s *harness.Server, cli *mautrix.Client, pushkey string, data map[string]any) {
	t.Helper()
	st, body := s.Do(t, "POST", "/_matrix/client/v3/pushers/set", cli.AccessToken, map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "data": data, "append": true})
	if st != 200 {
		t.Fatalf("pushers/set: %d %v", st, body)
	}
}

func TestPushGateway(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		gw := newTestGateway(t)
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
			cfg.Push.AllowPrivateAddresses = true
		}})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		gwSetPusher(t, s, alice, "alice-key", map[string]any{"url": gw.url(), "custom": "kept"})

		// A DM: bob invites alice (invite_for_me), then writes to her.
		dm := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{alice.UserID}})
		inv := gw.next(t, "the invite")
		if inv.Type != "m.room.member" || inv.RoomID != dm.String() || !inv.UserIsTarget || inv.Sender != bob.UserID.String() {
			t.Fatalf("invite push: %+v", inv)
		}
		if _, err := alice.JoinRoomByID(ctx, dm); err != nil {
			t.Fatal(err)
		}
		hello := rmSend(t, bob, dm, "hello alice?")
		n := gw.next(t, "the DM")
		if n.EventID != hello.String() || n.Prio != "high" || n.Type != "m.room.message" || n.Content["body"] != "hello alice?" {
			t.Fatalf("DM push: %+v", n)
		}
		if n.Counts.Unread == nil || *n.Counts.Unread != 2 {
			t.Fatalf("DM push unread count: %v (invite + message)", n.Counts.Unread)
		}
		if len(n.Devices) != 1 || n.Devices[0].PushKey != "alice-key" || n.Devices[0].AppID != "org.example.app" {
			t.Fatalf("DM push devices: %+v", n.Devices)
		}
		d := n.Devices[0]
		if d.Data["custom"] != "kept" || d.Data["url"] != nil {
			t.Fatalf("pusher data forwarded wrongly (custom keys kept, url dropped): %v", d.Data)
		}
		if string(d.Tweaks["sound"]) != `"default"` {
			t.Fatalf("DM tweaks: %s", d.Tweaks)
		}

		// A group room: a plain message is low priority, a mention is high with highlight.
		group := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, c := range []*mautrix.Client{alice, carol} {
			if _, err := c.JoinRoomByID(ctx, group); err != nil {
				t.Fatal(err)
			}
		}
		plain := rmSend(t, bob, group, "morning all")
		if n := gw.next(t, "the group message"); n.EventID != plain.String() || n.Prio != "low" || n.Devices[0].Tweaks["highlight"] != nil {
			t.Fatalf("group push: %+v", n)
		}
		mention, err := bob.SendMessageEvent(ctx, group, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Alice: ping",
			"m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}})
		if err != nil {
			t.Fatal(err)
		}
		n = gw.next(t, "the mention")
		if n.EventID != mention.EventID.String() || n.Prio != "high" || string(n.Devices[0].Tweaks["highlight"]) != "true" {
			t.Fatalf("mention push: %+v tweaks %s", n, n.Devices[0].Tweaks)
		}
		// Carol's message does not reach alice's gateway as carol's; bob's reaction pushes nothing.
		if _, err := bob.SendMessageEvent(ctx, group, event.EventReaction, map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": mention.EventID.String(), "key": "👍"}}); err != nil {
			t.Fatal(err)
		}

		// Muting the group with a room rule (no actions, then dont_notify): nothing is pushed.
		st, body := s.Do(t, "PUT", prPath("/global/room/"+esc(group.String())), alice.AccessToken, map[string]any{"actions": []any{}})
		if st != 200 {
			t.Fatalf("mute: %d %v", st, body)
		}
		rmSend(t, bob, group, "muted 1")
		st, body = s.Do(t, "PUT", prPath("/global/room/"+esc(group.String())+"/actions"), alice.AccessToken, map[string]any{"actions": []any{"dont_notify"}})
		if st != 200 {
			t.Fatalf("mute with dont_notify: %d %v", st, body)
		}
		rmSend(t, bob, group, "muted 2")
		marker := rmSend(t, bob, dm, "after the muted ones")
		if n := gw.next(t, "the DM after the muted messages"); n.EventID != marker.String() {
			t.Fatalf("a muted message or the reaction was pushed: %+v", n)
		}

		// event_id_only pushers get no event details.
		st, body = s.Do(t, "POST", "/_matrix/client/v3/pushers/set", alice.AccessToken, map[string]any{
			"kind": "http", "app_id": "org.example.app", "pushkey": "alice-key", "app_display_name": "Example",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gw.url(), "format": "event_id_only"}})
		if st != 200 {
			t.Fatalf("pushers/set event_id_only: %d %v", st, body)
		}
		short := rmSend(t, bob, dm, "secret")
		n = gw.next(t, "the event_id_only push")
		if n.EventID != short.String() || n.RoomID != dm.String() || n.Type != "" || n.Content != nil || n.Sender != "" || n.Counts.Unread == nil {
			t.Fatalf("event_id_only push: %+v", n)
		}
		if n.Devices[0].Data["format"] != "event_id_only" {
			t.Fatalf("format not forwarded: %v", n.Devices[0].Data)
		}

		// The gateway fails twice: the push is retried and arrives.
		gw.mu.Lock()
		gw.failing = 2
		gw.mu.Unlock()
		retried := rmSend(t, bob, dm, "retry me")
		if n := gw.next(t, "the retried push"); n.EventID != retried.String() {
			t.Fatalf("retried push: %+v", n)
		}

		// A pushkey the gateway rejects: its pusher is removed, the other one stays.
		gw.mu.Lock()
		gw.reject["doomed-key"] = true
		gw.mu.Unlock()
		gwSetPusher(t, s, alice, "doomed-key", map[string]any{"url": gw.url()})
		rmSend(t, bob, dm, "to both")
		gw.next(t, "push 1 of 2")
		gw.next(t, "push 2 of 2")
		pnEventually(t, "the rejected pusher's removal", func() bool {
			_, body := s.Do(t, "GET", "/_matrix/client/v3/pushers", alice.AccessToken, nil)
			ps := body["pushers"].([]any)
			return len(ps) == 1 && ps[0].(map[string]any)["pushkey"] == "alice-key"
		})
		last := rmSend(t, bob, dm, "only one")
		if n := gw.next(t, "the push after the removal"); n.EventID != last.String() || n.Devices[0].PushKey != "alice-key" {
			t.Fatalf("push after removal: %+v", n)
		}
		select {
		case n := <-gw.ch:
			t.Fatalf("unexpected push (to the removed pusher?): %+v", n)
		case <-time.After(500 * time.Millisecond):
		}

		// Reading the DM sends a badge update: no event, the unread count of the group only.
		if err := alice.SendReceipt(ctx, dm, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		n = gw.next(t, "the badge update")
		if n.EventID != "" || n.Counts.Unread == nil || *n.Counts.Unread != 2 || n.Devices[0].PushKey != "alice-key" {
			t.Fatalf("badge update after the receipt: %+v (unread %v, want 2: the group's message and mention)", n, n.Counts.Unread)
		}
	})
}

// TestPushSurvivesRestart: a push that could not be delivered before shutdown is sent
// after the next start.
func TestPushSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	gw := newTestGateway(t)
	s := harness.Start(t, harness.Options{Configure: func(cfg *config.Config) {
		cfg.Push.AllowPrivateAddresses = true
	}})
	alice := udRegister(t, s, "alice")
	bob := udRegister(t, s, "bob")
	gwSetPusher(t, s, alice, "alice-key", map[string]any{"url": gw.url()})
	room := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := alice.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	gw.mu.Lock()
	gw.failing = 1000
	gw.mu.Unlock()
	ev := rmSend(t, bob, room, "deliver me later")
	time.Sleep(1500 * time.Millisecond) // at least one failed attempt
	s.Restart()
	gw.mu.Lock()
	gw.failing = 0
	gw.mu.Unlock()
	if n := gw.next(t, "the push after restart"); n.EventID != ev.String() {
		t.Fatalf("push after restart: %+v", n)
	}
}

// TestPusherGoesWithItsDevice: logging a device out removes the pusher it set.
func TestPusherGoesWithItsDevice(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		gw := newTestGateway(t)
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
			cfg.Push.AllowPrivateAddresses = true
		}})
		alice := udRegister(t, s, "alice")
		phone := udLogin(t, s, "alice", "phone")
		bob := udRegister(t, s, "bob")
		gwSetPusher(t, s, alice, "laptop-key", map[string]any{"url": gw.url()})
		gwSetPusher(t, s, phone, "phone-key", map[string]any{"url": gw.url()})
		_, body := s.Do(t, "GET", "/_matrix/client/v3/pushers", alice.AccessToken, nil)
		if len(body["pushers"].([]any)) != 2 {
			t.Fatalf("pushers: %v", body)
		}
		if _, err := phone.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		_, body = s.Do(t, "GET", "/_matrix/client/v3/pushers", alice.AccessToken, nil)
		ps := body["pushers"].([]any)
		if len(ps) != 1 || ps[0].(map[string]any)["pushkey"] != "laptop-key" {
			t.Fatalf("pushers after the phone logged out: %v", body)
		}
		room := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := alice.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		ev := rmSend(t, bob, room, "hi")
		if n := gw.next(t, "the push"); n.EventID != ev.String() || n.Devices[0].PushKey != "laptop-key" {
			t.Fatalf("push: %+v", n)
		}
		select {
		case n := <-gw.ch:
			t.Fatalf("push to the logged-out device: %+v", n)
		case <-time.After(500 * time.Millisecond):
		}
	})
}
