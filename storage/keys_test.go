package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func addDevice(t testing.TB, db *storage.DB, userID, deviceID string) {
	t.Helper()
	err := storage.InsertDevice(context.Background(), db, storage.Device{UserID: userID, DeviceID: deviceID, CreatedTS: storage.NowMS()})
	if err != nil {
		t.Fatal(err)
	}
}

func withTx(t testing.TB, db *storage.DB, fn func(tx *storage.Tx) error) {
	t.Helper()
	if err := db.WithTx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func otk(alg, id string) storage.OneTimeKey {
	return storage.OneTimeKey{Algorithm: alg, KeyID: id, KeyJSON: json.RawMessage(fmt.Sprintf(`{"key":"k-%s"}`, id))}
}

func TestDeviceKeysIdentityIsImmutable(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addDevice(t, db, "@a:hs", "D1")
		k := storage.DeviceKeys{UserID: "@a:hs", DeviceID: "D1", KeyJSON: json.RawMessage(`{"v":1}`), Ed25519: "E", Curve25519: "C"}
		var changed bool
		withTx(t, db, func(tx *storage.Tx) (err error) { changed, err = storage.PutDeviceKeys(ctx, tx, k); return })
		if !changed {
			t.Fatal("first upload not reported as a change")
		}
		withTx(t, db, func(tx *storage.Tx) (err error) { changed, err = storage.PutDeviceKeys(ctx, tx, k); return })
		if changed {
			t.Fatal("identical re-upload reported as a change")
		}
		k2 := k
		k2.KeyJSON = json.RawMessage(`{"v":2}`)
		withTx(t, db, func(tx *storage.Tx) (err error) { changed, err = storage.PutDeviceKeys(ctx, tx, k2); return })
		if !changed {
			t.Fatal("new JSON with the same identity keys not stored")
		}
		// New identity keys for the device replace the old ones and are a change.
		k3 := k2
		k3.Curve25519 = "other"
		withTx(t, db, func(tx *storage.Tx) (err error) { changed, err = storage.PutDeviceKeys(ctx, tx, k3); return })
		if !changed {
			t.Fatal("new identity keys not reported as a change")
		}
		got, err := storage.GetDeviceKeys(ctx, db, "@a:hs", "D1")
		if err != nil || string(got.KeyJSON) != `{"v":2}` || got.Curve25519 != "other" {
			t.Fatalf("stored keys %+v %v", got, err)
		}
		// Keys of a device that no longer exists are not returned by queries.
		addDevice(t, db, "@a:hs", "D2")
		withTx(t, db, func(tx *storage.Tx) error {
			_, err := storage.PutDeviceKeys(ctx, tx, storage.DeviceKeys{UserID: "@a:hs", DeviceID: "D2", KeyJSON: json.RawMessage(`{}`), Ed25519: "E2"})
			return err
		})
		res, err := storage.QueryDeviceKeys(ctx, db, map[string][]string{"@a:hs": nil})
		if err != nil || len(res) != 2 {
			t.Fatalf("query all devices: %+v %v", res, err)
		}
		res, err = storage.QueryDeviceKeys(ctx, db, map[string][]string{"@a:hs": {"D2", "nope"}})
		if err != nil || len(res) != 1 || res[0].DeviceID != "D2" {
			t.Fatalf("query one device: %+v %v", res, err)
		}
		withTx(t, db, func(tx *storage.Tx) error {
			if _, err := storage.DeleteDevice(ctx, tx, "@a:hs", "D2"); err != nil {
				return err
			}
			return storage.DeleteDeviceE2EE(ctx, tx, "@a:hs", "D2")
		})
		res, err = storage.QueryDeviceKeys(ctx, db, map[string][]string{"@a:hs": nil})
		if err != nil || len(res) != 1 || res[0].DeviceID != "D1" {
			t.Fatalf("query after deleting D2: %+v %v", res, err)
		}
		changes, err := storage.DeviceListChangesSince(ctx, db, 0, 0)
		if err != nil || len(changes) != 1 || changes[0].UserID != "@a:hs" || changes[0].DeviceID != "D2" {
			t.Fatalf("device list changes: %+v %v", changes, err)
		}
	})
}

