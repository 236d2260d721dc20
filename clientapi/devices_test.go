package clientapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// newDeviceTestServer returns a client API on a fresh SQLite database with one user,
// @alice:test, logged in on device DEV with access token "tok".
func newDeviceTestServer(t *testing.T) *Server {
	t.Helper()
	ctx := context.Background()
	db := storagetest.Open(t, "sqlite")
	cfg := config.Default()
	cfg.ServerName = "test"
	cfg.RateLimits.Enabled = false
	authn := auth.NewAuthenticator(db)
	s := NewServer(Deps{Config: cfg, DB: db, Authenticator: authn, Accounts: auth.NewAccounts(db, cfg, authn)})
	if err := storage.InsertAccount(ctx, db, storage.Account{UserID: "@alice:test", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := storage.InsertDevice(ctx, db, storage.Device{UserID: "@alice:test", DeviceID: "DEV", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := storage.InsertAccessToken(ctx, db, storage.AccessToken{TokenHash: auth.HashToken("tok"), UserID: "@alice:test", DeviceID: "DEV", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTouchDeviceThrottlesWrites(t *testing.T) {
	s := newDeviceTestServer(t)
	var mu sync.Mutex
	now := time.UnixMilli(1_700_000_000_000)
	s.seen.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	dev := &auth.Device{UserID: "@alice:test", DeviceID: "DEV"}
	touch := func(ip, ua string) {
		r := httptest.NewRequest("GET", "/_matrix/client/v3/sync", nil)
		r.RemoteAddr = ip + ":4242"
		r.Header.Set("User-Agent", ua)
		s.touchDevice(r, dev)
		s.seen.wg.Wait()
	}
	check := func(ts int64, ip, ua string) {
		t.Helper()
		d, err := storage.GetDevice(context.Background(), s.db, "@alice:test", "DEV")
		if err != nil {
			t.Fatal(err)
		}
		if d.LastSeenTS != ts || d.LastSeenIP != ip || d.LastSeenUserAgent != ua {
			t.Fatalf("last seen = %d %s %q, want %d %s %q", d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent, ts, ip, ua)
		}
	}
	t0 := now.UnixMilli()
	touch("192.0.2.1", "Element/1.0")
	check(t0, "192.0.2.1", "Element/1.0")

	// Within the minute: no write, even from elsewhere.
	advance(30 * time.Second)
	touch("192.0.2.2", "Element/2.0")
	check(t0, "192.0.2.1", "Element/1.0")

	// A minute after the last write: written again.
	advance(31 * time.Second)
	touch("192.0.2.3", "Element/3.0\xff")
	check(now.UnixMilli(), "192.0.2.3", "Element/3.0")
}

// Requests through the API record last-seen without waiting for the write.
func TestAuthenticatedRequestsRecordLastSeen(t *testing.T) {
	s := newDeviceTestServer(t)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/_matrix/client/v3/devices/DEV", nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("User-Agent", "myelin-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET device: %d", resp.StatusCode)
	}
	s.seen.wg.Wait()
	d, err := storage.GetDevice(context.Background(), s.db, "@alice:test", "DEV")
	if err != nil {
		t.Fatal(err)
	}
	if d.LastSeenTS == 0 || d.LastSeenIP != "127.0.0.1" || d.LastSeenUserAgent != "myelin-test" {
		t.Fatalf("last seen not recorded: %+v", d)
	}
}
