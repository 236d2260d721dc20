package test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
	"github.com/myelin-chat/myelin/test/harness"
)

// End-to-end tests of /keys/*: real server processes, real HTTP, keys signed here with
// ed25519 over mautrix's canonical JSON (an implementation independent of the server's),
// and what the server returns verified with mautrix's signature checks.

const e2ePassword = "e2ee-test-password"

// e2eDev is a logged-in device with its ed25519 identity key.
type e2eDev struct {
	cli      *mautrix.Client
	userID   string
	deviceID string
	token    string
	priv     ed25519.PrivateKey
	ed       string // unpadded base64 public key
	curve    string
}

// e2eKeyPair returns a new ed25519 key and its unpadded base64 public key.
func e2eKeyPair(t testing.TB) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, base64.RawStdEncoding.EncodeToString(pub)
}

func e2eRandomKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawStdEncoding.EncodeToString(b[:])
}

func e2eNewDev(t testing.TB, cli *mautrix.Client) *e2eDev {
	priv, pub := e2eKeyPair(t)
	return &e2eDev{cli: cli, userID: cli.UserID.String(), deviceID: cli.DeviceID.String(), token: cli.AccessToken,
		priv: priv, ed: pub, curve: e2eRandomKey()}
}

// e2eRegister registers localpart with mautrix (m.login.dummy) and returns its first device.
func e2eRegister(t testing.TB, s *harness.Server, localpart string) *e2eDev {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: e2ePassword, InitialDeviceDisplayName: localpart + "'s first device"})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return e2eNewDev(t, cli)
}

// e2eLogin logs localpart in again, as a new device (or deviceID when not "").
func e2eLogin(t testing.TB, s *harness.Server, localpart, deviceID string) *e2eDev {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:   e2ePassword, DeviceID: id.DeviceID(deviceID), StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	return e2eNewDev(t, cli)
}

// e2eSign adds to obj the signature of userID's key keyID (e.g. "ed25519:DEVICE") made with priv.
func e2eSign(t testing.TB, obj map[string]any, userID, keyID string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	signed := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			signed[k] = v
		}
	}
	raw, err := json.Marshal(signed)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := canonicaljson.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
		obj["signatures"] = sigs
	}
	mine, _ := sigs[userID].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
		sigs[userID] = mine
	}
	mine[keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, canonical))
	return obj
}

// deviceKeys returns the device's self-signed device_keys object.
func (d *e2eDev) deviceKeys(t testing.TB) map[string]any {
	t.Helper()
	return e2eSign(t, map[string]any{
		"user_id":    d.userID,
		"device_id":  d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"ed25519:" + d.deviceID:    d.ed,
			"curve25519:" + d.deviceID: d.curve,
		},
	}, d.userID, "ed25519:"+d.deviceID, d.priv)
}

// otk returns a signed_curve25519 key signed by the device (a fallback key when fallback).
func (d *e2eDev) otk(t testing.TB, fallback bool) map[string]any {
	t.Helper()
	k := map[string]any{"key": e2eRandomKey()}
	if fallback {
		k["fallback"] = true
	}
	return e2eSign(t, k, d.userID, "ed25519:"+d.deviceID, d.priv)
}

// otks returns n signed one-time keys named signed_curve25519:<prefix><i>.
func (d *e2eDev) otks(t testing.TB, prefix string, n int) map[string]any {
	out := map[string]any{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%04d", prefix, i)] = d.otk(t, false)
	}
	return out
}

// upload posts /keys/upload and returns the status and body.
func (d *e2eDev) upload(t testing.TB, s *harness.Server, body map[string]any) (int, map[string]any) {
	t.Helper()
	return s.Do(t, "POST", "/_matrix/client/v3/keys/upload", d.token, body)
}

