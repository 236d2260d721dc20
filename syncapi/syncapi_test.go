package syncapi

import (
	"testing"
	"time"
)

func TestTokenRoundTrip(t *testing.T) {
	tok := Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6, DeviceLists: 7}
	got, err := ParseToken(tok.String())
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "s1_2", "t1_2_3_4_5_6_7", "s1_2_3_4_5_6_x", "s1_2_3_4_5_6_-7", "s1_2_3_4_5_6_7_8"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if m := (Token{Events: 5, Typing: 1}).atLeast(Token{Events: 3, Typing: 9}); m.Events != 5 || m.Typing != 9 {
		t.Errorf("atLeast = %+v", m)
	}
}

func TestLocalNotifier(t *testing.T) {
	n := NewLocalNotifier()
	l1 := n.Listen("@a:hs", "D", []string{"!r:hs"})
	l2 := n.Listen("@b:hs", "D", nil)
	n.WakeRooms("!other:hs")
	n.WakeUsers("@c:hs")
	select {
	case <-l1.C:
		t.Fatal("woken by another room")
	case <-l2.C:
		t.Fatal("woken by another user")
	default:
	}
	n.WakeRooms("!r:hs")
	<-l1.C
	n.WakeUsers("@b:hs")
	n.WakeUsers("@b:hs") // waking twice is harmless
	<-l2.C
	l1.Close()
	l2.Close()
	if len(n.rooms) != 0 || len(n.users) != 0 {
		t.Fatalf("listeners left behind: %v %v", n.rooms, n.users)
	}
}

func TestTypingExpiry(t *testing.T) {
	woken := make(chan string, 10)
	ty := newTyping(func(room string) { woken <- room })
	start := ty.Pos()
	ty.Set("!r", "@a", true, 50*time.Millisecond)
	if users, ok := ty.Since("!r", start); !ok || len(users) != 1 {
		t.Fatalf("typing = %v %v", users, ok)
	}
	p := ty.Pos()
	ty.Set("!r", "@a", true, 50*time.Millisecond) // still typing: no change
	if ty.Pos() != p {
		t.Error("renewal counted as a change")
	}
	<-woken
	select {
	case <-woken:
	case <-time.After(2 * time.Second):
		t.Fatal("no wake-up on expiry")
	}
	if users, ok := ty.Since("!r", p); !ok || len(users) != 0 {
		t.Fatalf("after expiry: %v %v", users, ok)
	}
	if _, ok := ty.Since("!r", ty.Pos()); ok {
		t.Error("change reported to an up-to-date reader")
	}
	// A restart starts from the clock, above earlier positions.
	if newTyping(func(string) {}).Pos() < start {
		t.Error("typing positions went backwards across a restart")
	}
}
