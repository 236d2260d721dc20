package federation

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"
)

type fakeDNS map[string][]*net.SRV // "_service._tcp.name" -> records

func (f fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	recs, ok := f["_"+service+"._"+proto+"."+name]
	if !ok {
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return "", recs, nil
}

func TestResolve(t *testing.T) {
	dns := fakeDNS{
		"_matrix-fed._tcp.fed.test":       {{Target: "fed-host.test.", Port: 8000}},
		"_matrix-fed._tcp.both.test":      {{Target: "new.test.", Port: 1}},
		"_matrix._tcp.both.test":          {{Target: "old.test.", Port: 2}},
		"_matrix._tcp.legacy.test":        {{Target: "legacy-host.test.", Port: 9000}},
		"_matrix-fed._tcp.delegated.test": {{Target: "real-host.test.", Port: 7000}},
	}
	wk := map[string]string{
		"wk-port.test": "target.test:9999",
		"wk-srv.test":  "delegated.test",
		"wk-ip.test":   "[::1]",
		"wk-bare.test": "plain.test",
	}
	r := &Resolver{DNS: dns, WellKnown: func(_ context.Context, name string) (string, time.Duration, error) {
		if d, ok := wk[name]; ok {
			return d, time.Hour, nil
		}
		return "", 0, errors.New("404")
	}}
	cases := []struct {
		name string
		want []Destination
	}{
		{"1.2.3.4", []Destination{{"1.2.3.4:8448", "1.2.3.4", "1.2.3.4"}}},
		{"1.2.3.4:99", []Destination{{"1.2.3.4:99", "1.2.3.4:99", "1.2.3.4"}}},
		{"[2001:db8::1]", []Destination{{"[2001:db8::1]:8448", "[2001:db8::1]", "2001:db8::1"}}},
		{"[2001:db8::1]:5", []Destination{{"[2001:db8::1]:5", "[2001:db8::1]:5", "2001:db8::1"}}},
		// An explicit port skips well-known and SRV.
		{"fed.test:1234", []Destination{{"fed.test:1234", "fed.test:1234", "fed.test"}}},
		// Well-known delegation to a name with a port.
		{"wk-port.test", []Destination{{"target.test:9999", "target.test:9999", "target.test"}}},
		// Well-known delegation to a name without a port: SRV of the delegated name.
		{"wk-srv.test", []Destination{{"real-host.test:7000", "delegated.test", "delegated.test"}}},
		{"wk-ip.test", []Destination{{"[::1]:8448", "[::1]", "::1"}}},
		{"wk-bare.test", []Destination{{"plain.test:8448", "plain.test", "plain.test"}}},
		// No well-known: _matrix-fed._tcp first, then _matrix._tcp, then 8448.
		{"fed.test", []Destination{{"fed-host.test:8000", "fed.test", "fed.test"}}},
		{"both.test", []Destination{{"new.test:1", "both.test", "both.test"}}},
		{"legacy.test", []Destination{{"legacy-host.test:9000", "legacy.test", "legacy.test"}}},
		{"nothing.test", []Destination{{"nothing.test:8448", "nothing.test", "nothing.test"}}},
	}
	for _, c := range cases {
		got, err := r.Resolve(context.Background(), c.name)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
	for _, bad := range []string{"", "exa mple.test", "host:port", "1.2.3.4:99999"} {
		if _, err := r.Resolve(context.Background(), bad); err == nil {
			t.Errorf("%q: resolved an invalid server name", bad)
		}
	}
}

func TestWellKnownIsCachedUntilExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	calls := 0
	target := "first.test:1"
	r := &Resolver{
		Now: func() time.Time { return now },
		WellKnown: func(_ context.Context, name string) (string, time.Duration, error) {
			calls++
			return target, 10 * time.Minute, nil
		},
	}
	resolve := func() string {
		t.Helper()
		d, err := r.Resolve(context.Background(), "cached.test")
		if err != nil || len(d) != 1 {
			t.Fatalf("%+v %v", d, err)
		}
		return d[0].Addr
	}
	if got := resolve(); got != "first.test:1" || calls != 1 {
		t.Fatalf("first: %s calls=%d", got, calls)
	}
	target = "second.test:2"
	now = now.Add(9 * time.Minute)
	if got := resolve(); got != "first.test:1" || calls != 1 {
		t.Fatalf("within max-age: %s calls=%d", got, calls)
	}
	now = now.Add(2 * time.Minute)
	if got := resolve(); got != "second.test:2" || calls != 2 {
		t.Fatalf("after expiry: %s calls=%d", got, calls)
	}
	// Failures are cached too (for an hour), falling back to SRV/8448.
	r2 := &Resolver{Now: func() time.Time { return now }, WellKnown: func(context.Context, string) (string, time.Duration, error) {
		calls++
		return "", 0, errors.New("down")
	}}
	calls = 0
	for i := 0; i < 3; i++ {
		d, _ := r2.Resolve(context.Background(), "down.test")
		if d[0].Addr != "down.test:8448" {
			t.Fatalf("fallback: %+v", d)
		}
	}
	if calls != 1 {
		t.Fatalf("failed well-known fetched %d times", calls)
	}
}

func TestCacheMaxAge(t *testing.T) {
	for h, want := range map[string]time.Duration{
		"":                          0,
		"max-age=60":                time.Minute,
		"public, MAX-AGE=3600, x=y": time.Hour,
		"max-age=abc":               0,
	} {
		if got := cacheMaxAge(h); got != want {
			t.Errorf("%q: %v want %v", h, got, want)
		}
	}
}

// countingDNS answers from a fakeDNS, counts the lookups and fails while down.
type countingDNS struct {
	fakeDNS
	calls int
	down  bool
}

func (c *countingDNS) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	c.calls++
	if c.down {
		return "", nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true}
	}
	return c.fakeDNS.LookupSRV(ctx, service, proto, name)
}

