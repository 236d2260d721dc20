package ratelimit

import "testing"

func TestBurstThenLimited(t *testing.T) {
	l := New(1, 3, []string{"@bot:test"})
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("@a:test"); !ok {
			t.Fatalf("request %d within burst was limited", i)
		}
	}
	ok, wait := l.Allow("@a:test")
	if ok || wait <= 0 {
		t.Fatalf("4th request: ok=%v wait=%v, want limited with a positive wait", ok, wait)
	}
	if ok, _ := l.Allow("@b:test"); !ok {
		t.Fatal("another client was limited by the first one's flood")
	}
	for i := 0; i < 100; i++ {
		if ok, _ := l.Allow("@bot:test"); !ok {
			t.Fatal("exempt user was limited")
		}
	}
}
