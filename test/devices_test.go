package test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// Helpers shared by the user data tests (devices, profile, account data, filters, OpenID).

const udPassword = "correct horse battery staple"

// udRegister registers a user through the API with the mautrix client and returns it logged in.
func udRegister(t *testing.T, s *harness.Server, localpart string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: localpart, Password: udPassword})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

// udLogin logs a user in again with a password, giving a new device.
func udLogin(t *testing.T, s *harness.Server, localpart, deviceName string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:                 udPassword,
		InitialDeviceDisplayName: deviceName,
		StoreCredentials:         true,
	})
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	return cli
}

// udErr returns the status and errcode of a failed mautrix call.
func udErr(t *testing.T, err error) (int, string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("want an HTTP error, got %v", err)
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	return he.Response.StatusCode, code
}

// udExpect checks the status and errcode of a raw request's answer.
func udExpect(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || (wantCode != "" && body["errcode"] != wantCode) {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// esc escapes one path segment (user IDs, room IDs, types).
func esc(s string) string { return url.PathEscape(s) }

func passwordAuth(user, session string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   udPassword,
		"session":    session,
	}
}

// uiaSession starts user-interactive auth for a request and returns its session, checking
// that the server asks for a password.
func uiaSession(t *testing.T, s *harness.Server, method, path, token string, body map[string]any) string {
	t.Helper()
	status, resp := s.Do(t, method, path, token, body)
	if status != 401 {
		t.Fatalf("%s %s without auth: want 401 UIA, got %d %v", method, path, status, resp)
	}
	session, _ := resp["session"].(string)
	flows, _ := resp["flows"].([]any)
	hasPassword := false
	for _, f := range flows {
		stages, _ := f.(map[string]any)["stages"].([]any)
		hasPassword = hasPassword || (len(stages) == 1 && stages[0] == "m.login.password")
	}
	if session == "" || !hasPassword {
		t.Fatalf("UIA response without session or password flow: %v", resp)
	}
	return session
}

func deviceIDs(t *testing.T, cli *mautrix.Client) map[id.DeviceID]mautrix.RespDeviceInfo {
	t.Helper()
	resp, err := cli.GetDevicesInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[id.DeviceID]mautrix.RespDeviceInfo{}
	for _, d := range resp.Devices {
		out[d.DeviceID] = d
	}
	return out
}

func TestDevices(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		laptop := udLogin(t, s, "alice", "Laptop")
		bob := udRegister(t, s, "bob")

		devs := deviceIDs(t, alice)
		if len(devs) != 2 {
			t.Fatalf("alice has %d devices, want 2: %v", len(devs), devs)
		}
		if d, ok := devs[laptop.DeviceID]; !ok || d.DisplayName != "Laptop" {
			t.Fatalf("second device missing or unnamed: %+v", devs)
		}
		if _, ok := devs[bob.DeviceID]; ok {
			t.Fatal("bob's device listed among alice's")
		}

		// Using a device records when and where it was last seen (asynchronously).
		deadline := time.Now().Add(10 * time.Second)
		for {
			d, err := laptop.GetDeviceInfo(ctx, laptop.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			if d.LastSeenTS > time.Now().Add(-time.Minute).UnixMilli() && d.LastSeenIP == "127.0.0.1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("last seen not recorded: %+v", d)
			}
			time.Sleep(100 * time.Millisecond)
		}

		// One device; unknown and other users' devices are 404.
		d, err := alice.GetDeviceInfo(ctx, laptop.DeviceID)
		if err != nil || d.DeviceID != laptop.DeviceID || d.DisplayName != "Laptop" {
			t.Fatalf("get device: %+v %v", d, err)
		}
		_, err = alice.GetDeviceInfo(ctx, "NOSUCHDEVICE")
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("unknown device: %d %s", st, code)
		}
		_, err = alice.GetDeviceInfo(ctx, bob.DeviceID)
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("bob's device through alice: %d %s", st, code)
		}

		// Renaming.
		if err := alice.SetDeviceInfo(ctx, laptop.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Work laptop"}); err != nil {
			t.Fatal(err)
		}
		if d, _ := laptop.GetDeviceInfo(ctx, laptop.DeviceID); d == nil || d.DisplayName != "Work laptop" {
			t.Fatalf("after rename: %+v", d)
		}
		err = alice.SetDeviceInfo(ctx, "NOSUCHDEVICE", &mautrix.ReqDeviceInfo{DisplayName: "x"})
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("rename unknown device: %d %s", st, code)
		}
		err = bob.SetDeviceInfo(ctx, laptop.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "pwned"})
		if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("bob renaming alice's device: %d %s", st, code)
		}
		path := "/_matrix/client/v3/devices/" + esc(laptop.DeviceID.String())
		status, body := s.Do(t, "PUT", path, alice.AccessToken, `{"display_name": 5}`)
		udExpect(t, "numeric display name", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "PUT", path, alice.AccessToken, `display_name=x`)
		udExpect(t, "non-JSON rename", status, body, 400, "M_NOT_JSON")
		status, body = s.Do(t, "PUT", path, alice.AccessToken, map[string]any{"display_name": string(make([]byte, 500))})
		udExpect(t, "overlong display name", status, body, 400, "M_TOO_LARGE")
		status, body = s.Do(t, "PUT", path, alice.AccessToken, `{}`)
		udExpect(t, "empty update", status, body, 200, "")
		status, body = s.Do(t, "PUT", "/_matrix/client/v3/devices/NOSUCHDEVICE", alice.AccessToken, `{}`)
		udExpect(t, "empty update of unknown device", status, body, 404, "M_NOT_FOUND")
		if d, _ := laptop.GetDeviceInfo(ctx, laptop.DeviceID); d == nil || d.DisplayName != "Work laptop" {
			t.Fatalf("refused updates changed the device: %+v", d)
		}
		status, body = s.Do(t, "GET", "/_matrix/client/v3/devices", "", nil)
		udExpect(t, "devices without token", status, body, 401, "M_MISSING_TOKEN")

		// The name survives a restart.
		s.Restart()
		if d, err := alice.GetDeviceInfo(ctx, laptop.DeviceID); err != nil || d.DisplayName != "Work laptop" {
			t.Fatalf("after restart: %+v %v", d, err)
		}
	})
}

