package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestServerKeys(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.LookupServerKey(ctx, db, "a.test", "ed25519:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
		k := storage.ServerKey{ServerName: "a.test", KeyID: "ed25519:x", Public: "pub", ValidUntilTS: 2000}
		if err := storage.UpsertServerKeys(ctx, db, []storage.ServerKey{k}, 1); err != nil {
			t.Fatal(err)
		}
		// An older response (smaller valid_until_ts) does not shorten validity; expiry sticks.
		k.ValidUntilTS, k.ExpiredTS = 1000, 1500
		if err := storage.UpsertServerKeys(ctx, db, []storage.ServerKey{k}, 2); err != nil {
			t.Fatal(err)
		}
		k.ExpiredTS = 0
		if err := storage.UpsertServerKeys(ctx, db, []storage.ServerKey{k}, 3); err != nil {
			t.Fatal(err)
		}
		got, err := storage.LookupServerKey(ctx, db, "a.test", "ed25519:x")
		if err != nil || got.Public != "pub" || got.ValidUntilTS != 2000 || got.ExpiredTS != 1500 {
			t.Fatalf("key: %+v %v", got, err)
		}

		if _, _, err := storage.ServerKeyResponse(ctx, db, "a.test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no response: %v", err)
		}
		if err := storage.StoreServerKeyResponse(ctx, db, "a.test", []byte(`{"v":2}`), 2000, 1); err != nil {
			t.Fatal(err)
		}
		if err := storage.StoreServerKeyResponse(ctx, db, "a.test", []byte(`{"v":1}`), 1000, 2); err != nil {
			t.Fatal(err)
		}
		js, until, err := storage.ServerKeyResponse(ctx, db, "a.test")
		if err != nil || string(js) != `{"v":2}` || until != 2000 {
			t.Fatalf("response kept the older one: %s %d %v", js, until, err)
		}

		if err := storage.RetireOwnSigningKey(ctx, db, "ed25519:old", "p1", 10); err != nil {
			t.Fatal(err)
		}
		if err := storage.RetireOwnSigningKey(ctx, db, "ed25519:old", "p1", 20); err != nil {
			t.Fatal(err)
		}
		old, err := storage.OwnOldSigningKeys(ctx, db)
		if err != nil || len(old) != 1 || old[0].KeyID != "ed25519:old" || old[0].ExpiredTS != 10 {
			t.Fatalf("old keys: %+v %v", old, err)
		}
	})
}
