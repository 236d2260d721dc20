package test

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// acctRegister registers a user in one request (m.login.dummy without a session, as
// Complement does) and returns the access token.
func acctRegister(t *testing.T, s *harness.Server, sec *acctSecrets, user, password string) string {
	t.Helper()
	status, body := s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": user, "password": password, "auth": map[string]any{"type": "m.login.dummy"},
	})
	if status != 200 {
		t.Fatalf("register %s: %d %v", user, status, body)
	}
	tok := body["access_token"].(string)
	sec.add(password, tok)
	return tok
}

// acctLogin logs in with mautrix (identifier m.id.user) and returns the response.
func acctLogin(t *testing.T, s *harness.Server, sec *acctSecrets, user, password string, refresh bool) *mautrix.RespLogin {
	t.Helper()
	resp, err := acctClient(t, s, "", "").Login(context.Background(), &mautrix.ReqLogin{
		Type:         mautrix.AuthTypePassword,
		Identifier:   mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:     password,
		RefreshToken: refresh,
	})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	sec.add(resp.AccessToken, resp.RefreshToken)
	return resp
}

// acctWhoami returns the status of GET /account/whoami with token and the body.
func acctWhoami(t *testing.T, s *harness.Server, token string) (int, map[string]any) {
	t.Helper()
	return s.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
}

func acctPasswordAuth(user, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": user}}
}

