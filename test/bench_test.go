package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/cmd/myelin/app"
	"github.com/myelin-chat/myelin/config"
)

// benchServer runs the whole client API in-process (as cmd/myelin wires it) on SQLite,
// with bcrypt cost 4 and no rate limits.
func benchServer(b *testing.B) *httptest.Server {
	b.Helper()
	logrus.SetLevel(logrus.WarnLevel)
	cfg := config.Default()
	cfg.ServerName = "bench.test"
	cfg.DataDir = b.TempDir()
	cfg.Database.SQLiteSynchronous = "normal"
	cfg.Passwords.BcryptCost = 4
	cfg.RateLimits.Enabled = false
	srv, err := app.New(context.Background(), cfg, "bench")
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Client.Handler())
	b.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return hs
}

func benchDo(b *testing.B, c *http.Client, method, url, token string, body any) map[string]any {
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		b.Fatalf("%s %s: %d %v", method, url, resp.StatusCode, out)
	}
	return out
}

// BenchmarkRegisterLogin registers a new user (one request, m.login.dummy) and logs it in.
func BenchmarkRegisterLogin(b *testing.B) {
	hs := benchServer(b)
	c := hs.Client()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		user := fmt.Sprintf("bench%d", i)
		benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/register", "", map[string]any{
			"username": user, "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"},
		})
		benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": "bench-password",
		})
	}
}

// BenchmarkAuthenticatedNoop measures an authenticated request that does no work
// (GET /account/whoami): routing, token lookup (cached) and JSON.
func BenchmarkAuthenticatedNoop(b *testing.B) {
	hs := benchServer(b)
	c := hs.Client()
	reg := benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/register", "", map[string]any{
		"username": "noop", "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"},
	})
	token := reg["access_token"].(string)
	url := hs.URL + "/_matrix/client/v3/account/whoami"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchDo(b, c, "GET", url, token, nil)
	}
}