func e2eExpect(t testing.TB, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || (wantCode != "" && body["errcode"] != wantCode) {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// e2eQuery runs /keys/query as token for users (all their devices) and returns the body.
func e2eQuery(t testing.TB, s *harness.Server, token string, users ...string) map[string]any {
	t.Helper()
	req := map[string]any{}
	for _, u := range users {
		req[u] = []string{}
	}
	status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/query", token, map[string]any{"device_keys": req, "timeout": 10000})
	e2eExpect(t, "keys/query", status, body, 200, "")
	return body
}

// e2eGet walks a JSON body along keys; nil when a step is missing.
func e2eGet(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// e2eVerify checks with mautrix that obj carries a valid signature of userID's ed25519 key keyName.
func e2eVerify(t testing.TB, obj any, userID, keyName, pub string) bool {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := signatures.VerifySignatureJSON(json.RawMessage(raw), id.UserID(userID), keyName, id.Ed25519(pub))
	return ok && err == nil
}

func e2eCounts(t testing.TB, s *harness.Server, d *e2eDev) map[string]any {
	t.Helper()
	status, body := d.upload(t, s, map[string]any{})
	e2eExpect(t, "empty keys/upload", status, body, 200, "")
	counts, _ := body["one_time_key_counts"].(map[string]any)
	return counts
}

// TestKeysUploadQueryRoundTrip uploads device and one-time keys with the mautrix client
// and reads them back with /keys/query as another user, signatures verified by mautrix.
func TestKeysUploadQueryRoundTrip(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		alice2 := e2eLogin(t, s, "alice", "")
		bob := e2eRegister(t, s, "bob")

		// Upload through mautrix's own request types (what a mautrix bot sends).
		var dk mautrix.DeviceKeys
		raw, _ := json.Marshal(alice.deviceKeys(t))
		if err := json.Unmarshal(raw, &dk); err != nil {
			t.Fatal(err)
		}
		otks := map[id.KeyID]mautrix.OneTimeKey{}
		for name, k := range alice.otks(t, "A", 5) {
			var o mautrix.OneTimeKey
			raw, _ := json.Marshal(k)
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatal(err)
			}
			otks[id.KeyID(name)] = o
		}
		resp, err := alice.cli.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: &dk, OneTimeKeys: otks})
		if err != nil || resp.OneTimeKeyCounts.SignedCurve25519 != 5 {
			t.Fatalf("upload: %+v %v", resp, err)
		}
		status, body := alice2.upload(t, s, map[string]any{
			"device_keys":   alice2.deviceKeys(t),
			"fallback_keys": map[string]any{"signed_curve25519:FB": alice2.otk(t, true)},
		})
		e2eExpect(t, "upload of the second device", status, body, 200, "")

		q, err := bob.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.userID): {}}, Timeout: 10000})
		if err != nil {
			t.Fatal(err)
		}
		devs := q.DeviceKeys[id.UserID(alice.userID)]
		if len(devs) != 2 {
			t.Fatalf("bob sees %d devices of alice: %+v", len(devs), devs)
		}
		got := devs[id.DeviceID(alice.deviceID)]
		if got.Keys.GetEd25519(id.DeviceID(alice.deviceID)).String() != alice.ed ||
			got.Keys.GetCurve25519(id.DeviceID(alice.deviceID)).String() != alice.curve {
			t.Fatalf("keys of alice's device: %+v", got)
		}
		if got.Unsigned["device_display_name"] != "alice's first device" {
			t.Fatalf("unsigned of alice's device: %+v", got.Unsigned)
		}
		body = e2eQuery(t, s, bob.token, alice.userID)
		for _, d := range []*e2eDev{alice, alice2} {
			obj := e2eGet(body, "device_keys", alice.userID, d.deviceID)
			if !e2eVerify(t, obj, alice.userID, d.deviceID, d.ed) {
				t.Fatalf("self-signature of %s does not verify: %v", d.deviceID, obj)
			}
		}

		// Listed devices only; unknown devices and users are simply absent; other servers fail.
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/query", bob.token, map[string]any{"device_keys": map[string]any{
			alice.userID: []string{alice2.deviceID, "NOPE"}, "@nobody:hs1.test": []string{}, "@carol:elsewhere.test": []string{}}})
		e2eExpect(t, "query listed devices", status, body, 200, "")
		if d, _ := e2eGet(body, "device_keys", alice.userID).(map[string]any); len(d) != 1 || d[alice2.deviceID] == nil {
			t.Fatalf("listed devices: %v", body["device_keys"])
		}
		if e2eGet(body, "failures", "elsewhere.test") == nil {
			t.Fatalf("remote server not in failures: %v", body["failures"])
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/query", bob.token, map[string]any{"device_keys": map[string]any{"not-a-user": []string{}}})
		e2eExpect(t, "query of an invalid user ID", status, body, 400, "M_INVALID_PARAM")

		// Re-uploading the same device keys is fine; other identity keys for the device
		// replace the old ones (as Synapse does; clients judge a device whose keys changed).
		status, body = alice.upload(t, s, map[string]any{"device_keys": alice.deviceKeys(t)})
		e2eExpect(t, "identical re-upload", status, body, 200, "")
		oldEd := alice.ed
		alice.priv, alice.ed = e2eKeyPair(t)
		status, body = alice.upload(t, s, map[string]any{"device_keys": alice.deviceKeys(t)})
		e2eExpect(t, "re-upload with new identity keys", status, body, 200, "")
		body = e2eQuery(t, s, bob.token, alice.userID)
		if got := e2eGet(body, "device_keys", alice.userID, alice.deviceID, "keys", "ed25519:"+alice.deviceID); got != alice.ed || got == oldEd {
			t.Fatalf("new identity keys not served: %v", got)
		}

		// Unsigned device keys (Complement uploads them) are accepted and served.
		carol := e2eRegister(t, s, "carol")
		unsigned := carol.deviceKeys(t)
		delete(unsigned, "signatures")
		status, body = carol.upload(t, s, map[string]any{"device_keys": unsigned})
		e2eExpect(t, "unsigned device keys", status, body, 200, "")
		body = e2eQuery(t, s, bob.token, carol.userID)
		if e2eGet(body, "device_keys", carol.userID, carol.deviceID, "keys", "ed25519:"+carol.deviceID) != carol.ed {
			t.Fatalf("unsigned device keys not served: %v", body)
		}
	})
}

