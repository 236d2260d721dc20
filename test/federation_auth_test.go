package test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/test/harness"
)

// fedHTTP is an HTTPS client trusting the test CA.
func fedHTTP(t testing.TB) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: harness.TestCA(t).Pool()}}}
}

func fedGetJSON(t *testing.T, c *http.Client, method, url string, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// notaryAnswer decodes a /_matrix/key/v2/query answer and returns the entry for server.
func notaryAnswer(t *testing.T, raw []byte, server string) (gomatrixserverlib.ServerKeys, []byte) {
	t.Helper()
	var res struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("notary answer %s: %v", raw, err)
	}
	for _, e := range res.ServerKeys {
		var k gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(e, &k); err == nil && string(k.ServerName) == server {
			return k, e
		}
	}
	t.Fatalf("notary answer has no keys for %s: %s", server, raw)
	return gomatrixserverlib.ServerKeys{}, nil
}

// serverKeys fetches s's own key response.
func serverKeys(t *testing.T, s *harness.Server) gomatrixserverlib.ServerKeys {
	t.Helper()
	code, raw := fedGetJSON(t, fedHTTP(t), "GET", s.FederationURL+"/_matrix/key/v2/server", "")
	if code != 200 {
		t.Fatalf("keys of %s: %d %s", s.ServerName, code, raw)
	}
	var k gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	return k
}

// mustBeSignedBy checks raw carries a valid signature of signer with one of keys.
func mustBeSignedBy(t *testing.T, raw []byte, signer string, keys gomatrixserverlib.ServerKeys) {
	t.Helper()
	for id, vk := range keys.VerifyKeys {
		if err := gomatrixserverlib.VerifyJSON(signer, id, ed25519.PublicKey(vk.Key), raw); err == nil {
			return
		}
	}
	t.Fatalf("not signed by %s: %s", signer, raw)
}

// TestFederationNotaryKeys: server A, asked as a notary, fetches B's keys directly from
// B (resolving B's name, over TLS checked against the CA file) and answers them signed
// by B and co-signed by A; a later query is answered from A's cache even with B down.
func TestFederationNotaryKeys(t *testing.T) {
	harness.ForEachEngine(t, testFederationNotaryKeys)
}

func testFederationNotaryKeys(t *testing.T, engine string) {
	a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	b := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
	aKeys, bKeys := serverKeys(t, a), serverKeys(t, b)
	c := fedHTTP(t)

	code, raw := fedGetJSON(t, c, "GET", a.FederationURL+"/_matrix/key/v2/query/"+url.PathEscape(b.ServerName), "")
	if code != 200 {
		t.Fatalf("GET query: %d %s", code, raw)
	}
	got, entry := notaryAnswer(t, raw, b.ServerName)
	for id := range bKeys.VerifyKeys {
		if _, ok := got.VerifyKeys[id]; !ok {
			t.Fatalf("notary answer lacks B's key %s: %s", id, entry)
		}
	}
	mustBeSignedBy(t, entry, b.ServerName, bKeys)
	mustBeSignedBy(t, entry, a.ServerName, aKeys)

	// POST form, asking B (as notary) about A and about itself.
	body := `{"server_keys":{"` + a.ServerName + `":{},"` + b.ServerName + `":{}}}`
	code, raw = fedGetJSON(t, c, "POST", b.FederationURL+"/_matrix/key/v2/query", body)
	if code != 200 {
		t.Fatalf("POST query: %d %s", code, raw)
	}
	_, entryA := notaryAnswer(t, raw, a.ServerName)
	mustBeSignedBy(t, entryA, a.ServerName, aKeys)
	mustBeSignedBy(t, entryA, b.ServerName, bKeys)
	_, entryB := notaryAnswer(t, raw, b.ServerName)
	mustBeSignedBy(t, entryB, b.ServerName, bKeys)

	// With B stopped, A still answers from its cache.
	b.Stop()
	code, raw = fedGetJSON(t, c, "GET", a.FederationURL+"/_matrix/key/v2/query/"+url.PathEscape(b.ServerName), "")
	if code != 200 {
		t.Fatalf("cached query: %d %s", code, raw)
	}
	_, entry = notaryAnswer(t, raw, b.ServerName)
	mustBeSignedBy(t, entry, b.ServerName, bKeys)
	// An unreachable server with nothing cached gives an empty list, not an error.
	code, raw = fedGetJSON(t, c, "GET", a.FederationURL+"/_matrix/key/v2/query/127.0.0.1:1", "")
	if code != 200 || !strings.Contains(string(raw), `"server_keys":[]`) {
		t.Fatalf("unknown server: %d %s", code, raw)
	}
}

