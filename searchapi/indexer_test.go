package searchapi

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

const testServer = "test.example"

func newRooms(t testing.TB, db *storage.DB) *roomserver.Roomserver {
	t.Helper()
	k, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(context.Background(), db, roomserver.Config{ServerName: testServer, KeyID: k.ID,
		PrivateKey: k.Private, DefaultRoomVersion: "11"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

func send(t testing.TB, rs *roomserver.Roomserver, room, sender, evType string, content map[string]any) string {
	t.Helper()
	ev, err := rs.SendEvent(context.Background(), roomserver.SendRequest{RoomID: room, Sender: sender, Type: evType, Content: content})
	if err != nil {
		t.Fatal(err)
	}
	return ev.EventID()
}

// The index follows the stream across restarts of the service (its position is
// stored), indexes names and topics under their keys, and forgets redacted events.
func TestIndexer(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRooms(t, db)
		alice := "@alice:" + testServer
		room, err := rs.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: alice, Name: "Kiwi club", Topic: "all about kiwis"})
		if err != nil {
			t.Fatal(err)
		}
		msg := send(t, rs, room, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "I like kiwi fruit"})
		s := New(db, rs)
		ids := func(keys ...string) []string {
			res, err := s.Search(ctx, Request{UserID: alice, Term: "kiwi", Keys: keys, Order: OrderRecent})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, ev := range res.Events {
				out = append(out, ev.Type())
			}
			return out
		}
		if got := fmt.Sprint(ids()); got != "[m.room.message m.room.topic m.room.name]" {
			t.Fatalf("all keys: %s", got)
		}
		if got := fmt.Sprint(ids(KeyName)); got != "[m.room.name]" {
			t.Fatalf("name key: %s", got)
		}
		// A second service (a restart) continues from the stored position.
		send(t, rs, room, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "kiwis again"})
		s = New(db, rs)
		if got := len(ids(KeyBody)); got != 2 {
			t.Fatalf("after restart: %d bodies", got)
		}
		if _, err := rs.SendEvent(ctx, roomserver.SendRequest{RoomID: room, Sender: alice, Type: "m.room.redaction", Redacts: msg, Content: map[string]any{"redacts": msg}}); err != nil {
			t.Fatal(err)
		}
		if got := len(ids(KeyBody)); got != 1 {
			t.Fatalf("after redaction: %d bodies", got)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM search_events WHERE event_id = $1`, msg).Scan(&n); err != nil || n != 0 {
			t.Fatalf("redacted event still indexed: %d %v", n, err)
		}
	})
}

// BenchmarkCatchUp is the indexer's cost per new message (read from the stream,
// parsed, written to the index), on SQLite.
func BenchmarkCatchUp(b *testing.B) {
	db := storagetest.Open(b, "sqlite")
	rs := newRooms(b, db)
	alice := "@alice:" + testServer
	room, err := rs.CreateRoom(context.Background(), roomserver.CreateRoomRequest{Creator: alice})
	if err != nil {
		b.Fatal(err)
	}
	s := New(db, rs)
	if err := s.CatchUp(context.Background()); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		send(b, rs, room, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d about the weather and other things", i)})
	}
	b.ResetTimer()
	before := cpuTime()
	if err := s.CatchUp(context.Background()); err != nil {
		b.Fatal(err)
	}
	// Process CPU time (user+system), less noisy than wall time on a shared machine.
	b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/event")
}

func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