// TestKeysUploadRejectsBadInput sends malformed keys, keys for other users' devices,
// signatures that do not verify and oversized uploads: each is refused with the spec's
// error and nothing of the request is stored.
func TestKeysUploadRejectsBadInput(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Limits.MaxRequestBytes = 1 << 20
		}})
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		good := alice.deviceKeys(t)

		with := func(mod func(k map[string]any)) map[string]any {
			k := alice.deviceKeys(t)
			mod(k)
			return k
		}
		tampered := alice.deviceKeys(t)
		tampered["algorithms"] = []string{"m.megolm.v1.aes-sha2"} // after signing
		bobDev := bob.deviceKeys(t)
		cases := []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"not JSON", "{nope", 400, "M_NOT_JSON"},
			{"device_keys not an object", map[string]any{"device_keys": "x"}, 400, "M_BAD_JSON"},
			{"device_keys of another user's device", map[string]any{"device_keys": bobDev}, 400, "M_INVALID_PARAM"},
			{"device_keys with another device ID", map[string]any{"device_keys": e2eSign(t, with(func(k map[string]any) {
				k["device_id"] = "OTHER"
				delete(k, "signatures")
			}), alice.userID, "ed25519:"+alice.deviceID, alice.priv)}, 400, "M_INVALID_PARAM"},
			{"device_keys without the ed25519 key", map[string]any{"device_keys": e2eSign(t, with(func(k map[string]any) {
				k["keys"] = map[string]any{"curve25519:" + alice.deviceID: alice.curve}
				delete(k, "signatures")
			}), alice.userID, "ed25519:"+alice.deviceID, alice.priv)}, 400, "M_INVALID_PARAM"},
			{"device_keys with a signature that does not verify", map[string]any{"device_keys": tampered}, 400, "M_INVALID_SIGNATURE"},
			{"device_keys signed by another key", map[string]any{"device_keys": e2eSign(t, with(func(k map[string]any) { delete(k, "signatures") }),
				alice.userID, "ed25519:"+alice.deviceID, bob.priv)}, 400, "M_INVALID_SIGNATURE"},
			{"algorithms of the wrong type", map[string]any{"device_keys": e2eSign(t, with(func(k map[string]any) {
				k["algorithms"] = "m.megolm.v1.aes-sha2"
				delete(k, "signatures")
			}), alice.userID, "ed25519:"+alice.deviceID, alice.priv)}, 400, "M_BAD_JSON"},
			{"good device keys with a one-time key that does not verify", map[string]any{"device_keys": good,
				"one_time_keys": map[string]any{"signed_curve25519:X": e2eSign(t, map[string]any{"key": e2eRandomKey()}, alice.userID, "ed25519:"+alice.deviceID, bob.priv)}}, 400, "M_INVALID_SIGNATURE"},
			{"good device keys with an unsigned signed_curve25519 key", map[string]any{"device_keys": good,
				"one_time_keys": map[string]any{"signed_curve25519:X": e2eRandomKey()}}, 400, "M_BAD_JSON"},
			{"good device keys with a badly named key", map[string]any{"device_keys": good,
				"one_time_keys": map[string]any{"nocolon": alice.otk(t, false)}}, 400, "M_INVALID_PARAM"},
			{"signed one-time keys before any device keys", map[string]any{"one_time_keys": alice.otks(t, "E", 2)}, 400, "M_INVALID_PARAM"},
			{"two fallback keys for one algorithm", map[string]any{"device_keys": good, "fallback_keys": map[string]any{
				"signed_curve25519:F1": alice.otk(t, true), "signed_curve25519:F2": alice.otk(t, true)}}, 400, "M_INVALID_PARAM"},
			{"too many one-time keys", map[string]any{"device_keys": good, "one_time_keys": alice.otks(t, "M", 1001)}, 413, "M_TOO_LARGE"},
			{"body over the size limit", map[string]any{"device_keys": good, "padding": strings.Repeat("x", 1<<20)}, 413, "M_TOO_LARGE"},
		}
		for _, c := range cases {
			status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/upload", alice.token, c.body)
			e2eExpect(t, c.name, status, body, c.status, c.code)
		}
		status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/upload", "", map[string]any{"device_keys": good})
		e2eExpect(t, "upload without a token", status, body, 401, "M_MISSING_TOKEN")

		// Nothing was stored by any of them.
		q := e2eQuery(t, s, bob.token, alice.userID, bob.userID)
		if d, _ := e2eGet(q, "device_keys", alice.userID).(map[string]any); len(d) != 0 {
			t.Fatalf("refused uploads stored alice's keys: %v", d)
		}
		if d, _ := e2eGet(q, "device_keys", bob.userID).(map[string]any); len(d) != 0 {
			t.Fatalf("alice stored keys for bob's device: %v", d)
		}
		if c := e2eCounts(t, s, alice); c["signed_curve25519"] != float64(0) {
			t.Fatalf("one-time keys stored by refused uploads: %v", c)
		}

		// A key ID uploaded again with other content is refused, with the rest of its request.
		status, body = alice.upload(t, s, map[string]any{"device_keys": good, "one_time_keys": alice.otks(t, "A", 3)})
		e2eExpect(t, "good upload", status, body, 200, "")
		dup := alice.otks(t, "A", 1)
		dup["signed_curve25519:NEW"] = alice.otk(t, false)
		status, body = alice.upload(t, s, map[string]any{"one_time_keys": dup})
		e2eExpect(t, "duplicate key ID with other content", status, body, 400, "M_INVALID_PARAM")
		if c := e2eCounts(t, s, alice); c["signed_curve25519"] != float64(3) {
			t.Fatalf("counts after a refused duplicate: %v", c)
		}
	})
}