// fakeOrigin is a federation origin run by the test: it serves its signing key over
// TLS (certificate from the test CA) under the name "127.0.0.1:<port>".
type fakeOrigin struct {
	name string
	key  config.SigningKey
	// mux serves the origin's endpoints; tests add their own (requests to it are not
	// authenticated).
	mux *http.ServeMux
}

func startFakeOrigin(t testing.TB) *fakeOrigin {
	t.Helper()
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &fakeOrigin{name: ln.Addr().String(), key: key, mux: http.NewServeMux()}
	certPath, keyPath := harness.TestCA(t).Issue(t, t.TempDir(), "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	mux := o.mux
	mux.HandleFunc("/_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		var f gomatrixserverlib.ServerKeyFields
		f.ServerName = spec.ServerName(o.name)
		f.ValidUntilTS = spec.AsTimestamp(time.Now().Add(time.Hour))
		f.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{key.ID: {Key: spec.Base64Bytes(key.Public())}}
		f.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
		raw, _ := json.Marshal(f)
		signed, _ := gomatrixserverlib.SignJSON(o.name, key.ID, key.Private, raw)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(signed)
	})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return o
}

// send signs a request as origin (with key) for destination and sends it to target's
// federation listener, returning the status and errcode.
func (o *fakeOrigin) send(t testing.TB, target *harness.Server, origin, destination string, key config.SigningKey, method, uri string, content any, tamper func(*http.Request)) (int, string, []byte) {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(origin), spec.ServerName(destination), uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(origin), key.ID, key.Private); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host, req.Host = "https", strings.TrimPrefix(target.FederationURL, "https://"), target.ServerName
	if tamper != nil {
		tamper(req)
	}
	resp, err := fedHTTP(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Errcode, raw
}

// sendTxn puts pdus to target in one /send transaction from origin, signed with key;
// it returns the error per event ID.
func sendTxn(t testing.TB, target *harness.Server, origin string, key config.SigningKey, pdus []json.RawMessage) map[string]string {
	t.Helper()
	txn := map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
	code, ecode, raw := (&fakeOrigin{}).send(t, target, origin, target.ServerName, key, "PUT",
		fmt.Sprintf("/_matrix/federation/v1/send/t%d", time.Now().UnixNano()), txn, nil)
	if code != 200 {
		t.Fatalf("send: %d %s %s", code, ecode, raw)
	}
	var res struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for id, r := range res.PDUs {
		out[id] = r.Error
	}
	return out
}

