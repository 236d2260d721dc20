package storage_test

import (
	"context"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestProfileInitAndErase(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		name := "alice"
		if err := storage.InitProfile(ctx, db, "@alice:test", &name); err != nil {
			t.Fatal(err)
		}
		other := "other"
		if err := storage.InitProfile(ctx, db, "@alice:test", &other); err != nil {
			t.Fatal(err)
		}
		var got *string
		if err := db.QueryRowContext(ctx, `SELECT displayname FROM profiles WHERE user_id = $1`, "@alice:test").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == nil || *got != "alice" {
			t.Fatalf("display name after second init: %v", got)
		}
		if _, err := db.ExecContext(ctx, `UPDATE profiles SET avatar_url = 'mxc://x/y' WHERE user_id = $1`, "@alice:test"); err != nil {
			t.Fatal(err)
		}
		if err := storage.EraseProfile(ctx, db, "@alice:test"); err != nil {
			t.Fatal(err)
		}
		var dn, av *string
		if err := db.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM profiles WHERE user_id = $1`, "@alice:test").Scan(&dn, &av); err != nil {
			t.Fatal(err)
		}
		if dn != nil || av != nil {
			t.Fatalf("erased profile still has %v %v", dn, av)
		}
	})
}

func TestDeleteAccessTokensExcept(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, tok := range []storage.AccessToken{
			{TokenHash: "keep", UserID: "@a:test", DeviceID: "D1"},
			{TokenHash: "drop1", UserID: "@a:test", DeviceID: "D1"},
			{TokenHash: "drop2", UserID: "@a:test", DeviceID: "D2"},
			{TokenHash: "bob", UserID: "@b:test", DeviceID: "D1"},
		} {
			if err := storage.InsertAccessToken(ctx, db, tok); err != nil {
				t.Fatal(err)
			}
		}
		_ = storage.InsertRefreshToken(ctx, db, "r-a", "@a:test", "D1", 1)
		var removed []string
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			removed, err = storage.DeleteAccessTokensExcept(ctx, tx, "@a:test", "keep")
			return err
		})
		slices.Sort(removed)
		if err != nil || !slices.Equal(removed, []string{"drop1", "drop2"}) {
			t.Fatalf("removed %v, %v", removed, err)
		}
		for hash, want := range map[string]bool{"keep": true, "drop1": false, "bob": true} {
			_, err := storage.GetAccessToken(ctx, db, hash)
			if (err == nil) != want {
				t.Errorf("token %s: present=%v, want %v", hash, err == nil, want)
			}
		}
		// Keeping a token keeps the refresh tokens; keeping none removes them.
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			if _, _, err := storage.TakeRefreshToken(ctx, tx, "r-a"); err != nil {
				t.Errorf("refresh token removed while a token was kept: %v", err)
			}
			return nil
		})
		_ = storage.InsertRefreshToken(ctx, db, "r-b", "@a:test", "D1", 1)
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			removed, err = storage.DeleteAccessTokensExcept(ctx, tx, "@a:test", "")
			return err
		})
		if err != nil || !slices.Equal(removed, []string{"keep"}) {
			t.Fatalf("remove all: %v %v", removed, err)
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			_, _, err := storage.TakeRefreshToken(ctx, tx, "r-b")
			return err
		})
		if err == nil {
			t.Fatal("refresh token survived removing all tokens")
		}
	})
}