func TestOneTimeKeysAndFallback(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addDevice(t, db, "@a:hs", "D1")
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.InsertOneTimeKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "A1"), otk("signed_curve25519", "A2"), otk("curve25519", "B1")})
		})
		// Same content again: skipped. Different content for an existing ID: refused, nothing stored.
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.InsertOneTimeKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "A1")})
		})
		bad := otk("signed_curve25519", "A2")
		bad.KeyJSON = json.RawMessage(`{"key":"different"}`)
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.InsertOneTimeKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "A3"), bad})
		})
		if !errors.Is(err, storage.ErrKeyConflict) {
			t.Fatalf("conflicting key: %v", err)
		}
		counts, err := storage.OneTimeKeyCounts(ctx, db, "@a:hs", "D1")
		if err != nil || !reflect.DeepEqual(counts, map[string]int{"signed_curve25519": 2, "curve25519": 1}) {
			t.Fatalf("counts %v %v", counts, err)
		}
		types, err := storage.UnusedFallbackKeyTypes(ctx, db, "@a:hs", "D1")
		if err != nil || len(types) != 0 {
			t.Fatalf("fallback types before upload: %v %v", types, err)
		}
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.SetFallbackKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "F1")})
		})
		claim := func() (storage.OneTimeKey, bool, error) {
			var k storage.OneTimeKey
			var fb bool
			err := db.WithTx(ctx, func(tx *storage.Tx) (err error) {
				k, fb, err = storage.ClaimOneTimeKey(ctx, tx, "@a:hs", "D1", "signed_curve25519")
				return err
			})
			return k, fb, err
		}
		for _, want := range []string{"A1", "A2"} {
			k, fb, err := claim()
			if err != nil || fb || k.KeyID != want {
				t.Fatalf("claim: %+v %v %v, want %s", k, fb, err, want)
			}
		}
		for range 2 {
			k, fb, err := claim()
			if err != nil || !fb || k.KeyID != "F1" {
				t.Fatalf("claim fallback: %+v %v %v", k, fb, err)
			}
		}
		types, _ = storage.UnusedFallbackKeyTypes(ctx, db, "@a:hs", "D1")
		if len(types) != 0 {
			t.Fatalf("used fallback key still unused: %v", types)
		}
		// Re-uploading the same fallback key keeps it used; a new one is unused.
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.SetFallbackKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "F1")})
		})
		if types, _ = storage.UnusedFallbackKeyTypes(ctx, db, "@a:hs", "D1"); len(types) != 0 {
			t.Fatalf("re-uploaded used fallback key became unused: %v", types)
		}
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.SetFallbackKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "F2")})
		})
		if types, _ = storage.UnusedFallbackKeyTypes(ctx, db, "@a:hs", "D1"); !reflect.DeepEqual(types, []string{"signed_curve25519"}) {
			t.Fatalf("new fallback key: %v", types)
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			_, _, err := storage.ClaimOneTimeKey(ctx, tx, "@a:hs", "D1", "other_alg")
			return err
		})
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("claim of an algorithm without keys: %v", err)
		}
	})
}

// TestClaimOneTimeKeysConcurrently checks that concurrent claims never hand out a key twice.
func TestClaimOneTimeKeysConcurrently(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addDevice(t, db, "@a:hs", "D1")
		var keys []storage.OneTimeKey
		for i := range 40 {
			keys = append(keys, otk("signed_curve25519", fmt.Sprintf("K%03d", i)))
		}
		withTx(t, db, func(tx *storage.Tx) error {
			if err := storage.InsertOneTimeKeys(ctx, tx, "@a:hs", "D1", keys); err != nil {
				return err
			}
			return storage.SetFallbackKeys(ctx, tx, "@a:hs", "D1", []storage.OneTimeKey{otk("signed_curve25519", "FB")})
		})
		var mu sync.Mutex
		seen := map[string]int{}
		fallbacks := 0
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for range 60 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					k, fb, err := storage.ClaimOneTimeKey(ctx, tx, "@a:hs", "D1", "signed_curve25519")
					if err != nil {
						return err
					}
					mu.Lock()
					defer mu.Unlock()
					if fb {
						fallbacks++
					} else {
						seen[k.KeyID]++
					}
					return nil
				})
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("key %s handed out %d times", id, n)
			}
		}
		if len(seen) != 40 || fallbacks != 20 {
			t.Fatalf("got %d distinct one-time keys and %d fallbacks, want 40 and 20", len(seen), fallbacks)
		}
	})
}

