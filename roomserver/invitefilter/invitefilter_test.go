package invitefilter

import "testing"

func TestGlob(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true},
		{"*", "@a:hs1", true},
		{"hs*", "hs2", true},
		{"hs*", "xhs2", false},
		{"@user-?*", "@user-1:hs1", true},
		{"@user-?*", "@user-", false},
		{"@a:hs?", "@a:hs1", true},
		{"@a:hs?", "@a:hs12", false},
		{"*.example.org", "chat.example.org", true},
		{"*.example.org", "example.org", false},
		{"[::1]:8448", "[::1]:8448", true}, // brackets are plain characters
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"ü?", "üß", true},
	}
	for _, c := range cases {
		if got := Glob(c.p, c.s); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
	// A pathological pattern answers at once (no exponential backtracking).
	long := ""
	for i := 0; i < 5000; i++ {
		long += "a"
	}
	if Glob("*a*a*a*a*a*a*a*a*b", long) {
		t.Fatal("matched without a b")
	}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name    string
		c       Config
		inviter string
		want    Decision
	}{
		{"no rules", Config{}, "@bob:hs2", Allow},
		{"spec block all", Config{BlockAll: true}, "@bob:hs2", Block},
		{"blocked user", Config{BlockedUsers: []string{"@bob:hs2"}}, "@bob:hs2", Block},
		{"other user", Config{BlockedUsers: []string{"@bob:hs2"}}, "@carol:hs2", Allow},
		{"ignored user", Config{IgnoredUsers: []string{"@bob:hs2"}}, "@bob:hs2", Ignore},
		{"blocked server", Config{BlockedServers: []string{"hs2"}}, "@bob:hs2", Block},
		{"server with port", Config{BlockedServers: []string{"hs2:8448"}}, "@bob:hs2:8448", Block},
		{"ignored server glob", Config{IgnoredServers: []string{"hs*"}}, "@bob:hs2", Ignore},
		{"allowed user beats blocked server", Config{AllowedUsers: []string{"@bob:hs2"}, BlockedServers: []string{"hs2"}}, "@bob:hs2", Allow},
		{"blocked user beats allowed server", Config{BlockedUsers: []string{"@evil:hs2"}, AllowedServers: []string{"hs2"}}, "@evil:hs2", Block},
		{"allow beats ignore and block", Config{AllowedUsers: []string{"@bob:hs2"}, IgnoredUsers: []string{"@bob:hs2"}, BlockedUsers: []string{"@bob:hs2"}}, "@bob:hs2", Allow},
		{"ignore beats block", Config{IgnoredUsers: []string{"@bob:hs2"}, BlockedUsers: []string{"@bob:hs2"}}, "@bob:hs2", Ignore},
		{"explicit allow beats block all", Config{BlockAll: true, AllowedUsers: []string{"@bob:hs2"}}, "@bob:hs2", Allow},
	}
	for _, c := range cases {
		if got := c.c.Decide(c.inviter); got != c.want {
			t.Errorf("%s: Decide(%s) = %v, want %v", c.name, c.inviter, got, c.want)
		}
	}
}