// e2eClaim claims one signed_curve25519 key of each device for token and returns the key
// names and key objects by device.
func e2eClaim(t testing.TB, s *harness.Server, token, userID string, deviceIDs ...string) map[string]map[string]any {
	t.Helper()
	want := map[string]any{}
	for _, d := range deviceIDs {
		want[d] = "signed_curve25519"
	}
	status, body := s.Do(t, "POST", "/_matrix/client/v3/keys/claim", token, map[string]any{"one_time_keys": map[string]any{userID: want}, "timeout": 10000})
	if status != 200 {
		t.Errorf("keys/claim: %d %v", status, body)
		return nil
	}
	out := map[string]map[string]any{}
	devs, _ := e2eGet(body, "one_time_keys", userID).(map[string]any)
	for d, keys := range devs {
		out[d], _ = keys.(map[string]any)
	}
	return out
}

// TestKeysClaimConcurrent claims one-time keys of one device with 50 parallel requests:
// every request gets a different key, and once they run out the fallback key.
func TestKeysClaimConcurrent(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		uploaded := alice.otks(t, "K", 60)
		status, body := alice.upload(t, s, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": uploaded,
			"fallback_keys": map[string]any{"signed_curve25519:FALLBACK": alice.otk(t, true)}})
		e2eExpect(t, "upload", status, body, 200, "")

		claimAll := func(n int) (keys map[string]int, fallbacks int) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			keys = map[string]int{}
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got := e2eClaim(t, s, bob.token, alice.userID, alice.deviceID)
					mu.Lock()
					defer mu.Unlock()
					if len(got[alice.deviceID]) != 1 {
						t.Errorf("claim returned %v", got)
						return
					}
					for name, k := range got[alice.deviceID] {
						if !e2eVerify(t, k, alice.userID, alice.deviceID, alice.ed) {
							t.Errorf("claimed key %s does not verify: %v", name, k)
						}
						if name == "signed_curve25519:FALLBACK" {
							if e2eGet(k, "fallback") != true {
								t.Errorf("fallback key lost its fallback flag: %v", k)
							}
							fallbacks++
							continue
						}
						if uploaded[name] == nil || e2eGet(k, "key") != e2eGet(uploaded[name], "key") {
							t.Errorf("claimed key %s is not one alice uploaded: %v", name, k)
						}
						keys[name]++
					}
				}()
			}
			wg.Wait()
			return keys, fallbacks
		}
		first, fb := claimAll(50)
		for name, n := range first {
			if n != 1 {
				t.Errorf("key %s handed out %d times", name, n)
			}
		}
		if len(first) != 50 || fb != 0 {
			t.Fatalf("50 parallel claims of 60 keys: %d distinct keys, %d fallbacks", len(first), fb)
		}
		second, fb := claimAll(20)
		for name := range second {
			if first[name] > 0 || second[name] != 1 {
				t.Errorf("key %s handed out twice", name)
			}
		}
		if len(second) != 10 || fb != 10 {
			t.Fatalf("20 claims of the last 10 keys: %d distinct keys, %d fallbacks", len(second), fb)
		}
		if c := e2eCounts(t, s, alice); c["signed_curve25519"] != float64(0) {
			t.Fatalf("counts after claiming everything: %v", c)
		}
		// Unknown devices and algorithms are left out; other servers are failures.
		status, body = s.Do(t, "POST", "/_matrix/client/v3/keys/claim", bob.token, map[string]any{"one_time_keys": map[string]any{
			alice.userID: map[string]any{"NOPE": "signed_curve25519"}, "@x:elsewhere.test": map[string]any{"D": "signed_curve25519"}}})
		e2eExpect(t, "claim of unknown devices", status, body, 200, "")
		if len(body["one_time_keys"].(map[string]any)) != 0 || e2eGet(body, "failures", "elsewhere.test") == nil {
			t.Fatalf("claim of unknown devices: %v", body)
		}
	})
}

// e2eCrossSigning is a user's set of cross-signing keys.
type e2eCrossSigning struct {
	masterPriv, sskPriv, uskPriv ed25519.PrivateKey
	master, ssk, usk             string
}

func e2eNewCrossSigning(t testing.TB) *e2eCrossSigning {
	c := &e2eCrossSigning{}
	c.masterPriv, c.master = e2eKeyPair(t)
	c.sskPriv, c.ssk = e2eKeyPair(t)
	c.uskPriv, c.usk = e2eKeyPair(t)
	return c
}

func e2eCSKey(userID, usage, pub string) map[string]any {
	return map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + pub: pub}}
}

// body returns the /keys/device_signing/upload body, sub-keys signed by the master key.
func (c *e2eCrossSigning) body(t testing.TB, userID string) map[string]any {
	return map[string]any{
		"master_key":       e2eCSKey(userID, "master", c.master),
		"self_signing_key": e2eSign(t, e2eCSKey(userID, "self_signing", c.ssk), userID, "ed25519:"+c.master, c.masterPriv),
		"user_signing_key": e2eSign(t, e2eCSKey(userID, "user_signing", c.usk), userID, "ed25519:"+c.master, c.masterPriv),
	}
}

