package test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// acctSecrets collects every password, token, nonce and MAC a test hands to or gets from a
// server, so that the test can check none of them ever reached the server's logs.
type acctSecrets struct {
	mu   sync.Mutex
	list []string
}

func (s *acctSecrets) add(vals ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if v != "" {
			s.list = append(s.list, v)
		}
	}
}

// checkLogs fails the test if any collected secret appears in the server's logs.
func (s *acctSecrets) checkLogs(t *testing.T, srv *harness.Server) {
	t.Helper()
	logs := srv.Logs()
	if !strings.Contains(logs, "listening") {
		t.Fatalf("no server logs captured; cannot check them for secrets")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) < 5 {
		t.Fatalf("only %d secrets collected; the log check would prove nothing", len(s.list))
	}
	for _, v := range s.list {
		if strings.Contains(logs, v) {
			t.Errorf("server logs contain a secret (%d chars, starting %q)", len(v), v[:min(4, len(v))])
		}
	}
}

// acctClient returns a mautrix client for the server, with credentials when token is set.
func acctClient(t *testing.T, s *harness.Server, userID, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", token)
	if err != nil {
		t.Fatal(err)
	}
	cli.UserID = id.UserID(userID)
	return cli
}

// acctExpect checks a raw response's status and errcode ("" for none).
func acctExpect(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	code, _ := body["errcode"].(string)
	if status != wantStatus || code != wantCode {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// acctMatrixErr returns the status and errcode of a mautrix error.
func acctMatrixErr(t *testing.T, err error) (int, string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("want an HTTP error from the server, got %v", err)
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	return he.Response.StatusCode, code
}

func acctMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	flag := "notadmin"
	if admin {
		flag = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + flag))
	return hex.EncodeToString(m.Sum(nil))
}

// acctSharedSecretRegister registers through /_synapse/admin/v1/register as
// register_new_matrix_user does and returns the response body.
func acctSharedSecretRegister(t *testing.T, s *harness.Server, sec *acctSecrets, secret, user, password string, admin bool) map[string]any {
	t.Helper()
	status, body := s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
	nonce, _ := body["nonce"].(string)
	if status != 200 || len(nonce) < 32 {
		t.Fatalf("nonce: %d %v", status, body)
	}
	mac := acctMAC(secret, nonce, user, password, admin)
	sec.add(nonce, mac, password)
	status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac,
	})
	if status != 200 {
		t.Fatalf("shared-secret registration of %s: %d %v", user, status, body)
	}
	sec.add(body["access_token"].(string))
	return body
}

