package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestUIASessions(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := storage.UIASession{ID: "s1", UserID: "@a:test", Path: "/_matrix/client/v3/delete_devices", CreatedTS: 100}
		if err := storage.InsertUIASession(ctx, db, s); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertUIASession(ctx, db, s); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("duplicate session: want ErrExists, got %v", err)
		}
		got, err := storage.GetUIASession(ctx, db, "s1")
		if err != nil || got.UserID != s.UserID || got.Path != s.Path || len(got.Completed) != 0 || got.CreatedTS != 100 {
			t.Fatalf("get: %+v %v", got, err)
		}
		got.Completed = []string{"m.login.password"}
		got.RegistrationToken = "tok"
		if err := storage.UpdateUIASession(ctx, db, got); err != nil {
			t.Fatal(err)
		}
		again, err := storage.GetUIASession(ctx, db, "s1")
		if err != nil || !slices.Equal(again.Completed, []string{"m.login.password"}) || again.RegistrationToken != "tok" {
			t.Fatalf("after update: %+v %v", again, err)
		}
		if err := storage.UpdateUIASession(ctx, db, storage.UIASession{ID: "nope"}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("update unknown: want ErrNotFound, got %v", err)
		}
		if err := storage.DeleteUIASession(ctx, db, "s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.GetUIASession(ctx, db, "s1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted session still there: %v", err)
		}

		// Per-user deletion leaves other users' sessions alone.
		for _, id := range []string{"a1", "a2"} {
			_ = storage.InsertUIASession(ctx, db, storage.UIASession{ID: id, UserID: "@a:test", Path: "/p", CreatedTS: 1})
		}
		_ = storage.InsertUIASession(ctx, db, storage.UIASession{ID: "b1", UserID: "@b:test", Path: "/p", CreatedTS: 1})
		if err := storage.DeleteUIASessionsForUser(ctx, db, "@a:test"); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.GetUIASession(ctx, db, "a2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a2 survived per-user deletion: %v", err)
		}
		if _, err := storage.GetUIASession(ctx, db, "b1"); err != nil {
			t.Fatalf("b1 removed by another user's deletion: %v", err)
		}
	})
}

// Expired registration sessions give back the registration-token uses they reserved.
func TestExpiredUIASessionsReleaseTokens(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		one := int64(1)
		if err := storage.InsertRegistrationToken(ctx, db, storage.RegistrationToken{Token: "single", UsesAllowed: &one}); err != nil {
			t.Fatal(err)
		}
		ok, err := storage.ReserveRegistrationToken(ctx, db, "single", 1000)
		if err != nil || !ok {
			t.Fatalf("reserve: %v %v", ok, err)
		}
		if err := storage.InsertUIASession(ctx, db, storage.UIASession{ID: "old", Path: "/register", RegistrationToken: "single", CreatedTS: 10}); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertUIASession(ctx, db, storage.UIASession{ID: "new", Path: "/register", CreatedTS: 5000}); err != nil {
			t.Fatal(err)
		}
		if valid, _ := storage.RegistrationTokenValid(ctx, db, "single", 1000); valid {
			t.Fatal("a token whose only use is pending is still valid")
		}
		var n int64
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			n, err = storage.DeleteExpiredUIASessions(ctx, tx, 1000)
			return err
		})
		if err != nil || n != 1 {
			t.Fatalf("delete expired: n=%d err=%v", n, err)
		}
		if _, err := storage.GetUIASession(ctx, db, "new"); err != nil {
			t.Fatalf("unexpired session removed: %v", err)
		}
		tok, err := storage.GetRegistrationToken(ctx, db, "single")
		if err != nil || tok.Pending != 0 || tok.Completed != 0 {
			t.Fatalf("token after expiry: %+v %v", tok, err)
		}
		if valid, _ := storage.RegistrationTokenValid(ctx, db, "single", 1000); !valid {
			t.Fatal("released token is not valid again")
		}
	})
}