func e2ePasswordAuth(userID string, session any) map[string]any {
	a := map[string]any{"type": "m.login.password", "password": e2ePassword,
		"identifier": map[string]any{"type": "m.id.user", "user": userID}}
	if session != nil {
		a["session"] = session
	}
	return a
}

// TestCrossSigning uploads cross-signing keys (UIA only when replacing them) and
// signatures of devices and master keys, and checks who sees what in /keys/query.
func TestCrossSigning(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		carol := e2eRegister(t, s, "carol")
		for _, d := range []*e2eDev{alice, bob, carol} {
			status, body := d.upload(t, s, map[string]any{"device_keys": d.deviceKeys(t)})
			e2eExpect(t, "device keys of "+d.userID, status, body, 200, "")
		}
		const path = "/_matrix/client/v3/keys/device_signing/upload"
		acs := e2eNewCrossSigning(t)

		// Refused uploads, before anything is stored.
		other := acs.body(t, alice.userID)
		other["self_signing_key"] = e2eSign(t, e2eCSKey(alice.userID, "self_signing", acs.ssk), alice.userID, "ed25519:"+acs.master, acs.sskPriv)
		status, body := s.Do(t, "POST", path, alice.token, other)
		e2eExpect(t, "self-signing key not signed by the master key", status, body, 400, "M_INVALID_SIGNATURE")
		status, body = s.Do(t, "POST", path, alice.token, map[string]any{"self_signing_key": acs.body(t, alice.userID)["self_signing_key"]})
		e2eExpect(t, "self-signing key without any master key", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "POST", path, alice.token, map[string]any{"master_key": e2eCSKey(bob.userID, "master", acs.master)})
		e2eExpect(t, "master key of another user", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "POST", path, alice.token, map[string]any{"master_key": e2eCSKey(alice.userID, "self_signing", acs.master)})
		e2eExpect(t, "master key with the wrong usage", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "POST", path, alice.token, map[string]any{"master_key": map[string]any{"user_id": alice.userID, "usage": []string{"master"},
			"keys": map[string]any{"ed25519:abc": "def"}}})
		e2eExpect(t, "master key that is not an ed25519 key", status, body, 400, "M_INVALID_PARAM")
		if q := e2eQuery(t, s, alice.token, alice.userID); len(q["master_keys"].(map[string]any)) != 0 {
			t.Fatalf("refused uploads stored keys: %v", q)
		}

		// A cross-signing key equal to one of the user's device IDs is forbidden.
		var devPriv ed25519.PrivateKey
		var devKey string
		for devKey == "" || strings.ContainsAny(devKey, "+/") {
			devPriv, devKey = e2eKeyPair(t)
		}
		_ = devPriv
		e2eLogin(t, s, "carol", devKey)
		status, body = s.Do(t, "POST", path, carol.token, map[string]any{"master_key": e2eCSKey(carol.userID, "master", devKey)})
		e2eExpect(t, "master key equal to a device ID", status, body, 403, "M_FORBIDDEN")

		// First upload: no UIA (no master key yet). The same keys again: no UIA either.
		status, body = s.Do(t, "POST", path, alice.token, acs.body(t, alice.userID))
		e2eExpect(t, "first cross-signing upload", status, body, 200, "")
		status, body = s.Do(t, "POST", path, alice.token, acs.body(t, alice.userID))
		e2eExpect(t, "repeated identical upload", status, body, 200, "")
		q := e2eQuery(t, s, alice.token, alice.userID)
		if e2eGet(q, "master_keys", alice.userID, "keys", "ed25519:"+acs.master) != acs.master ||
			!e2eVerify(t, e2eGet(q, "self_signing_keys", alice.userID), alice.userID, acs.master, acs.master) ||
			e2eGet(q, "user_signing_keys", alice.userID) == nil {
			t.Fatalf("alice's own query: %v", q)
		}
		q = e2eQuery(t, s, bob.token, alice.userID)
		if e2eGet(q, "master_keys", alice.userID) == nil || e2eGet(q, "self_signing_keys", alice.userID) == nil ||
			e2eGet(q, "user_signing_keys", alice.userID) != nil {
			t.Fatalf("bob's query of alice must show master and self-signing keys only: %v", q)
		}

		// Replacing keys needs UIA: a 401 challenge, then the password.
		acs2 := e2eNewCrossSigning(t)
		status, body = s.Do(t, "POST", path, alice.token, acs2.body(t, alice.userID))
		if status != 401 || body["session"] == nil || body["flows"] == nil {
			t.Fatalf("replacing keys without UIA: %d %v", status, body)
		}
		if q := e2eQuery(t, s, bob.token, alice.userID); e2eGet(q, "master_keys", alice.userID, "keys", "ed25519:"+acs.master) == nil {
			t.Fatal("master key replaced without UIA")
		}
		withAuth := acs2.body(t, alice.userID)
		withAuth["auth"] = e2ePasswordAuth(alice.userID, body["session"])
		status, body = s.Do(t, "POST", path, alice.token, withAuth)
		e2eExpect(t, "replacing keys with UIA", status, body, 200, "")
		acs = acs2
		if q := e2eQuery(t, s, bob.token, alice.userID); e2eGet(q, "master_keys", alice.userID, "keys", "ed25519:"+acs.master) != acs.master {
			t.Fatalf("new master key not visible: %v", q)
		}

		// Signatures: alice signs her device with her self-signing key and her master key
		// with her device; bob signs alice's master key with his user-signing key.
		bcs := e2eNewCrossSigning(t)
		status, body = s.Do(t, "POST", path, bob.token, bcs.body(t, bob.userID))
		e2eExpect(t, "bob's cross-signing keys", status, body, 200, "")
		const sigPath = "/_matrix/client/v3/keys/signatures/upload"
		signedDevice := e2eSign(t, alice.deviceKeys(t), alice.userID, "ed25519:"+acs.ssk, acs.sskPriv)
		signedMaster := e2eSign(t, e2eCSKey(alice.userID, "master", acs.master), alice.userID, "ed25519:"+alice.deviceID, alice.priv)
		status, body = s.Do(t, "POST", sigPath, alice.token, map[string]any{alice.userID: map[string]any{
			alice.deviceID: signedDevice, acs.master: signedMaster}})
		if status != 200 || len(body["failures"].(map[string]any)) != 0 {
			t.Fatalf("alice's signatures: %d %v", status, body)
		}
		bobSigned := e2eSign(t, e2eCSKey(alice.userID, "master", acs.master), bob.userID, "ed25519:"+bcs.usk, bcs.uskPriv)
		status, body = s.Do(t, "POST", sigPath, bob.token, map[string]any{alice.userID: map[string]any{acs.master: bobSigned}})
		if status != 200 || len(body["failures"].(map[string]any)) != 0 {
			t.Fatalf("bob's signature: %d %v", status, body)
		}
		for _, viewer := range []*e2eDev{alice, bob, carol} {
			q := e2eQuery(t, s, viewer.token, alice.userID)
			dev := e2eGet(q, "device_keys", alice.userID, alice.deviceID)
			if !e2eVerify(t, dev, alice.userID, acs.ssk, acs.ssk) || !e2eVerify(t, dev, alice.userID, alice.deviceID, alice.ed) {
				t.Fatalf("%s: alice's device lacks her self-signing signature: %v", viewer.userID, dev)
			}
			master := e2eGet(q, "master_keys", alice.userID)
			if !e2eVerify(t, master, alice.userID, alice.deviceID, alice.ed) {
				t.Fatalf("%s: alice's master key lacks her device's signature: %v", viewer.userID, master)
			}
			bobSees := e2eVerify(t, master, bob.userID, bcs.usk, bcs.usk)
			if bobSees != (viewer == bob) {
				t.Fatalf("%s: bob's signature of alice's master key visible=%v: %v", viewer.userID, bobSees, master)
			}
		}

		// Signatures that fail are reported per key and not stored.
		badSig := e2eSign(t, alice.deviceKeys(t), alice.userID, "ed25519:"+acs.ssk, bcs.sskPriv)
		changed := alice.deviceKeys(t)
		changed["algorithms"] = []string{"m.megolm.v1.aes-sha2"}
		changed = e2eSign(t, changed, alice.userID, "ed25519:"+acs.ssk, acs.sskPriv)
		carolSigned := e2eSign(t, e2eCSKey(alice.userID, "master", acs.master), carol.userID, "ed25519:whatever", carol.priv)
		status, body = s.Do(t, "POST", sigPath, alice.token, map[string]any{alice.userID: map[string]any{alice.deviceID: badSig, "NOPE": badSig}})
		if status != 200 || e2eGet(body, "failures", alice.userID, alice.deviceID, "errcode") != "M_INVALID_SIGNATURE" ||
			e2eGet(body, "failures", alice.userID, "NOPE", "errcode") == nil {
			t.Fatalf("bad signatures: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", sigPath, alice.token, map[string]any{alice.userID: map[string]any{alice.deviceID: changed}})
		if status != 200 || e2eGet(body, "failures", alice.userID, alice.deviceID, "errcode") != "M_INVALID_PARAM" {
			t.Fatalf("signed object that differs from the stored keys: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", sigPath, carol.token, map[string]any{alice.userID: map[string]any{acs.master: carolSigned}})
		if status != 200 || e2eGet(body, "failures", alice.userID, acs.master, "errcode") == nil {
			t.Fatalf("signature by a user without a user-signing key: %d %v", status, body)
		}
		q = e2eQuery(t, s, carol.token, alice.userID)
		if sigs := e2eGet(q, "device_keys", alice.userID, alice.deviceID, "signatures", alice.userID).(map[string]any); sigs["ed25519:"+acs.ssk] != signedDevice["signatures"].(map[string]any)[alice.userID].(map[string]any)["ed25519:"+acs.ssk] {
			t.Fatalf("refused signature replaced the good one: %v", sigs)
		}
		if e2eGet(q, "master_keys", alice.userID, "signatures", carol.userID) != nil {
			t.Fatalf("refused signature stored: %v", q["master_keys"])
		}
	})
}

