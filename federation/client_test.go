package federation

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
)

// TestDoSignedLimit: an answer over the limit is ErrAnswerTooLarge (not decoded), one
// within it is decoded, an error status is a gomatrix.HTTPError with its code; the
// request is signed (X-Matrix).
func TestDoSignedLimit(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
			w.WriteHeader(401)
			return
		}
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write([]byte(`{"pad":"` + strings.Repeat("x", 200) + `"}`))
		case "/small":
			_, _ = w.Write([]byte(`{"pad":"ok"}`))
		default:
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
		}
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(config.Federation{CAFile: caFile, AllowPrivateAddresses: true}, "origin.test", key, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dest := spec.ServerName(strings.TrimPrefix(srv.URL, "https://"))
	ctx := context.Background()
	var out struct {
		Pad string `json:"pad"`
	}
	if err := c.DoSignedLimit(ctx, "GET", dest, "/big", nil, &out, 100); !errors.Is(err, ErrAnswerTooLarge) || out.Pad != "" {
		t.Fatalf("answer over the limit: %v %q", err, out.Pad)
	}
	if err := c.DoSignedLimit(ctx, "GET", dest, "/small", nil, &out, 100); err != nil || out.Pad != "ok" {
		t.Fatalf("answer within the limit: %v %q", err, out.Pad)
	}
	var he gomatrix.HTTPError
	if err := c.DoSignedLimit(ctx, "GET", dest, "/missing", nil, &out, 100); !errors.As(err, &he) || he.Code != 404 {
		t.Fatalf("404: %v", err)
	}
}
