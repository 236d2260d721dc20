package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/myelin-chat/myelin/config"
)

// ErrPrivateAddress is returned when a destination resolves to a loopback, private or
// link-local address and federation.allow_private_addresses is off.
var ErrPrivateAddress = errors.New("federation: destination address is private")

// ErrDeniedServer is returned for servers excluded by allowed_servers/denied_servers.
var ErrDeniedServer = errors.New("federation: server is not allowed")

// ServerAllowed reports whether we federate with serverName under the config's
// allowed_servers and denied_servers (exact names; "*.example.com" matches subdomains).
func ServerAllowed(cfg config.Federation, serverName string) bool {
	for _, d := range cfg.DeniedServers {
		if nameMatches(d, serverName) {
			return false
		}
	}
	if len(cfg.AllowedServers) == 0 {
		return true
	}
	for _, a := range cfg.AllowedServers {
		if nameMatches(a, serverName) {
			return true
		}
	}
	return false
}

func nameMatches(pattern, name string) bool {
	if pattern == name {
		return true
	}
	if len(pattern) > 2 && pattern[:2] == "*." {
		suffix := pattern[1:]
		return len(name) > len(suffix) && name[len(name)-len(suffix):] == suffix
	}
	return false
}

// isPrivate reports addresses outgoing federation must not reach by default.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(a) // carrier-grade NAT
}

// dialControl refuses private addresses after DNS resolution, on the address actually dialled.
func dialControl(allowPrivate bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("federation: bad dial address %q: %w", address, err)
		}
		if isPrivate(ap.Addr()) {
			return fmt.Errorf("%w: %s", ErrPrivateAddress, address)
		}
		return nil
	}
}

// RootCAs returns the system roots plus the PEM bundle at caFile (if any).
func RootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("federation.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation.ca_file %s: no certificates", caFile)
		}
	}
	return pool, nil
}

// Transport sends requests addressed to matrix://<server name>/... to the resolved
// destination over TLS (SNI and certificate checked against the resolved TLS name),
// refusing denied servers and, unless allowed, private addresses. Plain https:// URLs
// are sent as they are, with the same TLS roots and dial checks.
type Transport struct {
	cfg      config.Federation
	resolver *Resolver
	roots    *x509.CertPool
	dialer   *net.Dialer

	mu     sync.Mutex
	byName map[string]*http.Transport // one per TLS server name
}

// NewTransport builds the outgoing federation transport. resolver may be nil, in which
// case one using the system DNS and well-known over this transport is made.
func NewTransport(cfg config.Federation, resolver *Resolver) (*Transport, error) {
	roots, err := RootCAs(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:    cfg,
		roots:  roots,
		dialer: &net.Dialer{Timeout: 10 * time.Second, Control: dialControl(cfg.AllowPrivateAddresses)},
		byName: map[string]*http.Transport{},
	}
	if resolver == nil {
		resolver = &Resolver{DNS: net.DefaultResolver}
		// Redirects are followed (at most 10); every hop goes through the same dial checks.
		resolver.WellKnown = HTTPWellKnown(&http.Client{Transport: t, Timeout: 30 * time.Second})
	}
	t.resolver = resolver
	return t, nil
}

func (t *Transport) transport(tlsName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.byName[tlsName]
	if tr == nil {
		tr = &http.Transport{
			DialContext:         t.dialer.DialContext,
			TLSClientConfig:     &tls.Config{ServerName: tlsName, RootCAs: t.roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		t.byName[tlsName] = tr
	}
	return tr
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.URL.Scheme {
	case "https":
		host := r.URL.Hostname()
		return t.transport(host).RoundTrip(r)
	case "matrix", "matrix-federation":
	default:
		return nil, fmt.Errorf("federation: unsupported scheme %q", r.URL.Scheme)
	}
	serverName := r.URL.Host
	if !ServerAllowed(t.cfg, serverName) {
		return nil, fmt.Errorf("%w: %s", ErrDeniedServer, serverName)
	}
	dests, err := t.resolver.Resolve(r.Context(), serverName)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, d := range dests {
		req := r.Clone(r.Context())
		u := *r.URL
		u.Scheme, u.Host = "https", d.Addr
		req.URL, req.Host = &u, d.Host
		if r.GetBody != nil && r.Body != nil && r.Body != http.NoBody {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
		resp, err := t.transport(d.TLSServerName).RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if errors.Is(err, ErrPrivateAddress) || r.Context().Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// withTimeout bounds ctx when it has no deadline.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