// TestDehydratedDevice creates, reads, replaces and deletes a dehydrated device (MSC3814),
// claims its keys and reads the to-device messages sent to it.
func TestDehydratedDevice(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		status, body := s.Do(t, "GET", base, alice.token, nil)
		e2eExpect(t, "no dehydrated device yet", status, body, 404, "M_NOT_FOUND")

		dehydrated := &e2eDev{userID: alice.userID, deviceID: "DEHYDRATED1", curve: e2eRandomKey()}
		dehydrated.priv, dehydrated.ed = e2eKeyPair(t)
		keys := dehydrated.deviceKeys(t)
		keys["dehydrated"] = true
		keys = e2eSign(t, keys, alice.userID, "ed25519:DEHYDRATED1", dehydrated.priv)
		put := map[string]any{
			"device_id":                   "DEHYDRATED1",
			"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque"},
			"initial_device_display_name": "Dehydrated device",
			"device_keys":                 keys,
			"one_time_keys":               dehydrated.otks(t, "D", 3),
			"fallback_keys":               map[string]any{"signed_curve25519:DFB": dehydrated.otk(t, true)},
		}
		status, body = s.Do(t, "PUT", base, alice.token, map[string]any{"device_id": alice.deviceID, "device_data": map[string]any{}})
		e2eExpect(t, "dehydrated device with the ID of a real device", status, body, 400, "M_INVALID_PARAM")
		bad := map[string]any{}
		for k, v := range put {
			bad[k] = v
		}
		bad["device_keys"] = e2eSign(t, dehydrated.deviceKeys(t), alice.userID, "ed25519:DEHYDRATED1", bob.priv)
		status, body = s.Do(t, "PUT", base, alice.token, bad)
		e2eExpect(t, "dehydrated device with a bad self-signature", status, body, 400, "M_INVALID_SIGNATURE")
		status, body = s.Do(t, "GET", base, alice.token, nil)
		e2eExpect(t, "refused dehydrated device not stored", status, body, 404, "M_NOT_FOUND")

		status, body = s.Do(t, "PUT", base, alice.token, put)
		if status != 200 || body["device_id"] != "DEHYDRATED1" {
			t.Fatalf("put dehydrated device: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", base, alice.token, nil)
		if status != 200 || body["device_id"] != "DEHYDRATED1" || e2eGet(body, "device_data", "device_pickle") != "opaque" {
			t.Fatalf("get dehydrated device: %d %v", status, body)
		}
		q := e2eQuery(t, s, bob.token, alice.userID)
		dev := e2eGet(q, "device_keys", alice.userID, "DEHYDRATED1")
		if e2eGet(dev, "dehydrated") != true || !e2eVerify(t, dev, alice.userID, "DEHYDRATED1", dehydrated.ed) ||
			e2eGet(dev, "unsigned", "device_display_name") != "Dehydrated device" {
			t.Fatalf("dehydrated device in keys/query: %v", dev)
		}
		if got := e2eClaim(t, s, bob.token, alice.userID, "DEHYDRATED1"); len(got["DEHYDRATED1"]) != 1 {
			t.Fatalf("claim from the dehydrated device: %v", got)
		}

		// To-device messages for it are read (and then dropped) through the events endpoint.
		for i := range 3 {
			status, body = s.Do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.room_key_test/txn%d", i), bob.token,
				map[string]any{"messages": map[string]any{alice.userID: map[string]any{"DEHYDRATED1": map[string]any{"n": i}}}})
			e2eExpect(t, "send to the dehydrated device", status, body, 200, "")
		}
		events := base + "/DEHYDRATED1/events"
		status, body = s.Do(t, "POST", events, alice.token, map[string]any{})
		evs, _ := body["events"].([]any)
		if status != 200 || len(evs) != 3 || e2eGet(evs[0], "sender") != bob.userID || e2eGet(evs[2], "content", "n") != float64(2) ||
			e2eGet(evs[0], "type") != "m.room_key_test" {
			t.Fatalf("dehydrated events: %d %v", status, body)
		}
		next := body["next_batch"]
		status, body = s.Do(t, "POST", events, alice.token, map[string]any{"next_batch": next})
		if status != 200 || len(body["events"].([]any)) != 0 || body["next_batch"] != next {
			t.Fatalf("dehydrated events after next_batch: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", events, alice.token, map[string]any{})
		if status != 200 || len(body["events"].([]any)) != 0 {
			t.Fatalf("acknowledged events delivered again: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", base+"/"+alice.deviceID+"/events", alice.token, map[string]any{})
		e2eExpect(t, "events of a device that is not the dehydrated one", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", events, bob.token, map[string]any{})
		e2eExpect(t, "events of another user's dehydrated device", status, body, 403, "M_FORBIDDEN")

		// A new dehydrated device replaces the old one, whose keys disappear.
		d2 := &e2eDev{userID: alice.userID, deviceID: "DEHYDRATED2", curve: e2eRandomKey()}
		d2.priv, d2.ed = e2eKeyPair(t)
		status, body = s.Do(t, "PUT", base, alice.token, map[string]any{"device_id": "DEHYDRATED2",
			"device_data": map[string]any{"algorithm": "x"}, "device_keys": d2.deviceKeys(t)})
		e2eExpect(t, "replace dehydrated device", status, body, 200, "")
		q = e2eQuery(t, s, bob.token, alice.userID)
		if e2eGet(q, "device_keys", alice.userID, "DEHYDRATED1") != nil || e2eGet(q, "device_keys", alice.userID, "DEHYDRATED2") == nil {
			t.Fatalf("after replacing the dehydrated device: %v", q["device_keys"])
		}
		status, body = s.Do(t, "DELETE", base, alice.token, nil)
		if status != 200 || body["device_id"] != "DEHYDRATED2" {
			t.Fatalf("delete dehydrated device: %d %v", status, body)
		}
		status, body = s.Do(t, "DELETE", base, alice.token, nil)
		e2eExpect(t, "delete again", status, body, 404, "M_NOT_FOUND")
		if q = e2eQuery(t, s, bob.token, alice.userID); e2eGet(q, "device_keys", alice.userID, "DEHYDRATED2") != nil {
			t.Fatalf("deleted dehydrated device still has keys: %v", q["device_keys"])
		}
	})
}

