package push

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// countingGateway is a push gateway that counts the pushes per event ID.
type countingGateway struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int
}

func newCountingGateway(t *testing.T) *countingGateway {
	g := &countingGateway{got: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification struct {
				EventID string `json:"event_id"`
			} `json:"notification"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got[body.Notification.EventID]++
		g.mu.Unlock()
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *countingGateway) counts() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.got))
	for k, v := range g.got {
		out[k] = v
	}
	return out
}

// TestCatchUpAfterCrash: the events committed after the stored push position (a crash
// came before their notifications were written, evaluated or not) are evaluated at the
// next start, in stream order and once each, also those that reach OnNewEvent as well
// during the catch-up; their pushes are queued once; the counts in memory agree with
// the rows; events from before the first start are never evaluated.
func TestCatchUpAfterCrash(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		gw := newCountingGateway(t)
		cfg := config.Default()
		cfg.ServerName = "test"
		cfg.Push.AllowPrivateAddresses = true
		rooms := newFakeRoomsOf(t, bob, alice)
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.UpsertPusher(ctx, tx, storage.Pusher{UserID: alice, Kind: "http", AppID: "app", PushKey: "key",
				Data: json.RawMessage(`{"url":"` + gw.srv.URL + NotifyPath + `"}`)}, true)
		}); err != nil {
			t.Fatal(err)
		}
		pos := int64(10)
		message := func(body string) *roomserver.Event {
			pos++
			ev := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg(body))}
			ev.StreamPos = pos
			return rooms.add(ev)
		}
		out := func(ev *roomserver.Event) roomserver.OutputEvent {
			return roomserver.OutputEvent{Event: ev, StreamPos: ev.StreamPos}
		}
		unread := func(s *Service) int {
			t.Helper()
			m, err := s.UnreadCounts(ctx, alice, []string{testRoom})
			if err != nil {
				t.Fatal(err)
			}
			return m[testRoom].Notifications
		}
		history := message("before the first start")
		rooms.commit(history)

		// The first start; its writes never happen (held back, then the crash).
		s1 := New(db, rooms, cfg)
		s1.writeDelay = time.Hour
		s1.Start(ctx)
		if err := s1.WaitEvaluated(ctx, history.StreamPos); err != nil {
			t.Fatal(err)
		}
		m1, m2 := message("one"), message("two")
		rooms.commit(m1, m2)
		s1.OnNewEvent(out(m1))
		s1.OnNewEvent(out(m2))
		if err := s1.WaitEvaluated(ctx, m2.StreamPos); err != nil {
			t.Fatal(err)
		}
		if n := unread(s1); n != 2 {
			t.Fatalf("unread before the crash: %d, want 2", n)
		}
		// Committed too, but the process dies before it hears of them.
		m3, m4 := message("three"), message("four")
		rooms.commit(m3, m4)
		s1.sender.Close() // the crash: nothing of s1 runs on (its writer sleeps)
		if n := countNotifications(t, db); n != 0 {
			t.Fatalf("%d notifications written before the crash", n)
		}

		// The restart. Alice's counts are loaded before the catch-up; m3 and m4 also
		// reach OnNewEvent (published while the catch-up reads them), m5 only there.
		s2 := New(db, rooms, cfg)
		if n := unread(s2); n != 0 {
			t.Fatalf("unread at the restart, before the catch-up: %d", n)
		}
		s2.OnNewEvent(out(m3))
		s2.OnNewEvent(out(m4))
		m5 := message("five")
		s2.OnNewEvent(out(m5))
		s2.Start(ctx)
		rooms.commit(m5)
		if err := s2.WaitFor(ctx, m5.StreamPos); err != nil {
			t.Fatal(err)
		}
		want := []string{m5.EventID(), m4.EventID(), m3.EventID(), m2.EventID(), m1.EventID()}
		page, err := s2.Notifications(ctx, alice, "", 20, false)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range page.Notifications {
			got = append(got, n.EventID)
		}
		if !equal(got, want) {
			t.Fatalf("notifications after the catch-up: %v, want %v (history %s)", got, want, history.EventID())
		}
		if n := countNotifications(t, db); n != 5 {
			t.Fatalf("%d notifications stored, want 5 (each once)", n)
		}
		if n := unread(s2); n != 5 {
			t.Fatalf("unread in memory after the catch-up: %d, want 5", n)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(gw.counts()) < 5 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		s2.Close()
		if p, ok, err := storage.PushPosition(ctx, db); err != nil || !ok || p != m5.StreamPos {
			t.Fatalf("push position after a clean stop: %d %v %v, want %d", p, ok, err, m5.StreamPos)
		}

		// Another start: nothing to catch up, the counts come from the rows.
		s3 := New(db, rooms, cfg)
		s3.Start(ctx)
		defer s3.Close()
		if n := unread(s3); n != 5 {
			t.Fatalf("unread after another restart: %d, want 5", n)
		}
		time.Sleep(300 * time.Millisecond) // room for a second push of any of them
		pushes := gw.counts()
		for _, id := range want {
			if pushes[id] != 1 {
				t.Errorf("event %s pushed %d times, want once", id, pushes[id])
			}
		}
		if len(pushes) != len(want) {
			t.Errorf("pushes: %v, want one for each of %v", pushes, want)
		}
	})
}
