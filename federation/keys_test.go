package federation

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func newKey(t *testing.T) config.SigningKey {
	t.Helper()
	k, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedKeys is name's key response with current key cur (and old keys), signed by cur.
func signedKeys(t *testing.T, name string, cur config.SigningKey, validUntil time.Time, old map[*config.SigningKey]time.Time) gomatrixserverlib.ServerKeys {
	t.Helper()
	var f gomatrixserverlib.ServerKeyFields
	f.ServerName = spec.ServerName(name)
	f.ValidUntilTS = spec.AsTimestamp(validUntil)
	f.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{cur.ID: {Key: spec.Base64Bytes(cur.Public())}}
	f.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for k, exp := range old {
		f.OldVerifyKeys[k.ID] = gomatrixserverlib.OldVerifyKey{VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.Public())}, ExpiredTS: spec.AsTimestamp(exp)}
	}
	raw, _ := json.Marshal(f)
	signed, err := gomatrixserverlib.SignJSON(name, cur.ID, cur.Private, raw)
	if err != nil {
		t.Fatal(err)
	}
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(signed, &keys); err != nil {
		t.Fatal(err)
	}
	return keys
}

type fakeKeyClient struct {
	keys    map[spec.ServerName]gomatrixserverlib.ServerKeys
	notary  func(server spec.ServerName) ([]gomatrixserverlib.ServerKeys, error)
	direct  int
	lookups int
}

func (f *fakeKeyClient) GetServerKeys(_ context.Context, s spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	f.direct++
	k, ok := f.keys[s]
	if !ok {
		return k, errors.New("unreachable")
	}
	return k, nil
}

func (f *fakeKeyClient) LookupServerKeys(_ context.Context, s spec.ServerName, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	f.lookups++
	if f.notary == nil {
		return nil, errors.New("no notary")
	}
	return f.notary(s)
}

func sign(t *testing.T, name string, k config.SigningKey) []byte {
	t.Helper()
	b, err := gomatrixserverlib.SignJSON(name, k.ID, k.Private, []byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func verify(t *testing.T, ring gomatrixserverlib.JSONVerifier, name string, msg []byte, at time.Time) error {
	t.Helper()
	res, err := ring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: spec.ServerName(name), AtTS: spec.AsTimestamp(at), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return res[0].Error
}

// TestKeyRingOwnRetiredKeys: after a rotation, JSON signed with the retired key
// verifies at times before its expired_ts and not after; the new key verifies now.
func TestKeyRingOwnRetiredKeys(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		oldKey, newKey := newKey(t), newKey(t)
		retired := time.Now().Add(-time.Hour)
		if err := storage.RetireOwnSigningKey(ctx, db, string(oldKey.ID), base64.RawStdEncoding.EncodeToString(oldKey.Public()), retired.UnixMilli()); err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.ServerName = "own.test"
		ring := NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey), &fakeKeyClient{}, db)
		oldMsg := sign(t, "own.test", oldKey)
		if err := verify(t, ring, "own.test", oldMsg, retired.Add(-time.Minute)); err != nil {
			t.Fatalf("event signed before rotation: %v", err)
		}
		if err := verify(t, ring, "own.test", oldMsg, time.Now()); err == nil {
			t.Fatal("retired key accepted for a time after its expiry")
		}
		if err := verify(t, ring, "own.test", sign(t, "own.test", newKey), time.Now()); err != nil {
			t.Fatalf("current key: %v", err)
		}
		if err := verify(t, ring, "own.test", sign(t, "own.test", config.SigningKey{ID: oldKey.ID, Private: newKey.Private}), retired.Add(-time.Minute)); err == nil {
			t.Fatal("wrong key material accepted")
		}
	})
}