func TestDeleteDevices(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		laptop := udLogin(t, s, "alice", "Laptop")
		bob := udRegister(t, s, "bob")

		// DELETE /devices/{id} needs user-interactive auth: nothing happens without it.
		err := alice.DeleteDevice(ctx, laptop.DeviceID, &mautrix.ReqDeleteDevice[any]{})
		if st, _ := udErr(t, err); st != 401 {
			t.Fatalf("delete without auth: %d", st)
		}
		if _, ok := deviceIDs(t, alice)[laptop.DeviceID]; !ok {
			t.Fatal("device deleted without auth")
		}
		path := "/_matrix/client/v3/devices/" + esc(laptop.DeviceID.String())
		session := uiaSession(t, s, "DELETE", path, alice.AccessToken, map[string]any{})
		wrong := passwordAuth("alice", session)
		wrong["password"] = "wrong password"
		status, body := s.Do(t, "DELETE", path, alice.AccessToken, map[string]any{"auth": wrong})
		udExpect(t, "delete with a wrong password", status, body, 401, "M_FORBIDDEN")
		if _, ok := deviceIDs(t, alice)[laptop.DeviceID]; !ok {
			t.Fatal("device deleted with a wrong password")
		}
		err = alice.DeleteDevice(ctx, laptop.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth("alice", session)})
		if err != nil {
			t.Fatalf("delete with password: %v", err)
		}
		devs := deviceIDs(t, alice)
		if _, ok := devs[laptop.DeviceID]; ok || len(devs) != 1 {
			t.Fatalf("after delete: %v", devs)
		}
		// The deleted device's token is dead.
		status, body = s.Do(t, "GET", "/_matrix/client/v3/devices", laptop.AccessToken, nil)
		udExpect(t, "token of a deleted device", status, body, 401, "M_UNKNOWN_TOKEN")

		// POST /delete_devices removes several at once; unknown IDs are ignored.
		p1 := udLogin(t, s, "alice", "Phone 1")
		p2 := udLogin(t, s, "alice", "Phone 2")
		p3 := udLogin(t, s, "alice", "Phone 3")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{})
		udExpect(t, "delete_devices without devices", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{"devices": p1.DeviceID})
		udExpect(t, "delete_devices with a string", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, "[]")
		udExpect(t, "delete_devices with an array body", status, body, 400, "M_BAD_JSON")
		req := map[string]any{"devices": []id.DeviceID{p1.DeviceID, p2.DeviceID, "NOSUCHDEVICE"}}
		session = uiaSession(t, s, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, req)
		err = alice.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{
			Devices: []id.DeviceID{p1.DeviceID, p2.DeviceID, "NOSUCHDEVICE"}, Auth: passwordAuth("alice", session)})
		if err != nil {
			t.Fatalf("delete_devices: %v", err)
		}
		devs = deviceIDs(t, alice)
		if _, ok := devs[p1.DeviceID]; ok {
			t.Fatalf("p1 still there: %v", devs)
		}
		if _, ok := devs[p2.DeviceID]; ok {
			t.Fatalf("p2 still there: %v", devs)
		}
		if _, ok := devs[p3.DeviceID]; !ok || len(devs) != 2 {
			t.Fatalf("wrong devices left: %v", devs)
		}

		// Bob cannot delete alice's devices: the IDs are looked up among his own.
		bobReq := map[string]any{"devices": []id.DeviceID{p3.DeviceID}}
		session = uiaSession(t, s, "POST", "/_matrix/client/v3/delete_devices", bob.AccessToken, bobReq)
		bobReq["auth"] = passwordAuth("bob", session)
		status, body = s.Do(t, "POST", "/_matrix/client/v3/delete_devices", bob.AccessToken, bobReq)
		udExpect(t, "bob deleting alice's device", status, body, 200, "")
		if _, ok := deviceIDs(t, alice)[p3.DeviceID]; !ok {
			t.Fatal("bob deleted alice's device")
		}
		if _, err := p3.GetDevicesInfo(ctx); err != nil {
			t.Fatalf("alice's device stopped working after bob's request: %v", err)
		}

		// Deletions survive a restart.
		s.Restart()
		devs = deviceIDs(t, alice)
		if len(devs) != 2 {
			t.Fatalf("after restart: %v", devs)
		}
	})
}