// TestAccountsRegistration covers open registration: the UIA two-step with m.login.dummy,
// username rules, generated usernames, inhibit_login, device IDs, refresh tokens, long
// passwords and bad input.
func TestAccountsRegistration(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		sec := &acctSecrets{}
		const reg = "/_matrix/client/v3/register"

		cli := acctClient(t, s, "", "")
		if resp, err := cli.RegisterAvailable(ctx, "alice"); err != nil || !resp.Available {
			t.Fatalf("alice available: %v %v", resp, err)
		}

		// Step one: no auth gives the challenge (401 without errcode) and a session.
		status, body := s.Do(t, "POST", reg, "", map[string]any{"username": "alice", "password": "sixsix"})
		acctExpect(t, "register without auth", status, body, 401, "")
		session, _ := body["session"].(string)
		flows, _ := body["flows"].([]any)
		if session == "" || len(flows) != 1 || body["params"] == nil {
			t.Fatalf("challenge: %v", body)
		}
		if stages := flows[0].(map[string]any)["stages"].([]any); len(stages) != 1 || stages[0] != "m.login.dummy" {
			t.Fatalf("open registration flows: %v", flows)
		}
		// An unknown session is refused.
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "alice", "password": "sixsix",
			"auth": map[string]any{"type": "m.login.dummy", "session": "nosuchsession"}})
		acctExpect(t, "unknown session", status, body, 400, "M_UNKNOWN")

		// Step two with mautrix: the upper-case username is lower-cased, a 6-character
		// password is accepted (no policy by default).
		const alicePW = "sixsix"
		sec.add(alicePW)
		resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Alice", Password: alicePW, InitialDeviceDisplayName: "Alice's laptop"})
		if err != nil {
			t.Fatalf("register alice: %v", err)
		}
		sec.add(resp.AccessToken)
		if resp.UserID != "@alice:hs1.test" || resp.AccessToken == "" || resp.DeviceID == "" || resp.RefreshToken != "" || resp.ExpiresInMS != 0 {
			t.Fatalf("register response: %+v", resp)
		}
		alice := acctClient(t, s, string(resp.UserID), resp.AccessToken)
		who, err := alice.Whoami(ctx)
		if err != nil || who.UserID != resp.UserID || who.DeviceID != resp.DeviceID {
			t.Fatalf("whoami: %+v %v", who, err)
		}
		status, body = s.Do(t, "GET", "/_matrix/client/v3/account/whoami", resp.AccessToken, nil)
		if status != 200 || body["is_guest"] != false {
			t.Fatalf("whoami is_guest: %d %v", status, body)
		}

		// Taken and invalid usernames, before any UIA.
		if _, err := cli.RegisterAvailable(ctx, "alice"); err == nil || !errors.Is(err, mautrix.MUserInUse) {
			t.Fatalf("alice after registration: %v", err)
		}
		for _, bad := range []string{"bad name", "al!ce", "@alice:hs1.test", "ünï", strings.Repeat("x", 250)} {
			status, body = s.Do(t, "GET", "/_matrix/client/v3/register/available?username="+url.QueryEscape(bad), "", nil)
			acctExpect(t, "available "+bad, status, body, 400, "M_INVALID_USERNAME")
			status, body = s.Do(t, "POST", reg, "", map[string]any{"username": bad, "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
			acctExpect(t, "register "+bad, status, body, 400, "M_INVALID_USERNAME")
		}
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "ALICE", "password": "other1"})
		acctExpect(t, "register taken name", status, body, 400, "M_USER_IN_USE")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/register/available", "", nil)
		acctExpect(t, "available without username", status, body, 400, "M_MISSING_PARAM")

		// Guests are refused.
		_, _, err = cli.RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
		if st, code := acctMatrixErr(t, err); st != 403 || code != "M_GUEST_ACCESS_FORBIDDEN" {
			t.Fatalf("guest registration: %d %s", st, code)
		}

		// One request with auth and no session (as Complement registers); no username
		// generates one; inhibit_login returns no token; a requested device ID is kept.
		status, body = s.Do(t, "POST", reg, "", map[string]any{"password": "generated-pw", "auth": map[string]any{"type": "m.login.dummy"}})
		sec.add("generated-pw")
		if status != 200 || !regexp.MustCompile(`^@[a-z0-9]+:hs1\.test$`).MatchString(body["user_id"].(string)) {
			t.Fatalf("generated username: %d %v", status, body)
		}
		sec.add(body["access_token"].(string))
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "quiet", "password": "quiet-pw", "inhibit_login": true,
			"auth": map[string]any{"type": "m.login.dummy"}})
		sec.add("quiet-pw")
		if status != 200 || body["user_id"] != "@quiet:hs1.test" || body["access_token"] != nil || body["device_id"] != nil {
			t.Fatalf("inhibit_login: %d %v", status, body)
		}
		resp, err = cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "carl", Password: "carl-pw", DeviceID: "CARLSPHONE", RefreshToken: true})
		sec.add("carl-pw")
		if err != nil || resp.DeviceID != "CARLSPHONE" || resp.RefreshToken == "" || resp.ExpiresInMS <= 0 {
			t.Fatalf("device_id and refresh_token: %+v %v", resp, err)
		}
		sec.add(resp.AccessToken, resp.RefreshToken)

		// Passwords are checked in full beyond bcrypt's 72 bytes, and capped at 512 bytes.
		long := strings.Repeat("L", 100)
		sec.add(long)
		if _, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "longpw", Password: long + "A"}); err != nil {
			t.Fatal(err)
		}
		_, err = cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "longpw"}, Password: long + "B"})
		if st, code := acctMatrixErr(t, err); st != 403 || code != "M_FORBIDDEN" {
			t.Fatalf("login with a password differing after byte 72: %d %s", st, code)
		}
		login, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "longpw"}, Password: long + "A"})
		if err != nil {
			t.Fatalf("login with the long password: %v", err)
		}
		sec.add(login.AccessToken)
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "huge", "password": strings.Repeat("p", 513), "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "513-byte password", status, body, 400, "M_INVALID_PARAM")

		// Bad input changes nothing.
		status, body = s.Do(t, "POST", reg, "", "this is not json")
		acctExpect(t, "non-JSON body", status, body, 400, "M_NOT_JSON")
		status, body = s.Do(t, "POST", reg, "", `{"username": 5}`)
		acctExpect(t, "username of the wrong type", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", reg, "", `{"username": "typed", "inhibit_login": "yes"}`)
		acctExpect(t, "inhibit_login of the wrong type", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", reg, "", `{"username": "typed", "password": "pw", "auth": "dummy"}`)
		acctExpect(t, "auth of the wrong type", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "nopw", "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "no password", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", reg, "", `{"username": "big", "password": "`+strings.Repeat("x", 2<<20)+`"}`)
		acctExpect(t, "huge body", status, body, 413, "M_TOO_LARGE")
		for _, name := range []string{"typed", "nopw", "big", "huge"} {
			if _, err := cli.RegisterAvailable(ctx, name); err != nil {
				t.Errorf("%s was registered by a bad request: %v", name, err)
			}
		}

		// Token registration and shared-secret registration are not enabled here.
		status, body = s.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "", nil)
		acctExpect(t, "token validity in open mode", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
		acctExpect(t, "nonce without a shared secret", status, body, 400, "M_UNKNOWN")
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": "x"})
		acctExpect(t, "shared-secret registration without a shared secret", status, body, 400, "M_UNKNOWN")

		sec.checkLogs(t, s)
	})
}