// TestKeyRingFetchesDirectlyThenCaches: remote keys are fetched from the origin once,
// then answered from the database; a retired remote key verifies only before expired_ts.
func TestKeyRingFetchesDirectlyThenCaches(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cur, old := newKey(t), newKey(t)
		expired := time.Now().Add(-24 * time.Hour)
		fc := &fakeKeyClient{keys: map[spec.ServerName]gomatrixserverlib.ServerKeys{
			"remote.test": signedKeys(t, "remote.test", cur, time.Now().Add(time.Hour), map[*config.SigningKey]time.Time{&old: expired}),
		}}
		cfg := config.Default()
		cfg.ServerName = "own.test"
		ring := NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey(t)), fc, db)
		msg := sign(t, "remote.test", cur)
		if err := verify(t, ring, "remote.test", msg, time.Now()); err != nil {
			t.Fatalf("first verification: %v", err)
		}
		if err := verify(t, ring, "remote.test", msg, time.Now()); err != nil {
			t.Fatalf("second verification: %v", err)
		}
		if fc.direct != 1 {
			t.Fatalf("fetched %d times, want once (then cached)", fc.direct)
		}
		// A fresh ring (restart) answers from the database without fetching.
		ring2 := NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey(t)), fc, db)
		if err := verify(t, ring2, "remote.test", msg, time.Now()); err != nil || fc.direct != 1 {
			t.Fatalf("after restart: %v (fetches %d)", err, fc.direct)
		}
		if _, until, err := storage.ServerKeyResponse(ctx, db, "remote.test"); err != nil || until == 0 {
			t.Fatalf("key response not kept for the notary: %v", err)
		}
		oldMsg := sign(t, "remote.test", old)
		if err := verify(t, ring, "remote.test", oldMsg, expired.Add(-time.Hour)); err != nil {
			t.Fatalf("old key before its expiry: %v", err)
		}
		if err := verify(t, ring, "remote.test", oldMsg, time.Now()); err == nil {
			t.Fatal("old key accepted after its expiry")
		}
		// Unknown server: refused.
		if err := verify(t, ring, "nowhere.test", sign(t, "nowhere.test", cur), time.Now()); err == nil {
			t.Fatal("unknown server's signature accepted")
		}
		// Made-up key IDs do not make us fetch the origin's keys again and again.
		fetches := fc.direct
		for i := 0; i < 5; i++ {
			if err := verify(t, ring, "remote.test", sign(t, "remote.test", newKey(t)), time.Now()); err == nil {
				t.Fatal("unknown key accepted")
			}
		}
		if fc.direct > fetches+1 {
			t.Fatalf("unknown key IDs caused %d fetches", fc.direct-fetches)
		}
	})
}

// TestKeyRingUsesTrustedKeyServer: when the origin cannot be reached, keys come from
// the configured notary, whose own signature must check out.
func TestKeyRingUsesTrustedKeyServer(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		remote, notary := newKey(t), newKey(t)
		remoteKeys := signedKeys(t, "remote.test", remote, time.Now().Add(time.Hour), nil)
		coSigned, err := gomatrixserverlib.SignJSON("notary.test", notary.ID, notary.Private, remoteKeys.Raw)
		if err != nil {
			t.Fatal(err)
		}
		var answer gomatrixserverlib.ServerKeys
		_ = json.Unmarshal(coSigned, &answer)
		fc := &fakeKeyClient{
			keys: map[spec.ServerName]gomatrixserverlib.ServerKeys{"notary.test": signedKeys(t, "notary.test", notary, time.Now().Add(time.Hour), nil)},
			notary: func(s spec.ServerName) ([]gomatrixserverlib.ServerKeys, error) {
				if s != "notary.test" {
					return nil, errors.New("not a notary")
				}
				return []gomatrixserverlib.ServerKeys{answer}, nil
			},
		}
		cfg := config.Default()
		cfg.ServerName = "own.test"
		msg := sign(t, "remote.test", remote)
		noNotary := NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey(t)), fc, db)
		if err := verify(t, noNotary, "remote.test", msg, time.Now()); err == nil {
			t.Fatal("verified without any way to get the key")
		}
		cfg.Federation.TrustedKeyServers = []string{"notary.test"}
		ring := NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey(t)), fc, db)
		if err := verify(t, ring, "remote.test", msg, time.Now()); err != nil {
			t.Fatalf("via notary: %v", err)
		}
		// A notary answer not signed by the notary is refused.
		if _, err := db.ExecContext(context.Background(), `DELETE FROM server_signing_keys`); err != nil {
			t.Fatal(err)
		}
		answer = remoteKeys
		ring = NewKeyRing(cfg, NewKeyStore(db, "own.test", newKey(t)), fc, db)
		if err := verify(t, ring, "remote.test", msg, time.Now()); err == nil {
			t.Fatal("accepted a notary answer without the notary's signature")
		}
	})
}
