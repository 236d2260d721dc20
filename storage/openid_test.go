package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestOpenIDTokens(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		insert := func(hash, user string, expires, now int64) {
			t.Helper()
			if err := db.WithTx(ctx, func(tx *storage.Tx) error {
				return storage.InsertOpenIDToken(ctx, tx, hash, user, expires, now)
			}); err != nil {
				t.Fatal(err)
			}
		}
		insert("h1", "@alice:test", 2000, 1000)
		if u, err := storage.LookupOpenIDToken(ctx, db, "h1", 1999); err != nil || u != "@alice:test" {
			t.Fatalf("valid token: %q %v", u, err)
		}
		if _, err := storage.LookupOpenIDToken(ctx, db, "h1", 2000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired token: %v", err)
		}
		if _, err := storage.LookupOpenIDToken(ctx, db, "nope", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		// Issuing a token later purges the expired one.
		insert("h2", "@bob:test", 9000, 5000)
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM openid_tokens WHERE token_hash = 'h1'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("expired token not purged: %d %v", n, err)
		}
		if u, err := storage.LookupOpenIDToken(ctx, db, "h2", 5000); err != nil || u != "@bob:test" {
			t.Fatalf("second token: %q %v", u, err)
		}
	})
}