func TestCrossSigningKeysAndSignatures(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		put := func(k storage.CrossSigningKey) {
			withTx(t, db, func(tx *storage.Tx) error { return storage.PutCrossSigningKey(ctx, tx, k) })
		}
		put(storage.CrossSigningKey{UserID: "@a:hs", Type: storage.CrossSigningMaster, PublicKey: "M1", KeyJSON: json.RawMessage(`{"m":1}`)})
		put(storage.CrossSigningKey{UserID: "@a:hs", Type: storage.CrossSigningSelfSigning, PublicKey: "S1", KeyJSON: json.RawMessage(`{"s":1}`)})
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.PutKeySignatures(ctx, tx, []storage.KeySignature{
				{TargetUserID: "@a:hs", TargetKeyID: "M1", SignerUserID: "@b:hs", SignerKeyID: "ed25519:U", Signature: "sig1"},
				{TargetUserID: "@a:hs", TargetKeyID: "D1", SignerUserID: "@a:hs", SignerKeyID: "ed25519:S1", Signature: "sig2"},
			})
		})
		withTx(t, db, func(tx *storage.Tx) error {
			return storage.PutKeySignatures(ctx, tx, []storage.KeySignature{
				{TargetUserID: "@a:hs", TargetKeyID: "M1", SignerUserID: "@b:hs", SignerKeyID: "ed25519:U", Signature: "sig1b"},
			})
		})
		keys, err := storage.GetCrossSigningKeys(ctx, db, "@a:hs")
		if err != nil || len(keys) != 2 || keys["master"].PublicKey != "M1" {
			t.Fatalf("keys %+v %v", keys, err)
		}
		sigs, err := storage.QueryKeySignatures(ctx, db, []string{"@a:hs"})
		if err != nil || len(sigs) != 2 || sigs[1].Signature != "sig1b" {
			t.Fatalf("sigs %+v %v", sigs, err)
		}
		// A new master key drops the signatures of the old one; a new self-signing key
		// drops the signatures it made.
		put(storage.CrossSigningKey{UserID: "@a:hs", Type: storage.CrossSigningMaster, PublicKey: "M2", KeyJSON: json.RawMessage(`{"m":2}`)})
		sigs, _ = storage.QueryKeySignatures(ctx, db, []string{"@a:hs"})
		if len(sigs) != 1 || sigs[0].TargetKeyID != "D1" {
			t.Fatalf("sigs after new master key: %+v", sigs)
		}
		put(storage.CrossSigningKey{UserID: "@a:hs", Type: storage.CrossSigningSelfSigning, PublicKey: "S2", KeyJSON: json.RawMessage(`{"s":2}`)})
		sigs, _ = storage.QueryKeySignatures(ctx, db, []string{"@a:hs"})
		if len(sigs) != 0 {
			t.Fatalf("sigs after new self-signing key: %+v", sigs)
		}
		all, err := storage.QueryCrossSigningKeys(ctx, db, []string{"@a:hs", "@nobody:hs"})
		if err != nil || len(all) != 1 || string(all["@a:hs"]["self_signing"].KeyJSON) != `{"s":2}` {
			t.Fatalf("query %+v %v", all, err)
		}
	})
}

