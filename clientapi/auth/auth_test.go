package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestPasswordsLongerThanBcryptLimitCountInFull(t *testing.T) {
	base := strings.Repeat("p", 100)
	h, err := HashPassword(base+"A", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, base+"A") {
		t.Fatal("correct long password refused")
	}
	if CheckPassword(h, base+"B") {
		t.Fatal("a password differing after byte 72 was accepted")
	}
	if CheckPassword(h, base) {
		t.Fatal("a prefix of the password was accepted")
	}
	if CheckPassword("", "") {
		t.Fatal("empty hash matched")
	}
}

func TestNewLocalpart(t *testing.T) {
	a := &Accounts{cfg: &config.Config{ServerName: "hs.test"}}
	for in, want := range map[string]string{"alice": "alice", "Bob.Smith": "bob.smith", "a_b=c-d/e+f.9": "a_b=c-d/e+f.9"} {
		got, err := a.newLocalpart(in)
		if err != nil || got != want {
			t.Errorf("newLocalpart(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "al ice", "@alice:hs.test", "al!ce", "é", "a:b", strings.Repeat("x", 255-len("@:hs.test")+1)} {
		_, err := a.newLocalpart(in)
		var he *httputil.Error
		if !errors.As(err, &he) || he.Code != "M_INVALID_USERNAME" || he.Status != http.StatusBadRequest {
			t.Errorf("newLocalpart(%q): want 400 M_INVALID_USERNAME, got %v", in, err)
		}
	}
	if _, err := a.newLocalpart(strings.Repeat("x", 255-len("@:hs.test"))); err != nil {
		t.Errorf("a 255-byte user ID was refused: %v", err)
	}
	for in, want := range map[string]string{"alice": "@alice:hs.test", "@Alice:hs.test": "@alice:hs.test", "ALICE": "@alice:hs.test"} {
		if got, ok := a.loginUserID(in); !ok || got != want {
			t.Errorf("loginUserID(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"@alice:other.test", "@alice", ""} {
		if _, ok := a.loginUserID(in); ok {
			t.Errorf("loginUserID(%q) accepted", in)
		}
	}
}

// The MAC must match what Synapse's register_new_matrix_user computes:
// hmac.new(secret, nonce\0user\0password\0admin|notadmin, sha1).hexdigest().
func TestSharedSecretMAC(t *testing.T) {
	got := SharedSecretMAC("secret", "abcd", "bob", "hunter2", false)
	// Computed with Python's hmac module, as register_new_matrix_user does.
	const want = "21bedb5e0b7ba18d857261b4302c40f5e8eaf1d0"
	if got != want {
		t.Fatalf("mac = %s, want %s", got, want)
	}
	if got == SharedSecretMAC("secret", "abcd", "bob", "hunter2", true) {
		t.Fatal("admin flag does not change the MAC")
	}
	if got == SharedSecretMAC("secret", "abcd", "bo", "bhunter2", false) {
		t.Fatal("field boundaries do not change the MAC")
	}
}

func newTestAccounts(t *testing.T, mutate func(*config.Config)) (*Accounts, *storage.DB) {
	t.Helper()
	db := storagetest.Open(t, "sqlite")
	cfg := config.Default()
	cfg.ServerName = "hs.test"
	cfg.Passwords.BcryptCost = 4
	if mutate != nil {
		mutate(cfg)
	}
	return NewAccounts(db, cfg, NewAuthenticator(db)), db
}

// A cached token is served from memory: authentication keeps working with the database
// closed, until the entry is invalidated.
func TestAuthenticatorCacheDoesNotHitDatabase(t *testing.T) {
	a, db := newTestAccounts(t, nil)
	ctx := context.Background()
	if _, err := a.CreateAccount(ctx, "alice", "pw", false); err != nil {
		t.Fatal(err)
	}
	sess, err := a.Login(ctx, LoginRequest{Type: LoginTypePassword, Identifier: &UserIdentifier{Type: "m.id.user", User: "alice"}, Password: "pw"}, Client{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.authn.Authenticate(ctx, sess.AccessToken); err != nil {
		t.Fatal(err)
	}
	db.Close()
	d, err := a.authn.Authenticate(ctx, sess.AccessToken)
	if err != nil || d.UserID != "@alice:hs.test" || d.DeviceID != sess.DeviceID {
		t.Fatalf("cached lookup with the database closed: %+v %v", d, err)
	}
	a.authn.Invalidate(HashToken(sess.AccessToken))
	if _, err := a.authn.Authenticate(ctx, sess.AccessToken); err == nil {
		t.Fatal("invalidated token authenticated without the database")
	}
}

func uiaError(t *testing.T, err error) (*httputil.Error, map[string]any) {
	t.Helper()
	var he *httputil.Error
	if !errors.As(err, &he) {
		t.Fatalf("want a Matrix error, got %v", err)
	}
	return he, he.Extra
}

func TestCheckUIA(t *testing.T) {
	a, db := newTestAccounts(t, func(c *config.Config) { c.Auth.UIASessionLifetime = config.Duration(time.Minute) })
	ctx := context.Background()
	alice, err := a.CreateAccount(ctx, "alice", "alicepw", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAccount(ctx, "bob", "bobpw", false); err != nil {
		t.Fatal(err)
	}
	const path = "/_matrix/client/v3/delete_devices"
	auth := func(m map[string]any) json.RawMessage { b, _ := json.Marshal(m); return b }

	// No auth: the challenge, without errcode.
	he, extra := uiaError(t, a.CheckUIA(ctx, alice, path, nil))
	session, _ := extra["session"].(string)
	if he.Status != 401 || he.Code != "" || session == "" {
		t.Fatalf("challenge: %+v", he)
	}
	if fl, _ := json.Marshal(extra["flows"]); string(fl) != `[{"stages":["m.login.password"]}]` {
		t.Fatalf("flows: %s", fl)
	}
	// Wrong password: 401 with M_FORBIDDEN and the flows again.
	he, extra = uiaError(t, a.CheckUIA(ctx, alice, path, auth(map[string]any{
		"type": "m.login.password", "session": session, "password": "wrong",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
	})))
	if he.Status != 401 || he.Code != "M_FORBIDDEN" || extra["session"] != session || extra["flows"] == nil {
		t.Fatalf("wrong password: %+v", he)
	}
	// Another user's credentials: 403.
	he, _ = uiaError(t, a.CheckUIA(ctx, alice, path, auth(map[string]any{
		"type": "m.login.password", "session": session, "password": "bobpw",
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"},
	})))
	if he.Status != 403 {
		t.Fatalf("other user's password: %+v", he)
	}
	// The session is bound to its path and user.
	he, _ = uiaError(t, a.CheckUIA(ctx, alice, "/_matrix/client/v3/account/deactivate", auth(map[string]any{
		"type": "m.login.password", "session": session, "password": "alicepw", "user": alice,
	})))
	if he.Status != 403 {
		t.Fatalf("session reused on another path: %+v", he)
	}
	// Right password (legacy "user" field, full ID) completes.
	if err := a.CheckUIA(ctx, alice, path, auth(map[string]any{
		"type": "m.login.password", "session": session, "password": "alicepw", "user": alice,
	})); err != nil {
		t.Fatalf("right password: %v", err)
	}
	// ... and uses the session up.
	he, _ = uiaError(t, a.CheckUIA(ctx, alice, path, auth(map[string]any{"session": session})))
	if he.Status != 400 {
		t.Fatalf("used session: %+v", he)
	}
	// One request without a session completes too, and a dummy stage is not offered.
	if err := a.CheckUIA(ctx, alice, path, auth(map[string]any{
		"type": "m.login.password", "password": "alicepw", "identifier": map[string]any{"type": "m.id.user", "user": "@alice:hs.test"},
	})); err != nil {
		t.Fatalf("one-shot: %v", err)
	}
	he, _ = uiaError(t, a.CheckUIA(ctx, alice, path, auth(map[string]any{"type": "m.login.dummy"})))
	if he.Status != 401 || he.Code != "M_UNRECOGNIZED" {
		t.Fatalf("dummy stage: %+v", he)
	}

	// Sessions expire.
	_, extra = uiaError(t, a.CheckUIA(ctx, alice, path, nil))
	session = extra["session"].(string)
	a.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	he, _ = uiaError(t, a.CheckUIA(ctx, alice, path, auth(map[string]any{
		"type": "m.login.password", "session": session, "password": "alicepw", "user": "alice",
	})))
	if he.Status != 400 {
		t.Fatalf("expired session: %+v", he)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM uia_sessions`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("sessions are not stored in the database: %d %v", n, err)
	}
}
