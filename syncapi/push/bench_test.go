package push

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// fakeRooms serves a room of n joined members from memory.
type fakeRooms struct {
	members []*roomserver.Event
	pl      *roomserver.Event
	events  map[string]*roomserver.Event
	// joined, when set, replaces members: each member's joined stream range
	// [from, to) (to 0: still joined), so Members depends on AtStream.
	joined       map[*roomserver.Event][2]int64
	membersCalls int
	// stream is the room event stream (events in stream order, up to streamPos): what
	// the service catches up from at start.
	streamMu  sync.Mutex
	stream    []*roomserver.Event
	streamPos int64
}

// commit appends events to the stream (their StreamPos set) and moves its position.
func (f *fakeRooms) commit(evs ...*roomserver.Event) {
	f.streamMu.Lock()
	defer f.streamMu.Unlock()
	for _, ev := range evs {
		f.stream = append(f.stream, ev)
		f.streamPos = max(f.streamPos, ev.StreamPos)
	}
}

func (f *fakeRooms) StreamPosition() int64 {
	f.streamMu.Lock()
	defer f.streamMu.Unlock()
	return f.streamPos
}

func (f *fakeRooms) EventsInStream(_ context.Context, from, to int64, limit int) ([]*roomserver.Event, int64, error) {
	f.streamMu.Lock()
	defer f.streamMu.Unlock()
	var out []*roomserver.Event
	for _, ev := range f.stream {
		if ev.StreamPos > from && ev.StreamPos <= to && len(out) < limit {
			out = append(out, ev)
		}
	}
	return out, roomserver.StreamReached(out, to, limit), nil
}

func newFakeRooms(tb testing.TB, n int) *fakeRooms {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("@user%04d:test", i)
	}
	return newFakeRoomsOf(tb, users...)
}

func newFakeRoomsOf(tb testing.TB, users ...string) *fakeRooms {
	f := &fakeRooms{events: map[string]*roomserver.Event{}}
	for i, u := range users {
		f.members = append(f.members, &roomserver.Event{PDU: buildPDU(tb, u, spec.MRoomMember, &u,
			map[string]any{"membership": "join", "displayname": fmt.Sprintf("User Number %d", i)}), Membership: spec.Join})
	}
	f.pl = &roomserver.Event{PDU: buildPDU(tb, users[0], spec.MRoomPowerLevels, sk(""),
		map[string]any{"users": map[string]any{users[0]: 100}, "users_default": 0})}
	return f
}

func (f *fakeRooms) Members(_ context.Context, req roomserver.MembersRequest) ([]*roomserver.Event, error) {
	f.membersCalls++
	if f.joined == nil {
		return f.members, nil
	}
	var out []*roomserver.Event
	for m, r := range f.joined {
		if req.AtStream >= r[0] && (r[1] == 0 || req.AtStream < r[1]) {
			out = append(out, m)
		}
	}
	return out, nil
}

func (f *fakeRooms) StateEventAt(_ context.Context, _ string, typ, _ string, _ bool) (*roomserver.Event, error) {
	if typ == spec.MRoomPowerLevels {
		return f.pl, nil
	}
	return nil, nil
}

func (f *fakeRooms) RoomVersion(context.Context, string) (gomatrixserverlib.RoomVersion, error) {
	return gomatrixserverlib.RoomVersionV11, nil
}

func (f *fakeRooms) Events(_ context.Context, ids []string) (map[string]*roomserver.Event, error) {
	out := map[string]*roomserver.Event{}
	for _, id := range ids {
		if ev := f.events[id]; ev != nil {
			out[id] = ev
		}
	}
	return out, nil
}

// BenchmarkEvaluate1000Members evaluates one message for 1,000 members (rulesets
// cached, as in steady state): the CPU cost of push rule evaluation alone.
func BenchmarkEvaluate1000Members(b *testing.B) {
	const n = 1000
	rulesets := make([]*Ruleset, n)
	users := make([]string, n)
	for i := range rulesets {
		users[i] = fmt.Sprintf("@user%04d:test", i)
		rulesets[i] = Build(users[i], nil)
	}
	msgJSON := buildPDU(b, "@user0000:test", "m.room.message", nil, map[string]any{"msgtype": "m.text",
		"body": "Good morning everyone, the deploy is done", "m.mentions": map[string]any{"user_ids": []string{"@user0007:test"}}}).JSON()
	legacyJSON := buildPDU(b, "@user0000:test", "m.room.message", nil, map[string]any{"msgtype": "m.text",
		"body": "Good morning everyone, user7 and User Number 8: the deploy is done"}).JSON()
	for _, c := range []struct {
		name string
		js   []byte
	}{{"m.mentions", msgJSON}, {"legacy-body", legacyJSON}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			notified := 0
			cpu := startCPU()
			for b.Loop() {
				ev, err := NewEvent(c.js)
				if err != nil {
					b.Fatal(err)
				}
				ev.MemberCount = n
				ev.SetPowerLevels([]byte(`{"users":{"@user0000:test":100}}`), nil)
				ev.DisplayName = func(u string) string { return "User Number " + u[5:9] }
				notified = 0
				for i, rs := range rulesets {
					if _, a := rs.Evaluate(ev, User{UserID: users[i]}); a.Notify {
						notified++
					}
				}
			}
			cpu.report(b)
			if notified != n {
				b.Fatalf("notified %d of %d", notified, n)
			}
		})
	}
}