// TestAccountsRegistrationDisabled checks that nobody registers when registration is disabled,
// except through the shared secret.
func TestAccountsRegistrationDisabled(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		const secret = "disabled-mode-secret"
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Registration.Mode = config.RegistrationDisabled
			c.Registration.SharedSecret = secret
		}})
		sec := &acctSecrets{}
		sec.add(secret)
		status, body := s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "eve", "password": "evepw1"})
		acctExpect(t, "register when disabled", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "eve", "password": "evepw1", "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "register with dummy auth when disabled", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/register/available?username=eve", "", nil)
		acctExpect(t, "available when disabled", status, body, 403, "M_FORBIDDEN")
		body = acctSharedSecretRegister(t, s, sec, secret, "ops", "ops-password", false)
		if body["user_id"] != "@ops:hs1.test" || body["home_server"] != "hs1.test" || body["device_id"] == "" {
			t.Fatalf("shared-secret registration when disabled: %v", body)
		}
		status, _ = s.Do(t, "GET", "/_matrix/client/v3/account/whoami", body["access_token"].(string), nil)
		if status != 200 {
			t.Fatalf("whoami of the shared-secret user: %d", status)
		}
		sec.checkLogs(t, s)
	})
}

// TestAccountsTokenRegistration covers token-only registration with a token an admin created
// through the admin API, the admin (created by shared-secret registration) being checked, and
// shared-secret registration's MAC and single-use nonces.
func TestAccountsTokenRegistration(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		const secret = "shared-secret-for-tests"
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Registration.Mode = config.RegistrationToken
			c.Registration.SharedSecret = secret
			c.Registration.MinPasswordLength = 10
		}})
		ctx := context.Background()
		sec := &acctSecrets{}
		sec.add(secret)
		const reg = "/_matrix/client/v3/register"
		const admin = "/_synapse/admin/v1/registration_tokens"
		validity := func(tok string) any {
			t.Helper()
			status, body := s.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+url.QueryEscape(tok), "", nil)
			if status != 200 {
				t.Fatalf("validity of %q: %d %v", tok, status, body)
			}
			return body["valid"]
		}

		// Shared-secret registration: a wrong MAC is refused and uses the nonce up.
		_, body := s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
		nonce := body["nonce"].(string)
		sec.add(nonce)
		badMAC := acctMAC("wrong secret", nonce, "root", "root-password", true)
		sec.add(badMAC, "root-password")
		status, body := s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": nonce, "username": "root", "password": "root-password", "admin": true, "mac": badMAC})
		acctExpect(t, "wrong MAC", status, body, 403, "M_FORBIDDEN")
		goodMAC := acctMAC(secret, nonce, "root", "root-password", true)
		sec.add(goodMAC)
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": nonce, "username": "root", "password": "root-password", "admin": true, "mac": goodMAC})
		acctExpect(t, "reused nonce", status, body, 400, "M_UNKNOWN")
		// A MAC computed for admin=false does not register an admin.
		_, body = s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
		nonce = body["nonce"].(string)
		plainMAC := acctMAC(secret, nonce, "root", "root-password", false)
		sec.add(nonce, plainMAC)
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": nonce, "username": "root", "password": "root-password", "admin": true, "mac": plainMAC})
		acctExpect(t, "MAC for another admin flag", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"username": "root"})
		acctExpect(t, "no nonce", status, body, 400, "M_BAD_JSON")

		rootBody := acctSharedSecretRegister(t, s, sec, secret, "Root", "root-password", true)
		if rootBody["user_id"] != "@root:hs1.test" || rootBody["home_server"] != "hs1.test" || rootBody["device_id"] == "" {
			t.Fatalf("admin registration: %v", rootBody)
		}
		root := rootBody["access_token"].(string)
		userBody := acctSharedSecretRegister(t, s, sec, secret, "plain", "plain-password", false)
		plain := userBody["access_token"].(string)
		status, body = s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
		nonce = body["nonce"].(string)
		mac := acctMAC(secret, nonce, "plain", "x-password", false)
		sec.add(nonce, mac, "x-password")
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonce, "username": "plain", "password": "x-password", "mac": mac})
		acctExpect(t, "shared-secret registration of a taken name", status, body, 400, "M_USER_IN_USE")

		// The admin API is for admins only.
		status, body = s.Do(t, "POST", admin+"/new", plain, map[string]any{})
		acctExpect(t, "non-admin creating a token", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", admin, plain, nil)
		acctExpect(t, "non-admin listing tokens", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "GET", admin, "", nil)
		acctExpect(t, "anonymous listing tokens", status, body, 401, "M_MISSING_TOKEN")

		// Bad token parameters.
		for what, req := range map[string]map[string]any{
			"negative uses":   {"uses_allowed": -1},
			"string uses":     {"uses_allowed": "3"},
			"bad characters":  {"token": "no spaces!"},
			"too long":        {"token": strings.Repeat("a", 65)},
			"past expiry":     {"expiry_time": 1000},
			"length too big":  {"length": 65},
			"length not int":  {"length": 1.5},
			"token not a str": {"token": 7},
		} {
			status, body = s.Do(t, "POST", admin+"/new", root, req)
			acctExpect(t, what, status, body, 400, "M_INVALID_PARAM")
		}

		status, tok := s.Do(t, "POST", admin+"/new", root, map[string]any{"uses_allowed": 1})
		token, _ := tok["token"].(string)
		if status != 200 || len(token) != 16 || tok["pending"] != 0.0 || tok["completed"] != 0.0 || tok["uses_allowed"] != 1.0 || tok["expiry_time"] != nil {
			t.Fatalf("create token: %d %v", status, tok)
		}
		sec.add(token)
		status, body = s.Do(t, "POST", admin+"/new", root, map[string]any{"token": token})
		acctExpect(t, "duplicate token", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "GET", admin+"/nosuchtoken", root, nil)
		acctExpect(t, "unknown token", status, body, 404, "M_NOT_FOUND")
		if validity(token) != true || validity("nosuchtoken") != false {
			t.Fatal("validity endpoint is wrong")
		}

		// Dummy registration is not offered; the policy rejects short passwords before UIA.
		if _, err := acctClient(t, s, "", "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "dan", Password: "long-enough-pw"}); err == nil {
			t.Fatal("dummy registration succeeded in token mode")
		}
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "dan", "password": "dummy", "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "short password", status, body, 400, "M_WEAK_PASSWORD")
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "dan", "password": "long-enough-pw", "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "dummy stage in token mode", status, body, 401, "M_UNRECOGNIZED")

		// The registration token flow, step by step.
		const carolPW = "carol-password"
		sec.add(carolPW)
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "carol", "password": carolPW})
		acctExpect(t, "token registration without auth", status, body, 401, "")
		session := body["session"].(string)
		if fl, _ := body["flows"].([]any); len(fl) != 1 || fl[0].(map[string]any)["stages"].([]any)[0] != "m.login.registration_token" {
			t.Fatalf("token-mode flows: %v", body["flows"])
		}
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "carol", "password": carolPW,
			"auth": map[string]any{"type": "m.login.registration_token", "token": "wrongtoken", "session": session}})
		acctExpect(t, "wrong registration token", status, body, 401, "M_UNAUTHORIZED")
		if body["session"] != session || body["flows"] == nil {
			t.Fatalf("failed stage must repeat flows and session: %v", body)
		}
		// The stage completes but the request has no password: the use is pending.
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "carol",
			"auth": map[string]any{"type": "m.login.registration_token", "token": token, "session": session}})
		acctExpect(t, "token stage without a password", status, body, 400, "M_MISSING_PARAM")
		_, tok = s.Do(t, "GET", admin+"/"+token, root, nil)
		if tok["pending"] != 1.0 || tok["completed"] != 0.0 {
			t.Fatalf("pending use not counted: %v", tok)
		}
		if validity(token) != false {
			t.Fatal("a token whose only use is pending is still valid")
		}
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "dave", "password": "dave-password",
			"auth": map[string]any{"type": "m.login.registration_token", "token": token}})
		acctExpect(t, "second registration with a one-use token", status, body, 401, "M_UNAUTHORIZED")
		// The same session finishes the registration.
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "carol", "password": carolPW,
			"auth": map[string]any{"session": session}})
		if status != 200 || body["user_id"] != "@carol:hs1.test" || body["access_token"] == nil {
			t.Fatalf("token registration: %d %v", status, body)
		}
		sec.add(body["access_token"].(string))
		_, tok = s.Do(t, "GET", admin+"/"+token, root, nil)
		if tok["pending"] != 0.0 || tok["completed"] != 1.0 {
			t.Fatalf("completed use not counted: %v", tok)
		}
		// The session is used up.
		status, body = s.Do(t, "POST", reg, "", map[string]any{"username": "carol2", "password": carolPW, "auth": map[string]any{"session": session}})
		acctExpect(t, "reused registration session", status, body, 400, "M_UNKNOWN")

		// Raising uses_allowed makes it valid again; the valid filter follows; delete works.
		status, tok = s.Do(t, "PUT", admin+"/"+token, root, map[string]any{"uses_allowed": 2})
		if status != 200 || tok["uses_allowed"] != 2.0 || tok["completed"] != 1.0 || validity(token) != true {
			t.Fatalf("update token: %d %v", status, tok)
		}
		status, body = s.Do(t, "PUT", admin+"/"+token, root, map[string]any{"uses_allowed": -3})
		acctExpect(t, "update with negative uses", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", admin+"/nosuchtoken", root, map[string]any{"uses_allowed": 3})
		acctExpect(t, "update unknown token", status, body, 404, "M_NOT_FOUND")
		status, tok = s.Do(t, "POST", admin+"/new", root, map[string]any{"token": "named-token_1.x~", "uses_allowed": 0})
		if status != 200 || tok["token"] != "named-token_1.x~" {
			t.Fatalf("named token: %d %v", status, tok)
		}
		_, list := s.Do(t, "GET", admin+"?valid=false", root, nil)
		if l, _ := list["registration_tokens"].([]any); len(l) != 1 || l[0].(map[string]any)["token"] != "named-token_1.x~" {
			t.Fatalf("invalid tokens: %v", list)
		}
		_, list = s.Do(t, "GET", admin+"?valid=true", root, nil)
		if l, _ := list["registration_tokens"].([]any); len(l) != 1 || l[0].(map[string]any)["token"] != token {
			t.Fatalf("valid tokens: %v", list)
		}
		_, list = s.Do(t, "GET", admin, root, nil)
		if l, _ := list["registration_tokens"].([]any); len(l) != 2 {
			t.Fatalf("all tokens: %v", list)
		}
		if status, _ = s.Do(t, "DELETE", admin+"/"+token, root, nil); status != 200 {
			t.Fatalf("delete token: %d", status)
		}
		status, body = s.Do(t, "DELETE", admin+"/"+token, root, nil)
		acctExpect(t, "delete again", status, body, 404, "M_NOT_FOUND")
		if validity(token) != false {
			t.Fatal("deleted token is valid")
		}

		sec.checkLogs(t, s)
	})
}
