package roomserver

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestConcurrentWriters sends from many goroutines into a few rooms while others read
// and change memberships, then checks that every event is stored once, in its room's
// order, published once in stream order, and that the stream has no gaps a reader
// could miss.
func TestConcurrentWriters(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var mu sync.Mutex
		var outputs []OutputEvent
		rs := newRS(t, db, func(c *Config) {
			c.CommitWorkers = 3 // exercise out-of-order commits on PostgreSQL
			c.Output = OutputFunc(func(ev OutputEvent) {
				mu.Lock()
				outputs = append(outputs, ev)
				mu.Unlock()
			})
		})
		const rooms, writers, perWriter = 4, 12, 15
		var ids []string
		for i := range rooms {
			ids = append(ids, mustCreate(t, rs, CreateRoomRequest{Creator: user("owner"), Preset: spec.PresetPublicChat, Name: fmt.Sprint("room", i)}))
		}
		startPos := rs.StreamPosition()
		var wg sync.WaitGroup
		errs := make(chan error, writers*perWriter+100)
		for w := range writers {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				u := user(fmt.Sprint("w", w))
				room := ids[w%rooms]
				if _, err := rs.Join(ctx, MembershipRequest{RoomID: room, Sender: u}); err != nil {
					errs <- err
					return
				}
				for i := range perWriter {
					if _, err := rs.SendEvent(ctx, SendRequest{RoomID: room, Sender: u, Type: "m.room.message", Content: msg(fmt.Sprint(w, "/", i))}); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for r := range 3 {
			readers.Add(1)
			go func(r int) {
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					room := ids[r%rooms]
					if _, err := rs.CurrentState(ctx, room); err != nil {
						errs <- err
						return
					}
					page, err := rs.Messages(ctx, MessagesRequest{RoomID: room, From: End, Dir: Backward, Limit: 20, Viewer: user("owner")})
					if err != nil {
						errs <- err
						return
					}
					_ = page
				}
			}(r)
		}
		wg.Wait()
		close(stop)
		readers.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}

		end := rs.StreamPosition()
		total := 0
		for _, room := range ids {
			evs, err := rs.StreamEvents(ctx, room, startPos, end, 10000, false)
			if err != nil {
				t.Fatal(err)
			}
			total += len(evs)
			// Within a room, stream order follows the DAG: each event's prev is the previous one.
			for i := 1; i < len(evs); i++ {
				if p := evs[i].PrevEventIDs(); len(p) != 1 || p[0] != evs[i-1].EventID() {
					t.Fatalf("room %s: event %d does not follow %d", room, i, i-1)
				}
			}
		}
		if want := writers * (perWriter + 1); total != want {
			t.Fatalf("%d events in the stream, want %d", total, want)
		}
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		var last int64
		n := 0
		for _, o := range outputs {
			if o.StreamPos <= startPos {
				continue
			}
			if o.StreamPos <= last {
				t.Fatalf("output %d after %d", o.StreamPos, last)
			}
			if seen[o.Event.EventID()] {
				t.Fatalf("output twice: %s", o.Event.EventID())
			}
			seen[o.Event.EventID()] = true
			last = o.StreamPos
			n++
		}
		if n != total || last != end {
			t.Fatalf("%d outputs up to %d, want %d up to %d", n, last, total, end)
		}
	})
}

// TestStreamTrackerOutOfOrder drives the tracker directly: a later transaction that
// commits first must not move the safe position past an earlier one still in flight.
func TestStreamTrackerOutOfOrder(t *testing.T) {
	var published []int64
	tr := &streamTracker{dialect: storage.SQLite, inflight: map[*streamTxn]struct{}{},
		publish: func(ev OutputEvent) { published = append(published, ev.StreamPos) }}
	ctx := context.Background()
	a := tr.begin()
	pa, _ := tr.alloc(ctx, nil, a, 2) // 1, 2
	b := tr.begin()
	pb, _ := tr.alloc(ctx, nil, b, 2) // 3, 4
	c := tr.begin()                   // allocates nothing yet
	for _, p := range pa {
		a.outputs = append(a.outputs, OutputEvent{StreamPos: p})
	}
	for _, p := range pb {
		b.outputs = append(b.outputs, OutputEvent{StreamPos: p})
	}
	tr.finish(b, true)
	if tr.Safe() != 0 || len(published) != 0 {
		t.Fatalf("b committed before a: safe=%d published=%v", tr.Safe(), published)
	}
	tr.finish(a, true)
	if tr.Safe() != 4 || fmt.Sprint(published) != "[1 2 3 4]" {
		t.Fatalf("after a: safe=%d published=%v", tr.Safe(), published)
	}
	pc, _ := tr.alloc(ctx, nil, c, 1)
	d := tr.begin()
	pd, _ := tr.alloc(ctx, nil, d, 1)
	d.outputs = []OutputEvent{{StreamPos: pd[0]}}
	tr.finish(d, true)
	if tr.Safe() != pc[0]-1 {
		t.Fatalf("safe %d with c (%d) in flight", tr.Safe(), pc[0])
	}
	tr.finish(c, false) // rolled back: its position is a gap
	if tr.Safe() != pd[0] || published[len(published)-1] != pd[0] {
		t.Fatalf("after c rolled back: safe=%d published=%v", tr.Safe(), published)
	}

	// Transactions whose allocations interleave (one job of e after f's allocation).
	published = nil
	e := tr.begin()
	pe1, _ := tr.alloc(ctx, nil, e, 1)
	f := tr.begin()
	pf, _ := tr.alloc(ctx, nil, f, 1)
	pe2, _ := tr.alloc(ctx, nil, e, 1)
	e.outputs = []OutputEvent{{StreamPos: pe1[0]}, {StreamPos: pe2[0]}}
	f.outputs = []OutputEvent{{StreamPos: pf[0]}}
	tr.finish(f, true)
	tr.finish(e, true)
	if fmt.Sprint(published) != fmt.Sprint([]int64{pe1[0], pf[0], pe2[0]}) {
		t.Fatalf("interleaved transactions published %v", published)
	}
}

// TestConcurrentSendsOneRoom sends from many goroutines into one room, some of them
// not allowed: the allowed ones are committed as one linear chain, the others fail
// alone with M_FORBIDDEN.
func TestConcurrentSendsOneRoom(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice"), Preset: spec.PresetPublicChat})
		start := rs.StreamPosition()
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, forbidden := 0, 0
		for g := range 16 {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				sender := user("alice")
				if g%4 == 3 {
					sender = user("stranger")
				}
				for i := range 10 {
					_, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.message", Content: msg(fmt.Sprint(g, i))})
					mu.Lock()
					if err == nil {
						ok++
					} else if me, isME := err.(spec.MatrixError); isME && me.ErrCode == spec.ErrorForbidden {
						forbidden++
					} else {
						t.Error(err)
					}
					mu.Unlock()
				}
			}(g)
		}
		wg.Wait()
		if ok != 120 || forbidden != 40 {
			t.Fatalf("%d sent, %d forbidden", ok, forbidden)
		}
		evs, err := rs.StreamEvents(ctx, roomID, start, rs.StreamPosition(), 1000, false)
		if err != nil || len(evs) != 120 {
			t.Fatalf("%d events in the stream: %v", len(evs), err)
		}
		for i := 1; i < len(evs); i++ {
			if p := evs[i].PrevEventIDs(); len(p) != 1 || p[0] != evs[i-1].EventID() || evs[i].Depth() != evs[i-1].Depth()+1 {
				t.Fatalf("event %d does not follow %d", i, i-1)
			}
		}
	})
}