// BenchmarkProcess1000Members runs the whole per-event path for a room of 1,000 local
// members on SQLite: room context, rule evaluation, and the notification rows (one
// transaction). Rulesets are cached after the first event.
func BenchmarkProcess1000Members(b *testing.B) {
	const n = 1000
	db := storagetest.Open(b, benchEngine())
	cfg := config.Default()
	cfg.ServerName = "test"
	rooms := newFakeRooms(b, n)
	s := New(db, rooms, cfg)
	msg := &roomserver.Event{PDU: buildPDU(b, "@user0000:test", "m.room.message", nil,
		map[string]any{"msgtype": "m.text", "body": "hello everyone"})}
	ctx := context.Background()
	pos := int64(1)
	// Warm the rules cache (steady state: rulesets are cached).
	if err := s.process(ctx, roomserver.OutputEvent{Event: msg, StreamPos: pos}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		pos++
		// A distinct event ID per iteration is not needed for the work done, but the
		// rows must not conflict: vary the stream position and clear the table.
		b.StopTimer()
		c0 := processCPU()
		if _, err := db.ExecContext(ctx, `DELETE FROM push_notification_sets`); err != nil {
			b.Fatal(err)
		}
		cpu.start += processCPU() - c0 // not part of the measured work
		b.StartTimer()
		if err := s.process(ctx, roomserver.OutputEvent{Event: msg, StreamPos: pos}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu.report(b)
	rows := countNotifications(b, db)
	if rows != n-1 {
		b.Fatalf("%d notification rows, want %d", rows, n-1)
	}
}

// cpuClock measures the process's CPU time: on a shared, loaded machine wall time per
// operation says little, CPU time per operation is the cost.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
	}
}

// benchEngine is the database of BenchmarkProcess1000Members: MYELIN_BENCH_ENGINE
// (sqlite by default, or postgres).
func benchEngine() string {
	if e := os.Getenv("MYELIN_BENCH_ENGINE"); e != "" {
		return e
	}
	return "sqlite"
}

// BenchmarkProcessBatch32Members runs the push worker over batches of 64 messages in
// rooms of 32 local members on SQLite (the shape of `myelin-load send -concurrency 32
// -rooms 100`): evaluation and notification rows for 31 users per message, messages
// spread over 100 rooms. The reported cpu-ns/msg is per message.
func BenchmarkProcessBatch32Members(b *testing.B) {
	const n, batchSize, nRooms = 32, 64, 100
	db := storagetest.Open(b, benchEngine())
	cfg := config.Default()
	cfg.ServerName = "test"
	rooms := newFakeRooms(b, n)
	s := New(db, rooms, cfg)
	ctx := context.Background()
	pos := int64(0)
	batch := func() []roomserver.OutputEvent {
		out := make([]roomserver.OutputEvent, batchSize)
		for i := range out {
			pos++
			room := fmt.Sprintf("!room%03d:test", pos%nRooms)
			out[i] = roomserver.OutputEvent{StreamPos: pos, Event: &roomserver.Event{PDU: buildPDUIn(b, room, "@user0000:test", "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": fmt.Sprint("hello everyone ", pos)})}}
		}
		return out
	}
	s.processBatch(ctx, batch()) // warm the rules cache
	b.ReportAllocs()
	cpu := startCPU()
	events := 0
	for b.Loop() {
		b.StopTimer()
		c0 := processCPU()
		evs := batch()
		cpu.start += processCPU() - c0 // building the events is not part of the work
		b.StartTimer()
		s.processBatch(ctx, evs)
		events += len(evs)
	}
	b.StopTimer()
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-cpu.start)/float64(events), "cpu-ns/msg")
	}
	rows := countNotifications(b, db)
	if rows != (events+batchSize)*(n-1) {
		b.Fatalf("%d notification rows, want %d", rows, (events+batchSize)*(n-1))
	}
}

// countNotifications counts the stored notifications (entries of every set).
func countNotifications(tb testing.TB, db *storage.DB) int {
	rows, err := db.QueryContext(context.Background(), `SELECT entries FROM push_notification_sets`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var js string
		var entries []json.RawMessage
		if err := rows.Scan(&js); err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal([]byte(js), &entries); err != nil {
			tb.Fatal(err)
		}
		n += len(entries)
	}
	return n
}