// TestFederationRequestAuth: B accepts a request signed by an origin whose key it
// fetches, and refuses missing, bad, misdirected, unknown-key and denied requests
// with the spec's errors. The accepted request is sent by Myelin's own federation
// client, resolving B's name.
func TestFederationRequestAuth(t *testing.T) {
	o := startFakeOrigin(t)
	b := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true, Configure: func(cfg *config.Config) {
		cfg.Federation.DeniedServers = []string{"denied.test"}
	}})
	cli, err := mautrix.NewClient(b.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "fedalice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(reg.UserID, reg.AccessToken)
	if err := cli.SetDisplayName(context.Background(), "Alice Fed"); err != nil {
		t.Fatal(err)
	}
	uri := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(reg.UserID.String())

	// Accepted: Myelin's client, signing as the fake origin, resolving B's name.
	fc, err := federation.NewClient(config.Federation{CAFile: harness.TestCA(t).Path, AllowPrivateAddresses: true},
		spec.ServerName(o.name), o.key, federation.ClientOptions{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var profile map[string]any
	if err := fc.DoSigned(context.Background(), "GET", spec.ServerName(b.ServerName), uri, nil, &profile); err != nil {
		t.Fatalf("signed request refused: %v", err)
	}
	if profile["displayname"] != "Alice Fed" {
		t.Fatalf("profile: %v", profile)
	}
	if code, ecode, raw := o.send(t, b, o.name, b.ServerName, o.key, "GET", uri+"&field=displayname", nil, nil); code != 200 || !strings.Contains(string(raw), "Alice Fed") {
		t.Fatalf("field query: %d %s %s", code, ecode, raw)
	}
	// Unknown user: 404 after authentication.
	if code, ecode, _ := o.send(t, b, o.name, b.ServerName, o.key, "GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@nobody:"+b.ServerName), nil, nil); code != 404 || ecode != "M_NOT_FOUND" {
		t.Fatalf("unknown user: %d %s", code, ecode)
	}

	otherKey, _ := config.GenerateSigningKey()
	cases := []struct {
		name        string
		origin, dst string
		key         config.SigningKey
		tamper      func(*http.Request)
		code        int
		errcode     string
	}{
		{"no authorization", o.name, b.ServerName, o.key, func(r *http.Request) { r.Header.Del("Authorization") }, 401, "M_UNAUTHORIZED"},
		{"bad signature", o.name, b.ServerName, o.key, func(r *http.Request) {
			h := r.Header.Get("Authorization")
			i := strings.Index(h, `sig="`) + 5
			flip := byte('A')
			if h[i] == 'A' {
				flip = 'B'
			}
			r.Header.Set("Authorization", h[:i]+string(flip)+h[i+1:])
		}, 401, "M_UNAUTHORIZED"},
		{"path changed after signing", o.name, b.ServerName, o.key, func(r *http.Request) {
			r.URL.RawQuery = "user_id=" + url.QueryEscape("@other:"+b.ServerName)
		}, 401, "M_UNAUTHORIZED"},
		{"wrong destination", o.name, "someone-else.test", o.key, nil, 401, "M_UNAUTHORIZED"},
		{"unknown key", o.name, b.ServerName, otherKey, nil, 401, "M_UNAUTHORIZED"},
		{"garbled header", o.name, b.ServerName, o.key, func(r *http.Request) { r.Header.Set("Authorization", `X-Matrix origin="x`) }, 401, "M_UNAUTHORIZED"},
		{"denied origin", "denied.test", b.ServerName, otherKey, nil, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		code, ecode, raw := o.send(t, b, c.origin, c.dst, c.key, "GET", uri, nil, c.tamper)
		if code != c.code || ecode != c.errcode {
			t.Errorf("%s: got %d %s (%s), want %d %s", c.name, code, ecode, raw, c.code, c.errcode)
		}
	}

	// The key endpoints stay unauthenticated.
	if code, raw := fedGetJSON(t, fedHTTP(t), "GET", b.FederationURL+"/_matrix/key/v2/server", ""); code != 200 {
		t.Fatalf("keys without auth: %d %s", code, raw)
	}

	// Outgoing: with allow_private_addresses off, the client refuses B's loopback address.
	strict, err := federation.NewClient(config.Federation{CAFile: harness.TestCA(t).Path}, spec.ServerName(o.name), o.key, federation.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = strict.DoSigned(context.Background(), "GET", spec.ServerName(b.ServerName), uri, nil, nil)
	if !errors.Is(err, federation.ErrPrivateAddress) {
		t.Fatalf("private destination with the switch off: %v", err)
	}
	// And a remote error reaches the caller with its status.
	err = fc.DoSigned(context.Background(), "GET", spec.ServerName(b.ServerName), "/_matrix/federation/v1/query/profile?user_id=bad", nil, nil)
	var he gomatrix.HTTPError
	if !errors.As(err, &he) || he.Code != 400 {
		t.Fatalf("remote error: %#v", err)
	}
}

// TestFederationKeyRotation: after `myelin rotate-signing-key` and a restart, B signs
// with a new key and publishes the old one in old_verify_keys with expired_ts, and
// another server (A, as notary) serves both.
func TestFederationKeyRotation(t *testing.T) {
	b := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true})
	before := serverKeys(t, b)
	var oldID gomatrixserverlib.KeyID
	for id := range before.VerifyKeys {
		oldID = id
	}
	out, err := exec.Command(harness.Binary(t), "rotate-signing-key", "--config", b.ConfigPath).CombinedOutput()
	if err != nil {
		t.Fatalf("rotate-signing-key: %v\n%s", err, out)
	}
	b.Restart()
	after := serverKeys(t, b)
	if _, ok := after.VerifyKeys[oldID]; ok || len(after.VerifyKeys) != 1 {
		t.Fatalf("old key still current: %+v", after.VerifyKeys)
	}
	old, ok := after.OldVerifyKeys[oldID]
	if !ok || old.ExpiredTS == 0 || old.ExpiredTS.Time().After(time.Now()) {
		t.Fatalf("old key not in old_verify_keys with expired_ts: %+v", after.OldVerifyKeys)
	}
	if string(old.Key) != string(before.VerifyKeys[oldID].Key) {
		t.Fatal("old key material changed")
	}
	code, raw := fedGetJSON(t, fedHTTP(t), "GET", b.FederationURL+"/_matrix/key/v2/server", "")
	if code != 200 {
		t.Fatal(code)
	}
	mustBeSignedBy(t, raw, b.ServerName, after)

	a := harness.Start(t, harness.Options{Federation: true, NameFromFederationAddr: true})
	code, raw = fedGetJSON(t, fedHTTP(t), "GET", a.FederationURL+"/_matrix/key/v2/query/"+url.PathEscape(b.ServerName), "")
	if code != 200 {
		t.Fatalf("notary: %d %s", code, raw)
	}
	got, _ := notaryAnswer(t, raw, b.ServerName)
	if _, ok := got.OldVerifyKeys[oldID]; !ok {
		t.Fatalf("notary answer lacks the old key: %s", raw)
	}
}
