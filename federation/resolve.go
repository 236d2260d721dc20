package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Destination is where to send requests for a server name: the address to dial, the
// Host header and the TLS server name (SNI and certificate name).
type Destination struct {
	Addr          string // host:port to connect to
	Host          string // Host header
	TLSServerName string
}

// DNS is the part of net.Resolver the resolver uses (a fake in tests).
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// WellKnownFetcher gets https://<name>/.well-known/matrix/server: the delegated server
// name and how long the answer may be cached.
type WellKnownFetcher func(ctx context.Context, serverName string) (delegated string, maxAge time.Duration, err error)

const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	wellKnownMaxSize    = 50 * 1024

	// srvTTL is how long an SRV answer (records, or none) is kept: net.LookupSRV does
	// not give the record's own TTL. Without a cache every federation request made two
	// DNS queries, and one lost UDP packet stalled it for the resolver's 5 s retry.
	srvTTL = 10 * time.Minute
	// srvStaleTTL is how much longer an expired answer serves when DNS fails.
	srvStaleTTL = time.Minute
)

// Resolver implements server name resolution (spec "Resolving server names"): IP
// literals, explicit ports, /.well-known/matrix/server (cached), SRV
// _matrix-fed._tcp then _matrix._tcp, and port 8448.
type Resolver struct {
	DNS       DNS
	WellKnown WellKnownFetcher
	Now       func() time.Time

	wellKnowns expiring[string]     // host -> delegated server name ("" when none)
	srvs       expiring[[]*net.SRV] // host -> records of the first service that has any
}

// expiring is a map of answers that are fresh until their own expiry time.
type expiring[V any] struct {
	mu sync.Mutex
	m  map[string]expiringEntry[V]
}

type expiringEntry[V any] struct {
	v       V
	expires time.Time
}

// get returns key's answer, whether there is one, and whether it is fresh at now.
func (c *expiring[V]) get(key string, now time.Time) (v V, present, fresh bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	return e.v, ok, ok && now.Before(e.expires)
}

func (c *expiring[V]) put(key string, v V, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]expiringEntry[V]{}
	}
	c.m[key] = expiringEntry[V]{v: v, expires: expires}
}

// Resolve returns the places to try, best first.
func (r *Resolver) Resolve(ctx context.Context, serverName string) ([]Destination, error) {
	return r.resolve(ctx, serverName, true)
}

