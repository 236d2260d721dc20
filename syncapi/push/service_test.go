package push

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func newTestService(t *testing.T, db *storage.DB, rooms Rooms) *Service {
	cfg := config.Default()
	cfg.ServerName = "test"
	return New(db, rooms, cfg)
}

func (f *fakeRooms) add(ev *roomserver.Event) *roomserver.Event {
	f.events[ev.EventID()] = ev
	return ev
}

// TestProcessTargetsAndCounts drives the evaluation path with real events: who is
// evaluated (local joined members but the sender, a local invitee), thread counts,
// receipts that arrived before the evaluation, and leaving.
func TestProcessTargetsAndCounts(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rooms := newFakeRoomsOf(t, bob, alice, "@remote:elsewhere", "@carol:test")
		s := newTestService(t, db, rooms)
		pos := int64(100)
		send := func(ev *roomserver.Event) {
			t.Helper()
			pos++
			ev.StreamPos = pos
			rooms.add(ev)
			if err := s.process(ctx, roomserver.OutputEvent{Event: ev, StreamPos: pos}); err != nil {
				t.Fatal(err)
			}
		}
		counts := func(user string) Counts {
			t.Helper()
			m, err := s.UnreadCounts(ctx, user, []string{testRoom})
			if err != nil {
				t.Fatal(err)
			}
			return m[testRoom]
		}
		msg1 := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg("hello"))}
		send(msg1)
		if c := counts(alice); c.Notifications != 1 || c.Highlights != 0 || c.Main.Notifications != 1 {
			t.Fatalf("alice after a message: %+v", c)
		}
		if c := counts(bob); c.Notifications != 0 {
			t.Fatalf("the sender was notified: %+v", c)
		}
		if c := counts("@remote:elsewhere"); c.Notifications != 0 {
			t.Fatalf("a remote user was evaluated: %+v", c)
		}
		// A mention in a thread: counted in the thread and in the room total.
		threaded := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x",
			"m.mentions":   map[string]any{"user_ids": []string{alice}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": msg1.EventID()}}),
			RelType: "m.thread", RelatesTo: msg1.EventID()}
		send(threaded)
		c := counts(alice)
		if c.Notifications != 2 || c.Highlights != 1 || c.Main.Notifications != 1 || c.Threads[msg1.EventID()].Highlights != 1 {
			t.Fatalf("alice after a threaded mention: %+v", c)
		}
		// An invite for dave (not joined) notifies him.
		dave := "@dave:test"
		send(&roomserver.Event{PDU: buildPDU(t, bob, spec.MRoomMember, &dave, map[string]any{"membership": "invite"}), Membership: spec.Invite})
		if c := counts(dave); c.Notifications != 1 {
			t.Fatalf("invitee: %+v", c)
		}
		// A receipt already stored at a later position: the event is read at once.
		if err := s.MarkRead(ctx, "@carol:test", testRoom, "", pos+1); err != nil {
			t.Fatal(err)
		}
		send(&roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg("late"))})
		if c := counts("@carol:test"); c.Notifications != 0 {
			t.Fatalf("carol's receipt ahead of the evaluation ignored: %+v", c)
		}
		// MarkReadAt by event ID, threaded.
		if err := s.MarkReadAt(ctx, alice, testRoom, threaded.EventID(), msg1.EventID()); err != nil {
			t.Fatal(err)
		}
		if c := counts(alice); c.Highlights != 0 || c.Notifications != 2 || len(c.Threads) != 0 {
			t.Fatalf("alice after reading the thread: %+v", c)
		}
		// Leaving the room reads it.
		send(&roomserver.Event{PDU: buildPDU(t, alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "leave"}), Membership: spec.Leave})
		if c := counts(alice); c.Notifications != 0 {
			t.Fatalf("alice after leaving: %+v", c)
		}
		// GET /notifications data: newest first, with read flags and actions.
		page, err := s.Notifications(ctx, alice, "", 10, false)
		if err != nil || len(page.Notifications) != 3 {
			t.Fatalf("notifications: %+v %v", page, err)
		}
		if page.Notifications[1].EventID != threaded.EventID() || !page.Notifications[1].Highlight || !page.Notifications[1].Read {
			t.Fatalf("threaded notification: %+v", page.Notifications[1])
		}
		if _, err := s.Notifications(ctx, alice, "x", 10, false); !errors.Is(err, ErrBadToken) {
			t.Fatalf("bad token: %v", err)
		}
	})
}

