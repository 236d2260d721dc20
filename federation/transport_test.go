package federation

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/config"
)

// tlsServer starts an HTTPS server on loopback and writes its certificate as a CA file.
func tlsServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"host":"`+r.Host+`"}`)
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile
}

func get(t *testing.T, tr http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	return tr.RoundTrip(req)
}

func TestTransportRefusesPrivateAddresses(t *testing.T) {
	srv, caFile := tlsServer(t)
	name := strings.TrimPrefix(srv.URL, "https://") // 127.0.0.1:port

	off, err := NewTransport(config.Federation{CAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, off, "matrix://"+name+"/x"); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("loopback destination with the switch off: %v", err)
	}
	// Also for a name that only resolves to loopback, and for plain https (well-known).
	_, port, _ := strings.Cut(name, ":")
	if _, err := get(t, off, "matrix://localhost:"+port+"/x"); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("localhost with the switch off: %v", err)
	}
	if _, err := get(t, off, srv.URL+"/.well-known/matrix/server"); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("https to loopback with the switch off: %v", err)
	}

	on, err := NewTransport(config.Federation{CAFile: caFile, AllowPrivateAddresses: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := get(t, on, "matrix://"+name+"/x")
	if err != nil {
		t.Fatalf("loopback destination with the switch on: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), name) {
		t.Fatalf("answer: %d %s", resp.StatusCode, body)
	}

	// Without the CA file the certificate is not trusted.
	noCA, _ := NewTransport(config.Federation{AllowPrivateAddresses: true}, nil)
	if _, err := get(t, noCA, "matrix://"+name+"/x"); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
}

func TestTransportRefusesDeniedServers(t *testing.T) {
	srv, caFile := tlsServer(t)
	name := strings.TrimPrefix(srv.URL, "https://")
	tr, _ := NewTransport(config.Federation{CAFile: caFile, AllowPrivateAddresses: true, DeniedServers: []string{name}}, nil)
	if _, err := get(t, tr, "matrix://"+name+"/x"); !errors.Is(err, ErrDeniedServer) {
		t.Fatalf("denied server: %v", err)
	}
	tr, _ = NewTransport(config.Federation{CAFile: caFile, AllowPrivateAddresses: true, AllowedServers: []string{"other.test"}}, nil)
	if _, err := get(t, tr, "matrix://"+name+"/x"); !errors.Is(err, ErrDeniedServer) {
		t.Fatalf("server not in allowed_servers: %v", err)
	}
}

func TestServerAllowed(t *testing.T) {
	cfg := config.Federation{AllowedServers: []string{"a.test", "*.corp.test"}, DeniedServers: []string{"bad.corp.test"}}
	for name, want := range map[string]bool{
		"a.test": true, "x.corp.test": true, "corp.test": false, "bad.corp.test": false, "b.test": false,
	} {
		if got := ServerAllowed(cfg, name); got != want {
			t.Errorf("%s: %v want %v", name, got, want)
		}
	}
	if !ServerAllowed(config.Federation{}, "anything.test") {
		t.Error("empty allow list should allow everyone")
	}
}

func TestHTTPWellKnown(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/matrix/server":
			w.Header().Set("Cache-Control", "public, max-age=600")
			_, _ = io.WriteString(w, `{"m.server":"delegated.test:443"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	_ = os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	tr, err := NewTransport(config.Federation{CAFile: caFile, AllowPrivateAddresses: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fetch := HTTPWellKnown(&http.Client{Transport: tr})
	name := strings.TrimPrefix(srv.URL, "https://")
	got, ttl, err := fetch(context.Background(), name)
	if err != nil || got != "delegated.test:443" || ttl.Minutes() != 10 {
		t.Fatalf("well-known: %q %v %v", got, ttl, err)
	}
	strict, _ := NewTransport(config.Federation{CAFile: caFile}, nil)
	if _, _, err := HTTPWellKnown(&http.Client{Transport: strict})(context.Background(), name); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("well-known on a private address with the switch off: %v", err)
	}
}