// SRV answers are cached, "no such record" included, so a federation request does not
// wait for DNS each time; when DNS fails an expired answer still serves.
func TestSRVIsCached(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	dns := &countingDNS{fakeDNS: fakeDNS{"_matrix-fed._tcp.srv.test": {{Target: "host.test.", Port: 8000}}}}
	r := &Resolver{DNS: dns, Now: func() time.Time { return now }}
	resolve := func(name string) string {
		t.Helper()
		d, err := r.Resolve(context.Background(), name)
		if err != nil || len(d) != 1 {
			t.Fatalf("%s: %+v %v", name, d, err)
		}
		return d[0].Addr
	}
	for i := 0; i < 3; i++ {
		if got := resolve("srv.test"); got != "host.test:8000" {
			t.Fatalf("srv.test -> %s", got)
		}
		if got := resolve("none.test"); got != "none.test:8448" {
			t.Fatalf("none.test -> %s", got)
		}
	}
	// One lookup for srv.test (_matrix-fed answered), two for none.test (both services).
	if dns.calls != 3 {
		t.Fatalf("%d lookups for 6 resolutions, want 3", dns.calls)
	}

	// Expired and DNS down: the old answer serves, and DNS is asked again only after
	// srvStaleTTL.
	now = now.Add(srvTTL + time.Second)
	dns.down, dns.calls = true, 0
	if got := resolve("srv.test"); got != "host.test:8000" {
		t.Fatalf("stale answer while DNS is down: %s", got)
	}
	if got := resolve("srv.test"); got != "host.test:8000" || dns.calls != 2 {
		t.Fatalf("second resolution while down: %s after %d lookups, want 2", got, dns.calls)
	}
	// A name never answered falls back to 8448 and is asked again every time.
	resolve("new.test")
	resolve("new.test")
	if dns.calls != 6 {
		t.Fatalf("%d lookups, want 6 (2 + 2 per unanswered resolution)", dns.calls)
	}

	// DNS back after the stale period: the new answer replaces the old.
	now = now.Add(srvStaleTTL + time.Second)
	dns.down = false
	dns.fakeDNS["_matrix-fed._tcp.srv.test"] = []*net.SRV{{Target: "moved.test.", Port: 9000}}
	if got := resolve("srv.test"); got != "moved.test:9000" {
		t.Fatalf("after DNS came back: %s", got)
	}
}
