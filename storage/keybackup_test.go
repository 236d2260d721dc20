package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestBackupSessionComparison(t *testing.T) {
	base := storage.BackupSession{FirstMessageIndex: 5, ForwardedCount: 2, IsVerified: false}
	cases := []struct {
		name   string
		new    storage.BackupSession
		better bool
	}{
		{"verified beats unverified even with a worse index", storage.BackupSession{IsVerified: true, FirstMessageIndex: 50, ForwardedCount: 9}, true},
		{"lower first_message_index wins", storage.BackupSession{FirstMessageIndex: 4, ForwardedCount: 9}, true},
		{"higher first_message_index loses", storage.BackupSession{FirstMessageIndex: 6, ForwardedCount: 0}, false},
		{"lower forwarded_count wins on equal index", storage.BackupSession{FirstMessageIndex: 5, ForwardedCount: 1}, true},
		{"higher forwarded_count loses", storage.BackupSession{FirstMessageIndex: 5, ForwardedCount: 3}, false},
		{"equal keeps the stored key", storage.BackupSession{FirstMessageIndex: 5, ForwardedCount: 2}, false},
	}
	for _, c := range cases {
		if got := c.new.BetterThan(base); got != c.better {
			t.Errorf("%s: got %v", c.name, got)
		}
	}
	verified := base
	verified.IsVerified = true
	if (storage.BackupSession{FirstMessageIndex: 0}).BetterThan(verified) {
		t.Error("unverified key replaced a verified one")
	}
}

func TestBackupVersionsAndSessions(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const u = "@a:hs"
		if _, err := storage.LatestBackupVersion(ctx, db, u); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("latest of no backup: %v", err)
		}
		var v1, v2 int64
		withTx(t, db, func(tx *storage.Tx) (err error) {
			v1, err = storage.CreateBackupVersion(ctx, tx, u, "alg", json.RawMessage(`{"a":1}`))
			return err
		})
		withTx(t, db, func(tx *storage.Tx) (err error) {
			v2, err = storage.CreateBackupVersion(ctx, tx, u, "alg", json.RawMessage(`{"a":2}`))
			return err
		})
		if v1 != 1 || v2 != 2 {
			t.Fatalf("versions %d %d", v1, v2)
		}
		latest, err := storage.LatestBackupVersion(ctx, db, u)
		if err != nil || latest.Version != 2 || string(latest.AuthData) != `{"a":2}` {
			t.Fatalf("latest %+v %v", latest, err)
		}
		put := func(s storage.BackupSession) int64 {
			var etag int64
			withTx(t, db, func(tx *storage.Tx) (err error) {
				etag, err = storage.PutBackupSessions(ctx, tx, u, 2, []storage.BackupSession{s})
				return err
			})
			return etag
		}
		s := storage.BackupSession{RoomID: "!r:hs", SessionID: "s1", FirstMessageIndex: 3, ForwardedCount: 1, SessionData: json.RawMessage(`{"d":1}`)}
		e1 := put(s)
		worse := s
		worse.FirstMessageIndex, worse.SessionData = 4, json.RawMessage(`{"d":2}`)
		if e2 := put(worse); e2 != e1 {
			t.Fatalf("etag changed by a rejected key: %d -> %d", e1, e2)
		}
		better := s
		better.IsVerified, better.FirstMessageIndex, better.SessionData = true, 10, json.RawMessage(`{"d":3}`)
		if e3 := put(better); e3 == e1 {
			t.Fatal("etag unchanged by a replaced key")
		}
		got, err := storage.GetBackupSessions(ctx, db, u, 2, "!r:hs", "s1")
		if err != nil || len(got) != 1 || string(got[0].SessionData) != `{"d":3}` || !got[0].IsVerified {
			t.Fatalf("stored session %+v %v", got, err)
		}
		put(storage.BackupSession{RoomID: "!r2:hs", SessionID: "s2", SessionData: json.RawMessage(`{}`)})
		if n, _ := storage.CountBackupSessions(ctx, db, u, 2); n != 2 {
			t.Fatalf("count %d", n)
		}
		withTx(t, db, func(tx *storage.Tx) error {
			_, err := storage.DeleteBackupSessions(ctx, tx, u, 2, "!r2:hs", "")
			return err
		})
		if n, _ := storage.CountBackupSessions(ctx, db, u, 2); n != 1 {
			t.Fatalf("count after room delete %d", n)
		}
		// Deleting a version deletes its keys; the number is not reused; deleting again succeeds.
		withTx(t, db, func(tx *storage.Tx) error { return storage.DeleteBackupVersion(ctx, tx, u, 2) })
		withTx(t, db, func(tx *storage.Tx) error { return storage.DeleteBackupVersion(ctx, tx, u, 2) })
		if n, _ := storage.CountBackupSessions(ctx, db, u, 2); n != 0 {
			t.Fatalf("keys of a deleted version remain: %d", n)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.DeleteBackupVersion(ctx, tx, u, 9) }); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("delete of an unknown version: %v", err)
		}
		if _, err := storage.GetBackupVersion(ctx, db, u, 2); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("get deleted version: %v", err)
		}
		latest, _ = storage.LatestBackupVersion(ctx, db, u)
		if latest.Version != 1 {
			t.Fatalf("latest after deleting 2: %d", latest.Version)
		}
		var v3 int64
		withTx(t, db, func(tx *storage.Tx) (err error) {
			v3, err = storage.CreateBackupVersion(ctx, tx, u, "alg", json.RawMessage(`{}`))
			return err
		})
		if v3 != 3 {
			t.Fatalf("version after delete: %d", v3)
		}
	})
}