func (r *Resolver) resolve(ctx context.Context, serverName string, wellKnown bool) ([]Destination, error) {
	host, port, ok := spec.ParseAndValidateServerName(spec.ServerName(serverName))
	if !ok {
		return nil, fmt.Errorf("invalid server name %q", serverName)
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	// 1. IP literal: that address, the given port or 8448.
	if net.ParseIP(bare) != nil {
		if port == -1 {
			port = 8448
		}
		return []Destination{{Addr: net.JoinHostPort(bare, strconv.Itoa(port)), Host: serverName, TLSServerName: bare}}, nil
	}
	// 2. Hostname with an explicit port.
	if port != -1 {
		return []Destination{{Addr: net.JoinHostPort(host, strconv.Itoa(port)), Host: serverName, TLSServerName: host}}, nil
	}
	// 3. /.well-known/matrix/server, then resolve the delegated name without well-known.
	if wellKnown && r.WellKnown != nil {
		if delegated := r.wellKnown(ctx, host); delegated != "" {
			dh, dport, ok := spec.ParseAndValidateServerName(spec.ServerName(delegated))
			if !ok {
				return nil, fmt.Errorf("%s delegates to invalid server name %q", serverName, delegated)
			}
			dbare := strings.TrimSuffix(strings.TrimPrefix(dh, "["), "]")
			if net.ParseIP(dbare) != nil || dport != -1 {
				res, err := r.resolve(ctx, delegated, false)
				if err != nil {
					return nil, err
				}
				for i := range res {
					res[i].Host = delegated
				}
				return res, nil
			}
			return r.srv(ctx, dh, delegated), nil
		}
	}
	// 4./5. SRV records, else port 8448.
	return r.srv(ctx, host, serverName), nil
}

// srv looks up _matrix-fed._tcp then _matrix._tcp for host; Host header and TLS name
// are hostHeader (the name being resolved), falling back to host:8448.
func (r *Resolver) srv(ctx context.Context, host, hostHeader string) []Destination {
	tlsName := host
	var out []Destination
	for _, rec := range r.srvRecords(ctx, host) {
		target := strings.TrimSuffix(rec.Target, ".")
		if target == "" {
			continue
		}
		out = append(out, Destination{Addr: net.JoinHostPort(target, strconv.Itoa(int(rec.Port))), Host: hostHeader, TLSServerName: tlsName})
	}
	if len(out) > 0 {
		return out
	}
	return []Destination{{Addr: net.JoinHostPort(host, "8448"), Host: hostHeader, TLSServerName: tlsName}}
}

// srvRecords returns host's SRV records (_matrix-fed first, then _matrix), cached for
// srvTTL. "No such record" is an answer and is cached too; when DNS fails otherwise an
// expired answer serves a little longer, and with none the lookup is tried again next
// time (the caller falls back to port 8448 meanwhile).
func (r *Resolver) srvRecords(ctx context.Context, host string) []*net.SRV {
	if r.DNS == nil {
		return nil
	}
	now := r.now()
	old, cached, fresh := r.srvs.get(host, now)
	if fresh {
		return old
	}
	var recs []*net.SRV
	definitive := true // every lookup made got an answer (records or "none")
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, rs, err := r.DNS.LookupSRV(ctx, service, "tcp", host)
		if err != nil {
			var dnsErr *net.DNSError
			if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
				definitive = false
			}
			continue
		}
		if len(rs) > 0 {
			recs = rs
			break
		}
	}
	switch {
	case definitive:
		r.srvs.put(host, recs, now.Add(srvTTL))
	case recs != nil:
		// _matrix records after _matrix-fed failed: used, but asked again soon.
		r.srvs.put(host, recs, now.Add(srvStaleTTL))
	case cached:
		r.srvs.put(host, old, now.Add(srvStaleTTL))
		return old
	}
	return recs
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// wellKnown returns the delegated server name for host, from the cache when fresh.
func (r *Resolver) wellKnown(ctx context.Context, host string) string {
	now := r.now()
	if delegated, _, fresh := r.wellKnowns.get(host, now); fresh {
		return delegated
	}
	delegated, ttl, err := r.WellKnown(ctx, host)
	if err != nil {
		delegated, ttl = "", wellKnownErrorTTL
	} else {
		if ttl <= 0 {
			ttl = wellKnownDefaultTTL
		}
		if ttl > wellKnownMaxTTL {
			ttl = wellKnownMaxTTL
		}
	}
	r.wellKnowns.put(host, delegated, now.Add(ttl))
	return delegated
}

// HTTPWellKnown fetches well-known files with client (which should carry our TLS roots
// and dial checks), honouring Cache-Control max-age.
func HTTPWellKnown(client *http.Client) WellKnownFetcher {
	return func(ctx context.Context, serverName string) (string, time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+serverName+"/.well-known/matrix/server", nil)
		if err != nil {
			return "", 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", 0, fmt.Errorf("well-known: HTTP %d", resp.StatusCode)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxSize+1))
		if err != nil {
			return "", 0, err
		}
		if len(body) > wellKnownMaxSize {
			return "", 0, errors.New("well-known: too large")
		}
		var wk struct {
			Server string `json:"m.server"`
		}
		if err := json.Unmarshal(body, &wk); err != nil || wk.Server == "" {
			return "", 0, errors.New("well-known: no m.server")
		}
		return wk.Server, cacheMaxAge(resp.Header.Get("Cache-Control")), nil
	}
}

func cacheMaxAge(h string) time.Duration {
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(k, "max-age") {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}