// TestAccountsLogin covers GET/POST /login with both identifier forms and the legacy field,
// its failures, and logout and logout/all.
func TestAccountsLogin(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.PublicBaseURL = "https://matrix.hs1.test/"
		}})
		ctx := context.Background()
		sec := &acctSecrets{}
		const pw = "bob-password"
		acctRegister(t, s, sec, "bob", pw)

		flows, err := acctClient(t, s, "", "").GetLoginFlows(ctx)
		if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
			t.Fatalf("login flows: %+v %v", flows, err)
		}

		// Localpart, full user ID in upper case, and the deprecated top-level "user" field.
		byLocalpart := acctLogin(t, s, sec, "bob", pw, false)
		byMXID := acctLogin(t, s, sec, "@BOB:hs1.test", pw, false)
		if byLocalpart.UserID != "@bob:hs1.test" || byMXID.UserID != "@bob:hs1.test" || byLocalpart.DeviceID == byMXID.DeviceID {
			t.Fatalf("logins: %+v %+v", byLocalpart, byMXID)
		}
		if byLocalpart.WellKnown == nil || byLocalpart.WellKnown.Homeserver.BaseURL != "https://matrix.hs1.test" {
			t.Fatalf("well_known: %+v", byLocalpart.WellKnown)
		}
		status, body := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "user": "bob", "password": pw,
			"device_id": "BOBSPHONE", "initial_device_display_name": "Bob's phone"})
		if status != 200 || body["device_id"] != "BOBSPHONE" || body["home_server"] != "hs1.test" || body["refresh_token"] != nil || body["expires_in_ms"] != nil {
			t.Fatalf("legacy login with device_id: %d %v", status, body)
		}
		legacy := body["access_token"].(string)
		sec.add(legacy)
		for _, tok := range []string{byLocalpart.AccessToken, byMXID.AccessToken, legacy} {
			if status, body := acctWhoami(t, s, tok); status != 200 || body["user_id"] != "@bob:hs1.test" {
				t.Fatalf("whoami: %d %v", status, body)
			}
		}
		if _, who := acctWhoami(t, s, legacy); who["device_id"] != "BOBSPHONE" {
			t.Fatalf("whoami device: %v", who)
		}

		// Failures.
		for what, req := range map[string]map[string]any{
			"wrong password":     {"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "not-bobs"},
			"unknown user":       {"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "nobody"}, "password": pw},
			"other server":       {"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@bob:other.test"}, "password": pw},
			"wrong legacy field": {"type": "m.login.password", "user": "bob", "password": "not-bobs"},
		} {
			status, body := s.Do(t, "POST", "/_matrix/client/v3/login", "", req)
			acctExpect(t, what, status, body, 403, "M_FORBIDDEN")
		}
		for what, req := range map[string]map[string]any{
			"unknown login type":      {"type": "m.login.magic", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": pw},
			"missing login type":      {"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": pw},
			"unknown identifier type": {"type": "m.login.password", "identifier": map[string]any{"type": "m.id.telepathy", "user": "bob"}, "password": pw},
			"third-party identifier":  {"type": "m.login.password", "identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "bob@hs1.test"}, "password": pw},
		} {
			status, body := s.Do(t, "POST", "/_matrix/client/v3/login", "", req)
			acctExpect(t, what, status, body, 400, "M_UNKNOWN")
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}})
		acctExpect(t, "missing password", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "password": pw})
		acctExpect(t, "missing identifier", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", `{"type": "m.login.password", "identifier": "bob", "password": "x"}`)
		acctExpect(t, "identifier of the wrong type", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", "user=bob&password=x")
		acctExpect(t, "form body", status, body, 400, "M_NOT_JSON")
		if !strings.Contains(s.Logs(), `"user_id":"@bob:hs1.test"`) || !strings.Contains(s.Logs(), "login failed") {
			t.Errorf("failed logins are not logged with the user ID")
		}

		// Logout deletes the token and its device; the others keep working.
		if _, err := acctClient(t, s, "@bob:hs1.test", byMXID.AccessToken).Logout(ctx); err != nil {
			t.Fatal(err)
		}
		status, body = acctWhoami(t, s, byMXID.AccessToken)
		acctExpect(t, "whoami after logout", status, body, 401, "M_UNKNOWN_TOKEN")
		if body["soft_logout"] != false {
			t.Fatalf("logout is not a soft logout: %v", body)
		}
		if status, _ := acctWhoami(t, s, byLocalpart.AccessToken); status != 200 {
			t.Fatal("logout of one device logged out another")
		}
		// Logging in again with a deleted device ID just creates it again.
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "user": "bob", "password": pw, "device_id": byMXID.DeviceID.String()})
		if status != 200 || body["device_id"] != byMXID.DeviceID.String() {
			t.Fatalf("login with a deleted device's ID: %d %v", status, body)
		}
		again := body["access_token"].(string)
		sec.add(again)

		// Logout/all deletes every token, including the caller's.
		if _, err := acctClient(t, s, "@bob:hs1.test", legacy).LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{byLocalpart.AccessToken, legacy, again} {
			status, body := acctWhoami(t, s, tok)
			acctExpect(t, "whoami after logout/all", status, body, 401, "M_UNKNOWN_TOKEN")
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/logout", "", nil)
		acctExpect(t, "logout without a token", status, body, 401, "M_MISSING_TOKEN")

		sec.checkLogs(t, s)
	})
}

