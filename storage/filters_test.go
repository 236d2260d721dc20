package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestFilters(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		insert := func(user, f string) int64 {
			t.Helper()
			var id int64
			err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				id, err = storage.InsertFilter(ctx, tx, user, []byte(f))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		f1 := `{"room":{"timeline":{"limit":10}}}`
		f2 := `{"presence":{"not_types":["*"]}}`
		a1 := insert("@alice:test", f1)
		a2 := insert("@alice:test", f2)
		if a1 == a2 {
			t.Fatalf("two different filters share ID %d", a1)
		}
		if again := insert("@alice:test", f1); again != a1 {
			t.Fatalf("re-uploading the same filter gave ID %d, want the existing %d", again, a1)
		}
		b1 := insert("@bob:test", f1)
		if b1 == a1 {
			t.Fatal("bob's filter reuses alice's row")
		}
		got, err := storage.GetFilter(ctx, db, "@alice:test", a2)
		if err != nil || string(got) != f2 {
			t.Fatalf("get filter: %s %v", got, err)
		}
		if _, err := storage.GetFilter(ctx, db, "@bob:test", a2); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("bob read alice's filter: %v", err)
		}
		if _, err := storage.GetFilter(ctx, db, "@alice:test", 999999); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown filter: %v", err)
		}
	})
}
