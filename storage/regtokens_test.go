package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func regTokenInt(v int64) *int64 { return &v }

func TestRegistrationTokens(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "two", UsesAllowed: regTokenInt(2)}); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "two"}); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("duplicate: want ErrExists, got %v", err)
		}
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "expired", ExpiryTS: regTokenInt(500)}); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "unlimited"}); err != nil {
			t.Fatal(err)
		}
		const now = 1000
		if v, _ := storage.RegistrationTokenValid(ctx, db, "expired", now); v {
			t.Fatal("expired token is valid")
		}
		if v, _ := storage.RegistrationTokenValid(ctx, db, "nosuch", now); v {
			t.Fatal("unknown token is valid")
		}
		if ok, _ := storage.ReserveRegistrationToken(ctx, db, "expired", now); ok {
			t.Fatal("expired token reserved")
		}

		// Two uses: two reservations succeed, the third fails; completing one keeps it used.
		for i, want := range []bool{true, true, false} {
			ok, err := storage.ReserveRegistrationToken(ctx, db, "two", now)
			if err != nil || ok != want {
				t.Fatalf("reservation %d: ok=%v err=%v", i, ok, err)
			}
		}
		if err := storage.ConsumeRegistrationToken(ctx, db, "two"); err != nil {
			t.Fatal(err)
		}
		if err := storage.ReleaseRegistrationToken(ctx, db, "two"); err != nil {
			t.Fatal(err)
		}
		got, err := storage.GetRegistrationToken(ctx, db, "two")
		if err != nil || got.Pending != 0 || got.Completed != 1 || got.UsesAllowed == nil || *got.UsesAllowed != 2 || got.ExpiryTS != nil {
			t.Fatalf("after consume+release: %+v %v", got, err)
		}
		if !got.Valid(now) {
			t.Fatal("token with one of two uses left is not valid")
		}
		if err := storage.ConsumeRegistrationToken(ctx, db, "nosuch"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("consume unknown: %v", err)
		}

		valid, invalid := true, false
		all, err := storage.ListRegistrationTokens(ctx, db, nil, now)
		if err != nil || len(all) != 3 || all[0].Token != "expired" {
			t.Fatalf("list all: %+v %v", all, err)
		}
		vs, _ := storage.ListRegistrationTokens(ctx, db, &valid, now)
		is, _ := storage.ListRegistrationTokens(ctx, db, &invalid, now)
		if len(vs) != 2 || len(is) != 1 || is[0].Token != "expired" {
			t.Fatalf("valid filter: valid=%+v invalid=%+v", vs, is)
		}

		// Update: lift the expiry, then cap uses at what is already used.
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.UpdateRegistrationToken(ctx, tx, "expired", storage.RegistrationTokenUpdate{SetExpiry: true})
		})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := storage.RegistrationTokenValid(ctx, db, "expired", now); !v {
			t.Fatal("token with expiry removed is not valid")
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.UpdateRegistrationToken(ctx, tx, "two", storage.RegistrationTokenUpdate{SetUsesAllowed: true, UsesAllowed: regTokenInt(1)})
		})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := storage.RegistrationTokenValid(ctx, db, "two", now); v {
			t.Fatal("token used up by an update is still valid")
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.UpdateRegistrationToken(ctx, tx, "nosuch", storage.RegistrationTokenUpdate{SetExpiry: true})
		})
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("update unknown: %v", err)
		}

		if err := storage.DeleteRegistrationToken(ctx, db, "two"); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteRegistrationToken(ctx, db, "two"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})
}

// Concurrent registrations can never use a token more often than allowed.
func TestRegistrationTokenReservationIsAtomic(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "three", UsesAllowed: regTokenInt(3)}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ok bool
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					var err error
					ok, err = storage.ReserveRegistrationToken(ctx, tx, "three", 1)
					return err
				})
				if err == nil && ok {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 3 {
			t.Fatalf("token with 3 uses reserved %d times", wins)
		}
	})
}

func TestRegistrationNonces(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		take := func(hash string, notBefore int64) bool {
			var ok bool
			err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				ok, err = storage.TakeRegistrationNonce(ctx, tx, hash, notBefore)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		for _, n := range []struct {
			h  string
			ts int64
		}{{"fresh", 1000}, {"stale", 10}, {"gone", 20}} {
			if err := storage.InsertRegistrationNonce(ctx, db, n.h, n.ts); err != nil {
				t.Fatal(err)
			}
		}
		if !take("fresh", 900) {
			t.Fatal("fresh nonce refused")
		}
		if take("fresh", 900) {
			t.Fatal("nonce accepted twice")
		}
		if take("stale", 900) {
			t.Fatal("expired nonce accepted")
		}
		if take("stale", 0) {
			t.Fatal("an expired nonce that was refused stays usable")
		}
		if err := storage.DeleteExpiredRegistrationNonces(ctx, db, 900); err != nil {
			t.Fatal(err)
		}
		if take("gone", 0) {
			t.Fatal("expired nonce survived the clean-up")
		}
	})
}