// TestRulesAPI covers placement, updates, deletion and the m.push_rules account data.
func TestRulesAPI(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, newFakeRoomsOf(t, bob))
		put := func(id, before, after string) error {
			return s.PutRule(ctx, alice, KindOverride, customRule(t, KindOverride, id, `["notify"]`, nil, nil), before, after)
		}
		for _, step := range []struct{ id, before, after string }{{"a", "", ""}, {"b", "", ""}, {"c", "a", ""}, {"d", "", "b"}, {"a", "", "d"}} {
			if err := put(step.id, step.before, step.after); err != nil {
				t.Fatalf("put %+v: %v", step, err)
			}
		}
		rs, _ := s.Rules(ctx, alice)
		var ids []string
		for _, r := range rs.Override[:6] {
			ids = append(ids, r.RuleID)
		}
		if want := []string{".m.rule.master", "b", "d", "a", "c", ".m.rule.suppress_notices"}; !equal(ids, want) {
			t.Fatalf("order %v, want %v", ids, want)
		}
		if err := put("e", "nope", ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown anchor: %v", err)
		}
		var inv *ErrInvalid
		if err := put("e", ".m.rule.master", ""); !errors.As(err, &inv) {
			t.Fatalf("default anchor: %v", err)
		}
		if err := s.DeleteRule(ctx, alice, KindOverride, ".m.rule.master"); !errors.Is(err, ErrDefaultRule) {
			t.Fatalf("delete default: %v", err)
		}
		if err := s.DeleteRule(ctx, alice, KindUnderride, "a"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete of another kind: %v", err)
		}
		if err := s.SetEnabled(ctx, alice, KindOverride, ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		ad, err := storage.GetAccountData(ctx, db, alice, "", "m.push_rules")
		if err != nil || !strings.Contains(string(ad), `"rule_id":".m.rule.master","default":true,"enabled":true`) {
			t.Fatalf("m.push_rules account data: %s %v", ad, err)
		}
		// The evaluation cache sees the change at once.
		rsets, _ := s.rulesetsOf(ctx, []string{alice})
		if !rsets[alice].Find(KindOverride, ".m.rule.master").Enabled {
			t.Fatal("cached ruleset is stale")
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGatewayAddressChecks(t *testing.T) {
	for _, c := range []struct {
		url     string
		private bool
		ok      bool
	}{
		{"https://push.example.com/_matrix/push/v1/notify", false, true},
		{"https://push.example.com/_matrix/push/v1/notify/", false, false},
		{"ftp://push.example.com/_matrix/push/v1/notify", false, false},
		{"https://127.0.0.1/_matrix/push/v1/notify", false, false},
		{"https://127.0.0.1/_matrix/push/v1/notify", true, true},
		{"https://[::1]/_matrix/push/v1/notify", false, false},
		{"https://10.1.2.3/_matrix/push/v1/notify", false, false},
		{"https://169.254.169.254/_matrix/push/v1/notify", false, false},
		{"https://localhost/_matrix/push/v1/notify", false, false},
		{"https://user:pw@push.example.com/_matrix/push/v1/notify", false, false},
		{"/_matrix/push/v1/notify", false, false},
	} {
		if err := CheckGatewayURL(c.url, c.private); (err == nil) != c.ok {
			t.Errorf("CheckGatewayURL(%q, %v) = %v", c.url, c.private, err)
		}
	}
	for addr, public := range map[string]bool{"8.8.8.8": true, "2001:4860::8888": true, "127.0.0.1": false, "10.0.0.1": false,
		"192.168.1.1": false, "172.16.0.1": false, "100.64.0.1": false, "169.254.1.1": false, "::ffff:127.0.0.1": false,
		"fd00::1": false, "fe80::1": false, "0.0.0.0": false, "224.0.0.1": false} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != public {
			t.Errorf("publicAddr(%s) = %v", addr, got)
		}
	}
	// The dialer refuses loopback after resolution (a name could point anywhere).
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	defer gw.Close()
	cfg := config.Default().Push
	client := newGatewayClient(cfg)
	req, _ := http.NewRequest(http.MethodPost, gw.URL+NotifyPath, nil)
	if _, err := client.Do(req); err == nil || !errors.Is(err, errForbiddenAddress) {
		t.Fatalf("loopback gateway reached with private addresses refused: %v", err)
	}
	cfg.AllowPrivateAddresses = true
	req, _ = http.NewRequest(http.MethodPost, gw.URL+NotifyPath, nil)
	resp, err := newGatewayClient(cfg).Do(req)
	if err != nil {
		t.Fatalf("loopback gateway with private addresses allowed: %v", err)
	}
	resp.Body.Close()
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, w := range want {
		if got := backoff(i+1, time.Minute); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := backoff(40, 10*time.Minute); got != 10*time.Minute {
		t.Errorf("backoff not capped: %v", got)
	}
}

// TestProcessBatch runs the worker's batched path: the notifications of a batch are
// written together, yet a member who joins mid-batch is notified from their join on,
// one who leaves mid-batch has read what came before, and messages between state
// changes share one room context.
func TestProcessBatch(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		carol, dave := "@carol:test", "@dave:test"
		rooms := newFakeRoomsOf(t, bob)
		member := func(u, membership string) *roomserver.Event {
			return &roomserver.Event{PDU: buildPDU(t, u, spec.MRoomMember, sk(u), map[string]any{"membership": membership}), Membership: membership}
		}
		// Positions: 1 msg, 2 msg, 3 dave joins, 4 msg, 5 alice leaves, 6 msg.
		rooms.joined = map[*roomserver.Event][2]int64{
			member(bob, "join"): {0, 0}, member(carol, "join"): {0, 0},
			member(alice, "join"): {0, 5}, member(dave, "join"): {3, 0},
		}
		s := newTestService(t, db, rooms)
		var batch []roomserver.OutputEvent
		add := func(ev *roomserver.Event, stateChanged bool) *roomserver.Event {
			pos := int64(len(batch) + 1)
			ev.StreamPos = pos
			rooms.add(ev)
			batch = append(batch, roomserver.OutputEvent{Event: ev, StreamPos: pos, StateChanged: stateChanged})
			return ev
		}
		message := func(body string) *roomserver.Event {
			return add(&roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg(body))}, false)
		}
		m1, m2 := message("one"), message("two")
		add(member(dave, "join"), true)
		m4 := message("four")
		add(member(alice, "leave"), true)
		m6 := message("six")
		s.processBatch(ctx, batch)

		notified := func(user string) (ids []string, unread int) {
			t.Helper()
			page, err := s.Notifications(ctx, user, "", 10, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range page.Notifications {
				ids = append(ids, n.EventID)
				if !n.Read {
					unread++
				}
			}
			return ids, unread
		}
		if ids, unread := notified(alice); !equal(ids, []string{m4.EventID(), m2.EventID(), m1.EventID()}) || unread != 0 {
			t.Fatalf("alice (left at 5): %v, %d unread", ids, unread)
		}
		if ids, unread := notified(dave); !equal(ids, []string{m6.EventID(), m4.EventID()}) || unread != 2 {
			t.Fatalf("dave (joined at 3): %v, %d unread", ids, unread)
		}
		if ids, _ := notified(carol); len(ids) != 4 {
			t.Fatalf("carol: %v", ids)
		}
		if ids, _ := notified(bob); len(ids) != 0 {
			t.Fatalf("the sender was notified: %v", ids)
		}
		// Members loaded for: 1 (2 shares it), 3, 4, 5, 6.
		if rooms.membersCalls != 5 {
			t.Fatalf("room members loaded %d times", rooms.membersCalls)
		}
	})
}