// TestAccountsRefresh covers refresh tokens: the access token expires (soft logout), the
// refresh token works once and only once, and the old access token stops working.
func TestAccountsRefresh(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Auth.AccessTokenLifetime = config.Duration(time.Second)
		}})
		sec := &acctSecrets{}
		acctRegister(t, s, sec, "rita", "rita-password")
		plain := acctLogin(t, s, sec, "rita", "rita-password", false)
		login := acctLogin(t, s, sec, "rita", "rita-password", true)
		if login.RefreshToken == "" || login.ExpiresInMS != 1000 {
			t.Fatalf("login with refresh_token: %+v", login)
		}
		if status, _ := acctWhoami(t, s, login.AccessToken); status != 200 {
			t.Fatal("fresh token refused")
		}
		time.Sleep(1200 * time.Millisecond)
		status, body := acctWhoami(t, s, login.AccessToken)
		acctExpect(t, "expired token", status, body, 401, "M_UNKNOWN_TOKEN")
		if body["soft_logout"] != true {
			t.Fatalf("expired token is not a soft logout: %v", body)
		}
		// Tokens issued without refresh_token never expire.
		if status, _ := acctWhoami(t, s, plain.AccessToken); status != 200 {
			t.Fatal("a token issued without refresh support expired")
		}

		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": login.RefreshToken})
		newAccess, _ := body["access_token"].(string)
		newRefresh, _ := body["refresh_token"].(string)
		sec.add(newAccess, newRefresh)
		if status != 200 || newAccess == "" || newRefresh == "" || body["expires_in_ms"] != 1000.0 || newRefresh == login.RefreshToken {
			t.Fatalf("refresh: %d %v", status, body)
		}
		status, body = acctWhoami(t, s, newAccess)
		if status != 200 || body["device_id"] != login.DeviceID.String() {
			t.Fatalf("refreshed token: %d %v", status, body)
		}
		status, body = acctWhoami(t, s, login.AccessToken)
		acctExpect(t, "old access token after refresh", status, body, 401, "M_UNKNOWN_TOKEN")
		if body["soft_logout"] != false {
			t.Fatalf("replaced token should be gone for good: %v", body)
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": login.RefreshToken})
		acctExpect(t, "refresh token used twice", status, body, 401, "M_UNKNOWN_TOKEN")
		if body["soft_logout"] != false {
			t.Fatalf("used refresh token: %v", body)
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": "myr_nonsense"})
		acctExpect(t, "unknown refresh token", status, body, 401, "M_UNKNOWN_TOKEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{})
		acctExpect(t, "missing refresh token", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": 12})
		acctExpect(t, "refresh token of the wrong type", status, body, 400, "M_BAD_JSON")

		// The new refresh token works (once), and logout kills the chain.
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": newRefresh})
		if status != 200 {
			t.Fatalf("second refresh: %d %v", status, body)
		}
		third, thirdRefresh := body["access_token"].(string), body["refresh_token"].(string)
		sec.add(third, thirdRefresh)
		if status, _ := s.Do(t, "POST", "/_matrix/client/v3/logout", third, nil); status != 200 {
			t.Fatal("logout failed")
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": thirdRefresh})
		acctExpect(t, "refresh after logout", status, body, 401, "M_UNKNOWN_TOKEN")

		sec.checkLogs(t, s)
	})
}

// TestAccountsPasswordChange covers POST /account/password behind UIA, with and without
// logging out the other devices.
func TestAccountsPasswordChange(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Registration.MinPasswordLength = 8
		}})
		sec := &acctSecrets{}
		const oldPW, newPW, newerPW = "old-password", "new-password", "newer-password"
		sec.add(newPW, newerPW)
		current := acctRegister(t, s, sec, "pat", oldPW)
		other := acctLogin(t, s, sec, "pat", oldPW, true)
		const path = "/_matrix/client/v3/account/password"

		status, body := s.Do(t, "POST", path, current, map[string]any{"new_password": newPW})
		acctExpect(t, "password change without auth", status, body, 401, "")
		session := body["session"].(string)
		if fl, _ := body["flows"].([]any); len(fl) != 1 || fl[0].(map[string]any)["stages"].([]any)[0] != "m.login.password" {
			t.Fatalf("password change flows: %v", body)
		}
		wrong := acctPasswordAuth("pat", "not-the-password")
		wrong["session"] = session
		status, body = s.Do(t, "POST", path, current, map[string]any{"new_password": newPW, "auth": wrong})
		acctExpect(t, "wrong current password", status, body, 401, "M_FORBIDDEN")
		if body["session"] != session || body["flows"] == nil {
			t.Fatalf("failed stage must repeat the session and flows: %v", body)
		}
		status, body = s.Do(t, "POST", path, current, map[string]any{"new_password": "short", "auth": acctPasswordAuth("pat", oldPW)})
		acctExpect(t, "weak new password", status, body, 400, "M_WEAK_PASSWORD")
		status, body = s.Do(t, "POST", path, current, map[string]any{"auth": acctPasswordAuth("pat", oldPW)})
		acctExpect(t, "missing new password", status, body, 400, "M_MISSING_PARAM")

		right := acctPasswordAuth("@pat:hs1.test", oldPW)
		right["session"] = session
		status, body = s.Do(t, "POST", path, current, map[string]any{"new_password": newPW, "auth": right})
		if status != 200 {
			t.Fatalf("password change: %d %v", status, body)
		}
		if status, _ := acctWhoami(t, s, current); status != 200 {
			t.Fatal("the device that changed the password was logged out")
		}
		status, body = acctWhoami(t, s, other.AccessToken)
		acctExpect(t, "other device after password change", status, body, 401, "M_UNKNOWN_TOKEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": other.RefreshToken})
		acctExpect(t, "other device's refresh token after password change", status, body, 401, "M_UNKNOWN_TOKEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "pat", "password": oldPW})
		acctExpect(t, "login with the old password", status, body, 403, "M_FORBIDDEN")
		kept := acctLogin(t, s, sec, "pat", newPW, false)

		// logout_devices: false keeps the other devices; one request without a session works.
		status, body = s.Do(t, "POST", path, current, map[string]any{"new_password": newerPW, "logout_devices": false, "auth": acctPasswordAuth("pat", newPW)})
		if status != 200 {
			t.Fatalf("password change without logout: %d %v", status, body)
		}
		if status, _ := acctWhoami(t, s, kept.AccessToken); status != 200 {
			t.Fatal("logout_devices=false logged another device out")
		}
		acctLogin(t, s, sec, "pat", newerPW, false)
		sec.checkLogs(t, s)
	})
}

