package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// benchDB opens a fresh database for a benchmark; sync is SQLite's synchronous mode.
func benchDB(b *testing.B, engine, sync string) *storage.DB {
	b.Helper()
	if engine == "postgres" {
		storagetest.RequirePostgres(b)
	}
	cfg := config.Default().Database
	cfg.DSN = storagetest.DSN(b, engine)
	cfg.SQLiteSynchronous = sync
	db, err := storage.Open(context.Background(), cfg, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// processCPU returns the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU per operation since start: on the shared machine
// wall time mostly measures the other load, CPU time what the work costs.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/event")
}

var benchEngines = []struct{ name, engine, sync string }{
	{"sqlite", "sqlite", "normal"},
	{"sqlite-full", "sqlite", "full"},
	{"postgres", "postgres", ""},
}

// BenchmarkSendOneRoom measures messages persisted per second into one room (one
// writer at a time: every event waits for its commit before the next is built).
func BenchmarkSendOneRoom(b *testing.B) {
	for _, e := range benchEngines {
		b.Run(e.name, func(b *testing.B) {
			rs := newRS(b, benchDB(b, e.engine, e.sync))
			alice := user("alice")
			roomID := mustCreate(b, rs, CreateRoomRequest{Creator: alice})
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: msg("hello")}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkSendOneRoomConcurrent measures messages per second into one room from 50
// concurrent callers (their events are built as chains and committed together).
func BenchmarkSendOneRoomConcurrent(b *testing.B) {
	for _, e := range benchEngines {
		b.Run(e.name, func(b *testing.B) {
			rs := newRS(b, benchDB(b, e.engine, e.sync))
			alice := user("alice")
			roomID := mustCreate(b, rs, CreateRoomRequest{Creator: alice})
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: msg("hello")}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkSend100Rooms measures messages per second across 100 rooms from 100
// concurrent callers (one per room), the group-commit case.
func BenchmarkSend100Rooms(b *testing.B) {
	for _, e := range benchEngines {
		b.Run(e.name, func(b *testing.B) {
			rs := newRS(b, benchDB(b, e.engine, e.sync))
			const rooms = 100
			ids := make([]string, rooms)
			senders := make([]string, rooms)
			for i := range ids {
				senders[i] = user(fmt.Sprint("u", i))
				ids[i] = mustCreate(b, rs, CreateRoomRequest{Creator: senders[i]})
			}
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			cpu := processCPU()
			for w := range rooms {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						// As PUT /send does: an idempotent send with the raw request body.
						if _, err := rs.SendEvent(ctx, SendRequest{RoomID: ids[w], Sender: senders[w], Type: "m.room.message",
							Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`),
							TxnID:   fmt.Sprint("t", n), DeviceID: "DEV", TxnScope: "send:" + ids[w]}); err != nil {
							b.Error(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			reportCPU(b, cpu)
		})
	}
}

// bulkJoin joins many users to a public room quickly: the joins are built on top of
// each other and persisted through the normal write path, 500 per transaction.
func bulkJoin(tb testing.TB, rs *Roomserver, roomID string, users []string) {
	tb.Helper()
	ctx := context.Background()
	r, err := rs.room(ctx, roomID)
	if err != nil {
		tb.Fatal(err)
	}
	for len(users) > 0 {
		n := min(500, len(users))
		batch := users[:n]
		users = users[n:]
		head := r.head.Load()
		auth, err := rs.authEventsFor(ctx, head.state, []gomatrixserverlib.StateKeyTuple{
			{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}, {EventType: spec.MRoomJoinRules}})
		if err != nil {
			tb.Fatal(err)
		}
		prevs := head.extremities
		w := &roomWrite{r: r, oldHead: head, moveHead: true}
		var tuples []tuple
		for _, u := range batch {
			sk := u
			pdu, _, err := rs.build(r, prevs, protoEvent{sender: u, typ: spec.MRoomMember, stateKey: &sk, content: []byte(`{"membership":"join"}`)}, auth, nil)
			if err != nil {
				tb.Fatal(err)
			}
			if err := gomatrixserverlib.Allowed(pdu, auth, userIDForSender); err != nil {
				tb.Fatal(err)
			}
			prevs = []extremity{{ID: pdu.EventID(), Depth: pdu.Depth()}}
			w.events = append(w.events, &newEvent{pdu: pdu, chain: true, hasKey: true})
			tuples = append(tuples, tuple{spec.MRoomMember, u})
		}
		keys, err := rs.stateKeys(ctx, tuples, true)
		if err != nil {
			tb.Fatal(err)
		}
		for i, ne := range w.events {
			ne.key = keys[tuples[i]]
		}
		w.headFrom = len(w.events) - 1
		w.exts = []extRef{{idx: len(w.events) - 1}}
		if err := rs.commit(w); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkCurrentState10kMembers loads the whole current state of a room with
// 10,000 members: warm (events cached) and cold (a fresh roomserver on the same data).
func BenchmarkCurrentState10kMembers(b *testing.B) {
	for _, e := range benchEngines {
		if e.name == "sqlite-full" {
			continue
		}
		b.Run(e.name, func(b *testing.B) {
			db := benchDB(b, e.engine, e.sync)
			rs := newRS(b, db)
			alice := user("alice")
			roomID := mustCreate(b, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
			users := make([]string, 10000)
			for i := range users {
				users[i] = user(fmt.Sprint("member", i))
			}
			bulkJoin(b, rs, roomID, users)
			ctx := context.Background()
			b.Run("warm", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					st, err := rs.CurrentState(ctx, roomID)
					if err != nil || len(st) < 10000 {
						b.Fatal(len(st), err)
					}
				}
			})
			b.Run("cold", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					fresh := newRS(b, db)
					b.StartTimer()
					st, err := fresh.CurrentState(ctx, roomID)
					if err != nil || len(st) < 10000 {
						b.Fatal(len(st), err)
					}
				}
			})
			b.Run("members-join", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					ms, err := rs.Members(ctx, MembersRequest{RoomID: roomID, Membership: spec.Join})
					if err != nil || len(ms) != 10001 {
						b.Fatal(len(ms), err)
					}
				}
			})
			b.Run("one-member-lookup", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					m, _, err := rs.Membership(ctx, roomID, users[i%len(users)])
					if err != nil || m != spec.Join {
						b.Fatal(m, err)
					}
				}
			})
		})
	}
}

// BenchmarkMessagesPage reads a page of 100 events from the end of a room's timeline
// (10,000 messages), as /messages does, with the history visibility filter.
func BenchmarkMessagesPage(b *testing.B) {
	for _, e := range benchEngines {
		if e.name == "sqlite-full" {
			continue
		}
		b.Run(e.name, func(b *testing.B) {
			db := benchDB(b, e.engine, e.sync)
			rs := newRS(b, db)
			alice := user("alice")
			roomID := mustCreate(b, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
			sendMany(b, rs, roomID, alice, 10000)
			ctx := context.Background()
			for _, viewer := range []string{"", alice} {
				name := "raw"
				if viewer != "" {
					name = "visible-to-member"
				}
				b.Run(name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: End, Dir: Backward, Limit: 100, Viewer: viewer})
						if err != nil || len(page.Events) != 100 {
							b.Fatal(err)
						}
					}
				})
			}
			b.Run("from-middle", func(b *testing.B) {
				fresh := newRS(b, db)
				mid := Position{Depth: 5000, Stream: End.Stream}
				for i := 0; i < b.N; i++ {
					page, err := fresh.Messages(ctx, MessagesRequest{RoomID: roomID, From: mid, Dir: Backward, Limit: 100})
					if err != nil || len(page.Events) != 100 {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// sendMany sends n messages to a room from 8 concurrent callers.
func sendMany(tb testing.TB, rs *Roomserver, roomID, sender string, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.message", Content: msg("hello")}); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkStateLookupHistory shows that reading the state at an old event costs the
// same in a room with a short and a long history (cold caches each time).
func BenchmarkStateLookupHistory(b *testing.B) {
	for _, history := range []int{100, 5000} {
		b.Run(fmt.Sprint("history=", history), func(b *testing.B) {
			db := benchDB(b, "sqlite", "normal")
			rs := newRS(b, db)
			alice := user("alice")
			roomID := mustCreate(b, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
			users := make([]string, 200)
			for i := range users {
				users[i] = user(fmt.Sprint("m", i))
			}
			bulkJoin(b, rs, roomID, users)
			first := mustSend(b, rs, roomID, alice, "m.room.message", nil, msg("early"))
			sendMany(b, rs, roomID, alice, history)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				fresh := newRS(b, db)
				b.StartTimer()
				ev, err := fresh.StateEventAt(ctx, first.EventID(), spec.MRoomMember, users[i%len(users)], false)
				if err != nil || ev == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
