package test

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestServerKeysAreSignedAndStable fetches /_matrix/key/v2/server over TLS (verifying the
// certificate against the test CA), checks the self-signature, and that a restart serves
// the same key.
func TestServerKeysAreSignedAndStable(t *testing.T) {
	s := harness.Start(t, harness.Options{Federation: true})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: harness.TestCA(t).Pool()}}}
	fetch := func() (gomatrixserverlib.ServerKeys, []byte) {
		resp, err := client.Get(s.FederationURL + "/_matrix/key/v2/server")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("keys: %d %s", resp.StatusCode, body)
		}
		var keys gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(body, &keys); err != nil {
			t.Fatal(err)
		}
		return keys, body
	}
	keys, raw := fetch()
	if keys.ServerName != spec.ServerName(s.ServerName) || len(keys.VerifyKeys) != 1 {
		t.Fatalf("keys: %+v", keys)
	}
	if until := keys.ValidUntilTS.Time(); until.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("valid_until_ts too soon: %v", until)
	}
	for id, vk := range keys.VerifyKeys {
		if err := gomatrixserverlib.VerifyJSON(s.ServerName, id, ed25519.PublicKey(vk.Key), raw); err != nil {
			t.Fatalf("self-signature does not verify: %v", err)
		}
	}
	s.Restart()
	again, _ := fetch()
	for id := range keys.VerifyKeys {
		if _, ok := again.VerifyKeys[id]; !ok {
			t.Fatalf("key %s changed across restart: %+v", id, again.VerifyKeys)
		}
	}
	resp, err := client.Get(s.FederationURL + "/_matrix/federation/v1/version")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Server struct{ Name string } `json:"server"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v.Server.Name != "Myelin" {
		t.Fatalf("version: %+v", v)
	}
}