// TestAccountsDeactivation covers POST /account/deactivate: tokens die, login answers
// M_USER_DEACTIVATED, the user ID is never reused and erase clears the profile.
func TestAccountsDeactivation(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		sec := &acctSecrets{}
		const pw = "dora-password"
		tok := acctRegister(t, s, sec, "dora", pw)
		other := acctLogin(t, s, sec, "dora", pw, true)
		const path = "/_matrix/client/v3/account/deactivate"
		const profile = "/_matrix/client/v3/profile/@dora:hs1.test/displayname"
		if status, body := s.Do(t, "GET", profile, tok, nil); status != 200 || body["displayname"] != "dora" {
			t.Fatalf("display name of a new account: %d %v", status, body)
		}
		const teamField = "/_matrix/client/v3/profile/@dora:hs1.test/org.example.team"
		if status, body := s.Do(t, "PUT", teamField, tok, map[string]any{"org.example.team": "blue"}); status != 200 {
			t.Fatalf("set custom profile field: %d %v", status, body)
		}

		status, body := s.Do(t, "POST", path, tok, map[string]any{})
		acctExpect(t, "deactivate without auth", status, body, 401, "")
		status, body = s.Do(t, "POST", path, tok, map[string]any{"auth": acctPasswordAuth("dora", "wrong-password")})
		acctExpect(t, "deactivate with the wrong password", status, body, 401, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", path, tok, map[string]any{"erase": "yes", "auth": acctPasswordAuth("dora", pw)})
		acctExpect(t, "erase of the wrong type", status, body, 400, "M_BAD_JSON")
		if status, _ := acctWhoami(t, s, tok); status != 200 {
			t.Fatal("failed deactivation attempts changed something")
		}
		status, body = s.Do(t, "POST", path, tok, map[string]any{"erase": true, "auth": acctPasswordAuth("dora", pw)})
		if status != 200 || body["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate: %d %v", status, body)
		}
		for _, t2 := range []string{tok, other.AccessToken} {
			status, body := acctWhoami(t, s, t2)
			acctExpect(t, "token after deactivation", status, body, 401, "M_UNKNOWN_TOKEN")
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": other.RefreshToken})
		acctExpect(t, "refresh after deactivation", status, body, 401, "M_UNKNOWN_TOKEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "dora", "password": pw})
		acctExpect(t, "login after deactivation", status, body, 403, "M_USER_DEACTIVATED")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "dora", "password": pw, "auth": map[string]any{"type": "m.login.dummy"}})
		acctExpect(t, "register a deactivated user ID", status, body, 400, "M_USER_IN_USE")
		status, body = s.Do(t, "GET", "/_matrix/client/v3/register/available?username=dora", "", nil)
		acctExpect(t, "deactivated user ID available", status, body, 400, "M_USER_IN_USE")

		viewer := acctRegister(t, s, sec, "viewer", "viewer-password")
		if status, body := s.Do(t, "GET", profile, viewer, nil); status == 200 && body["displayname"] == "dora" {
			t.Fatalf("erase left the display name: %v", body)
		}
		if status, body := s.Do(t, "GET", "/_matrix/client/v3/profile/@dora:hs1.test", viewer, nil); body["org.example.team"] != nil {
			t.Fatalf("erase left a custom profile field: %d %v", status, body)
		}
		sec.checkLogs(t, s)
	})
}