// e2eOpenDB opens the database of a running test server (to look at what /sync will read).
func e2eOpenDB(t testing.TB, s *harness.Server) *storage.DB {
	t.Helper()
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(context.Background(), cfg.Database, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkKeysQuery1000Users measures POST /keys/query over HTTP for 1,000 users with 3
// devices each and cross-signing keys (what a client asks when it joins a big room): from
// sending the request to having read the whole answer (checked once before timing).
func BenchmarkKeysQuery1000Users(b *testing.B) {
	for _, engine := range storagetest.Engines {
		b.Run(engine, func(b *testing.B) {
			if engine == "postgres" {
				storagetest.RequirePostgres(b)
			}
			s := harness.Start(b, harness.Options{Engine: engine})
			viewer := e2eRegister(b, s, "viewer")
			db := e2eOpenDB(b, s)
			users := e2eSeedUsers(b, db, 1000, 3)
			req := map[string]any{}
			for _, u := range users {
				req[u] = []string{}
			}
			body, _ := json.Marshal(map[string]any{"device_keys": req})
			check := func() {
				status, resp := s.Do(b, "POST", "/_matrix/client/v3/keys/query", viewer.token, body)
				if status != 200 {
					b.Fatalf("query: %d %v", status, resp)
				}
				devs := resp["device_keys"].(map[string]any)
				if len(devs) != 1000 || len(devs[users[999]].(map[string]any)) != 3 || len(resp["master_keys"].(map[string]any)) != 1000 {
					b.Fatalf("query answered %d users", len(devs))
				}
			}
			check()
			b.ResetTimer()
			for b.Loop() {
				req, _ := http.NewRequest("POST", s.URL+"/_matrix/client/v3/keys/query", strings.NewReader(string(body)))
				req.Header.Set("Authorization", "Bearer "+viewer.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("query: %v", err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(n)
			}
		})
	}
}

// e2eSeedUsers stores n users with perUser devices each, realistic signed device keys and
// master and self-signing keys, straight into the database; it returns the user IDs.
func e2eSeedUsers(b testing.TB, db *storage.DB, n, perUser int) []string {
	b.Helper()
	ctx := context.Background()
	var users []string
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		for i := range n {
			userID := fmt.Sprintf("@user%04d:hs1.test", i)
			users = append(users, userID)
			if err := storage.InsertAccount(ctx, tx, storage.Account{UserID: userID, CreatedTS: storage.NowMS()}); err != nil {
				return err
			}
			cs := e2eNewCrossSigning(b)
			for j := range perUser {
				d := &e2eDev{userID: userID, deviceID: fmt.Sprintf("DEV%04d%d", i, j), curve: e2eRandomKey()}
				d.priv, d.ed = e2eKeyPair(b)
				name := fmt.Sprintf("Device %d of user %d", j, i)
				if err := storage.InsertDevice(ctx, tx, storage.Device{UserID: userID, DeviceID: d.deviceID, DisplayName: &name, CreatedTS: storage.NowMS()}); err != nil {
					return err
				}
				keys := e2eSign(b, d.deviceKeys(b), userID, "ed25519:"+cs.ssk, cs.sskPriv)
				raw, _ := json.Marshal(keys)
				js, _ := canonicaljson.CanonicalJSON(raw)
				if _, err := storage.PutDeviceKeys(ctx, tx, storage.DeviceKeys{UserID: userID, DeviceID: d.deviceID, KeyJSON: js, Ed25519: d.ed, Curve25519: d.curve}); err != nil {
					return err
				}
			}
			for usage, pub := range map[string]string{"master": cs.master, "self_signing": cs.ssk} {
				k := e2eCSKey(userID, usage, pub)
				if usage != "master" {
					k = e2eSign(b, k, userID, "ed25519:"+cs.master, cs.masterPriv)
				}
				raw, _ := json.Marshal(k)
				js, _ := canonicaljson.CanonicalJSON(raw)
				if err := storage.PutCrossSigningKey(ctx, tx, storage.CrossSigningKey{UserID: userID, Type: usage, PublicKey: pub, KeyJSON: js}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return users
}
