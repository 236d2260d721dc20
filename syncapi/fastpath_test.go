package syncapi

import (
	"strconv"
	"testing"
)

// TestEventLogWindow: the log answers for positions it holds everything after, and
// refuses once older entries were evicted (the database path then answers).
func TestEventLogWindow(t *testing.T) {
	l := newEventLog(3)
	if _, _, ok := l.after(0); ok {
		t.Fatal("an empty log claims to hold everything")
	}
	for _, pos := range []int64{10, 11, 13} {
		l.add(&logEntry{pos: pos, room: "!r:hs"})
	}
	got, top, ok := l.after(10)
	if !ok || top != 13 || len(got) != 2 || got[0].pos != 11 || got[1].pos != 13 {
		t.Fatalf("after(10) = %v %d %v", got, top, ok)
	}
	if got, top, ok := l.after(9); !ok || len(got) != 3 || top != 13 {
		t.Fatalf("after(9) = %v %d %v", got, top, ok)
	}
	if got, top, ok := l.after(20); !ok || len(got) != 0 || top != 20 {
		t.Fatalf("after(20) = %v %d %v", got, top, ok)
	}
	l.add(&logEntry{pos: 14, room: "!r:hs"}) // evicts 10
	if _, _, ok := l.after(9); ok {
		t.Fatal("after(9) answered though position 10 was evicted")
	}
	if got, _, ok := l.after(10); !ok || len(got) != 3 || got[2].pos != 14 {
		t.Fatalf("after(10) after eviction = %v %v", got, ok)
	}
}

// TestListenerWakeReasons: only WakeRoomEvents leaves a listener answerable from the log.
func TestListenerWakeReasons(t *testing.T) {
	n := NewLocalNotifier()
	a := n.Listen("@a:hs", "D", []string{"!r:hs"})
	n.WakeRoomEvents("!r:hs")
	<-a.C
	if !a.OnlyEvents() {
		t.Error("woken by events only, but OnlyEvents is false")
	}
	n.WakeRooms("!r:hs")
	if a.OnlyEvents() {
		t.Error("woken by a room wake-up too, but OnlyEvents is true")
	}
	a.Close()
	b := n.Listen("@a:hs", "D", nil)
	n.WakeUsers("@a:hs")
	<-b.C
	if b.OnlyEvents() {
		t.Error("woken by a user wake-up, but OnlyEvents is true")
	}
	b.Close()
}

// TestUserGens: a user's cached data is stale after a wake-up of that user only, and
// all of it once the table was emptied for size.
func TestUserGens(t *testing.T) {
	var g userGens
	a0, b0 := g.get("@a:hs"), g.get("@b:hs")
	g.bump([]string{"@a:hs"}, 5)
	if g.get("@a:hs") == a0 || g.get("@b:hs") != b0 {
		t.Fatalf("after waking a: a %d→%d, b %d→%d", a0, g.get("@a:hs"), b0, g.get("@b:hs"))
	}
	for i := 0; len(g.m) < memberCacheMaxUsers-1; i++ {
		g.m[string(rune('A'+i%26))+strconv.Itoa(i)] = 6
	}
	g.bump([]string{"@c:hs", "@d:hs"}, 7) // over the bound: emptied
	if g.get("@b:hs") == b0 || g.get("@a:hs") == 5 {
		t.Fatalf("entries cached before the table was emptied still look current: a %d b %d", g.get("@a:hs"), g.get("@b:hs"))
	}
}