// TestAccountsCreateAccountAndRestart runs `myelin create-account` against a running server's
// data, and checks that accounts, tokens and UIA sessions survive a restart.
func TestAccountsCreateAccountAndRestart(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		sec := &acctSecrets{}
		bin := harness.Binary(t)
		const pw = "erin-password"
		sec.add(pw)
		createAccount := func(args ...string) (string, error) {
			out, err := exec.Command(bin, append([]string{"create-account", "--config", s.ConfigPath}, args...)...).CombinedOutput()
			return string(out), err
		}
		out, err := createAccount("--user", "Erin", "--password", pw, "--admin")
		if err != nil || !strings.Contains(out, "@erin:hs1.test") {
			t.Fatalf("create-account: %v\n%s", err, out)
		}
		if strings.Contains(out, pw) {
			t.Fatalf("create-account printed the password:\n%s", out)
		}
		if out, err := createAccount("--user", "erin", "--password", "another-pw"); err == nil || !strings.Contains(out, "taken") {
			t.Fatalf("create-account of an existing user: %v\n%s", err, out)
		}
		if out, err := createAccount("--user", "bad name", "--password", "x"); err == nil {
			t.Fatalf("create-account with an invalid name succeeded:\n%s", out)
		}
		erin := acctLogin(t, s, sec, "erin", pw, false)
		if status, body := s.Do(t, "GET", "/_synapse/admin/v1/registration_tokens", erin.AccessToken, nil); status != 200 {
			t.Fatalf("--admin did not make an admin: %d %v", status, body)
		}
		frank := acctRegister(t, s, sec, "frank", "frank-password")

		// A UIA session started before the restart completes after it.
		const newPW = "erin-new-password"
		sec.add(newPW)
		status, body := s.Do(t, "POST", "/_matrix/client/v3/account/password", erin.AccessToken, map[string]any{"new_password": newPW})
		acctExpect(t, "UIA challenge", status, body, 401, "")
		session := body["session"].(string)

		s.Restart()

		for _, tok := range []string{erin.AccessToken, frank} {
			if status, body := acctWhoami(t, s, tok); status != http.StatusOK {
				t.Fatalf("token after restart: %d %v", status, body)
			}
		}
		acctLogin(t, s, sec, "frank", "frank-password", false)
		auth := acctPasswordAuth("erin", pw)
		auth["session"] = session
		status, body = s.Do(t, "POST", "/_matrix/client/v3/account/deactivate", erin.AccessToken, map[string]any{"auth": auth})
		acctExpect(t, "UIA session used on another endpoint", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/account/password", erin.AccessToken, map[string]any{"new_password": newPW, "auth": auth})
		if status != 200 {
			t.Fatalf("UIA session after restart: %d %v", status, body)
		}
		acctLogin(t, s, sec, "erin", newPW, false)
		sec.checkLogs(t, s)
	})
}
