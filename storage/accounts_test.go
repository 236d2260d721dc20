package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestAccountsAndDevices(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		a := storage.Account{UserID: "@alice:test", PasswordHash: "h1", CreatedTS: 1}
		if err := storage.InsertAccount(ctx, db, a); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertAccount(ctx, db, a); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second insert: want ErrExists, got %v", err)
		}
		got, err := storage.GetAccount(ctx, db, "@alice:test")
		if err != nil || got.PasswordHash != "h1" || got.Deactivated || got.AccountType != "user" {
			t.Fatalf("get account: %+v %v", got, err)
		}
		if _, err := storage.GetAccount(ctx, db, "@nobody:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown account: want ErrNotFound, got %v", err)
		}
		name := "Phone"
		if err := storage.InsertDevice(ctx, db, storage.Device{UserID: a.UserID, DeviceID: "D1", DisplayName: &name, CreatedTS: 5}); err != nil {
			t.Fatal(err)
		}
		// Logging in again with the same device ID keeps the old name when none is given.
		if err := storage.InsertDevice(ctx, db, storage.Device{UserID: a.UserID, DeviceID: "D1", CreatedTS: 6}); err != nil {
			t.Fatal(err)
		}
		d, err := storage.GetDevice(ctx, db, a.UserID, "D1")
		if err != nil || d.DisplayName == nil || *d.DisplayName != "Phone" || d.CreatedTS != 5 {
			t.Fatalf("device after re-login: %+v %v", d, err)
		}
		if err := storage.InsertAccessToken(ctx, db, storage.AccessToken{TokenHash: "t1", UserID: a.UserID, DeviceID: "D1", CreatedTS: 7}); err != nil {
			t.Fatal(err)
		}
		var removed []string
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			removed, err = storage.DeleteDevice(ctx, tx, a.UserID, "D1")
			return err
		})
		if err != nil || len(removed) != 1 || removed[0] != "t1" {
			t.Fatalf("delete device: %v %v", removed, err)
		}
		if _, err := storage.GetAccessToken(ctx, db, "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token of deleted device still there: %v", err)
		}
	})
}

func TestTransactionRollsBack(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.InsertAccount(ctx, tx, storage.Account{UserID: "@bob:test", CreatedTS: 1}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("want boom, got %v", err)
		}
		if ok, _ := storage.AccountExists(ctx, db, "@bob:test"); ok {
			t.Fatal("rolled back account was written")
		}
	})
}

func TestRefreshTokenIsSingleUse(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.InsertRefreshToken(ctx, db, "r1", "@a:test", "D", 1); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					_, _, err := storage.TakeRefreshToken(ctx, tx, "r1")
					return err
				})
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("refresh token used %d times, want exactly 1", wins)
		}
	})
}
