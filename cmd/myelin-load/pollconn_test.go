package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollConn: the listeners' own HTTP/1.1 client reads sized and chunked answers,
// keeps the connection alive across requests, redials after Connection: close, sends
// the access token, and reports a server that hangs up as an error.
func TestPollConn(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN"}`))
			return
		}
		switch r.URL.Query().Get("kind") {
		case "chunked":
			for _, part := range []string{`{"next_batch":`, `"s1",`, `"rooms":{}}`} {
				_, _ = w.Write([]byte(part))
				w.(http.Flusher).Flush() // forces chunked encoding
			}
		case "close":
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte(`{"next_batch":"s2"}`))
		case "hangup":
			c, _, _ := w.(http.Hijacker).Hijack()
			_ = c.Close()
		default:
			_, _ = w.Write([]byte(`{"next_batch":"s0"}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	pc := newPollConn(srv.URL)
	if pc == nil {
		t.Fatalf("no pollConn for %s", srv.URL)
	}
	ctx := context.Background()
	get := func(kind, token string) (int, string, error) {
		status, body, err := pc.get(ctx, "/x?kind="+kind, token, 5*time.Second)
		return status, string(body), err
	}
	for _, kind := range []string{"sized", "chunked", "sized"} {
		status, body, err := get(kind, "tok")
		if err != nil || status != 200 || !strings.HasPrefix(body, `{"next_batch":"s`) || !strings.HasSuffix(body, "}") {
			t.Fatalf("%s: %d %q %v", kind, status, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("keep-alive: %d connections for 3 requests", n)
	}
	if status, body, err := get("sized", "wrong"); err != nil || status != 401 || !strings.Contains(body, "M_UNKNOWN_TOKEN") {
		t.Fatalf("wrong token: %d %q %v", status, body, err)
	}
	if _, body, err := get("close", "tok"); err != nil || body != `{"next_batch":"s2"}` {
		t.Fatalf("close: %q %v", body, err)
	}
	if _, _, err := get("sized", "tok"); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("after Connection: close: %d connections, want a second one", n)
	}
	if _, _, err := get("hangup", "tok"); err == nil {
		t.Fatal("a server that hangs up gave no error")
	}
	if status, _, err := get("sized", "tok"); err != nil || status != 200 {
		t.Fatalf("after a hang-up the next request redials: %d %v", status, err)
	}
	if newPollConn("https://example.org") != nil || newPollConn("http://h/prefix") != nil {
		t.Fatal("pollConn only serves plain http:// homeservers at the root")
	}
}