func TestDeviceListChanges(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var p1, p2, p3 int64
		withTx(t, db, func(tx *storage.Tx) (err error) {
			if p1, err = storage.RecordDeviceListChange(ctx, tx, "@a:hs", "D1", ""); err != nil {
				return err
			}
			if p2, err = storage.RecordDeviceListChange(ctx, tx, "@b:hs", "", "@a:hs"); err != nil {
				return err
			}
			p3, err = storage.RecordDeviceListChange(ctx, tx, "@c:hs", "", "")
			return err
		})
		if !(p1 < p2 && p2 < p3) {
			t.Fatalf("positions not increasing: %d %d %d", p1, p2, p3)
		}
		users, err := storage.DeviceListChangedUsers(ctx, db, "@a:hs", 0, 0)
		if err != nil || !reflect.DeepEqual(users, []string{"@a:hs", "@b:hs", "@c:hs"}) {
			t.Fatalf("changes seen by a: %v %v", users, err)
		}
		users, _ = storage.DeviceListChangedUsers(ctx, db, "@z:hs", 0, 0)
		if !reflect.DeepEqual(users, []string{"@a:hs", "@c:hs"}) {
			t.Fatalf("changes seen by z: %v", users)
		}
		users, _ = storage.DeviceListChangedUsers(ctx, db, "@a:hs", p1, p2)
		if !reflect.DeepEqual(users, []string{"@b:hs"}) {
			t.Fatalf("changes in (p1, p2]: %v", users)
		}
		changes, err := storage.DeviceListChangesSince(ctx, db, p2, 0)
		if err != nil || len(changes) != 1 || changes[0].Pos != p3 {
			t.Fatalf("changes since p2: %+v %v", changes, err)
		}
	})
}

func TestDeleteUserE2EE(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addDevice(t, db, "@a:hs", "DH")
		withTx(t, db, func(tx *storage.Tx) error {
			if err := storage.PutCrossSigningKey(ctx, tx, storage.CrossSigningKey{UserID: "@a:hs", Type: "master", PublicKey: "M", KeyJSON: json.RawMessage(`{}`)}); err != nil {
				return err
			}
			if err := storage.PutKeySignatures(ctx, tx, []storage.KeySignature{
				{TargetUserID: "@b:hs", TargetKeyID: "MB", SignerUserID: "@a:hs", SignerKeyID: "ed25519:U", Signature: "s"},
				{TargetUserID: "@b:hs", TargetKeyID: "MB", SignerUserID: "@c:hs", SignerKeyID: "ed25519:U", Signature: "s"},
			}); err != nil {
				return err
			}
			v, err := storage.CreateBackupVersion(ctx, tx, "@a:hs", "alg", json.RawMessage(`{}`))
			if err != nil {
				return err
			}
			if _, err := storage.PutBackupSessions(ctx, tx, "@a:hs", v, []storage.BackupSession{{RoomID: "!r", SessionID: "s", SessionData: json.RawMessage(`{}`)}}); err != nil {
				return err
			}
			return storage.PutDehydratedDevice(ctx, tx, storage.DehydratedDevice{UserID: "@a:hs", DeviceID: "DH", DeviceData: json.RawMessage(`{}`)})
		})
		// Deleting the dehydrated device's device forgets the dehydrated device.
		withTx(t, db, func(tx *storage.Tx) error { return storage.DeleteDeviceE2EE(ctx, tx, "@a:hs", "DH") })
		if _, err := storage.GetDehydratedDevice(ctx, db, "@a:hs"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("dehydrated device after deleting its device: %v", err)
		}
		before, _ := storage.CurrentStreamPosition(ctx, db, storage.StreamDeviceList)
		withTx(t, db, func(tx *storage.Tx) error { return storage.DeleteUserE2EE(ctx, tx, "@a:hs") })
		if keys, _ := storage.GetCrossSigningKeys(ctx, db, "@a:hs"); len(keys) != 0 {
			t.Fatalf("cross-signing keys left: %v", keys)
		}
		if sigs, _ := storage.QueryKeySignatures(ctx, db, []string{"@b:hs"}); len(sigs) != 1 || sigs[0].SignerUserID != "@c:hs" {
			t.Fatalf("signatures left: %+v", sigs)
		}
		if _, err := storage.LatestBackupVersion(ctx, db, "@a:hs"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("backup left: %v", err)
		}
		if n, _ := storage.CountBackupSessions(ctx, db, "@a:hs", 1); n != 0 {
			t.Fatalf("backup keys left: %d", n)
		}
		if users, _ := storage.DeviceListChangedUsers(ctx, db, "@x:hs", before, 0); len(users) != 1 {
			t.Fatalf("no device-list change recorded: %v", users)
		}
	})
}
