package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestMediaRowsAndAsyncUpload(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		m := &storage.Media{ServerName: "hs.test", MediaID: "abc", UserID: "@a:hs.test", ContentType: "image/png",
			UploadName: "a.png", Size: 10, SHA256: "h1", CreatedTS: 1, UploadedTS: 1}
		if err := storage.InsertMedia(ctx, db, m); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertMedia(ctx, db, m); !storage.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert: %v", err)
		}
		got, err := storage.GetMedia(ctx, db, "hs.test", "abc")
		if err != nil || *got != *m {
			t.Fatalf("got %+v, %v", got, err)
		}
		if _, err := storage.GetMedia(ctx, db, "hs.test", "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown media: %v", err)
		}
		// Asynchronous upload: an empty row completed once, by its creator, before expiry.
		p := &storage.Media{ServerName: "hs.test", MediaID: "pending", UserID: "@a:hs.test", CreatedTS: 1, ExpiresTS: 100}
		if err := storage.InsertMedia(ctx, db, p); err != nil {
			t.Fatal(err)
		}
		if n, err := storage.CountPendingMedia(ctx, db, "@a:hs.test", 50); err != nil || n != 1 {
			t.Fatalf("pending = %d, %v", n, err)
		}
		done := *p
		done.ContentType, done.Size, done.SHA256, done.UploadedTS = "text/plain", 5, "h2", 60
		other := done
		other.UserID = "@b:hs.test"
		if ok, err := storage.CompleteMedia(ctx, db, &other, 50); err != nil || ok {
			t.Fatalf("other user completed: %v %v", ok, err)
		}
		if ok, err := storage.CompleteMedia(ctx, db, &done, 150); err != nil || ok {
			t.Fatalf("expired completed: %v %v", ok, err)
		}
		if ok, err := storage.CompleteMedia(ctx, db, &done, 50); err != nil || !ok {
			t.Fatalf("complete: %v %v", ok, err)
		}
		if ok, err := storage.CompleteMedia(ctx, db, &done, 50); err != nil || ok {
			t.Fatalf("second complete: %v %v", ok, err)
		}
		if n, err := storage.UserMediaBytes(ctx, db, "@a:hs.test"); err != nil || n != 15 {
			t.Fatalf("bytes = %d, %v", n, err)
		}
		if used, err := storage.MediaHashInUse(ctx, db, "h2"); err != nil || !used {
			t.Fatalf("in use: %v %v", used, err)
		}
		// Thumbnails and previews.
		th := &storage.MediaThumbnail{ServerName: "hs.test", MediaID: "abc", Width: 32, Height: 32, Method: "crop", ContentType: "image/png", Size: 3, SHA256: "t1", CreatedTS: 2}
		for i := 0; i < 2; i++ {
			if err := storage.PutMediaThumbnail(ctx, db, th); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := storage.GetMediaThumbnail(ctx, db, "hs.test", "abc", 32, 32, "crop"); err != nil || *got != *th {
			t.Fatalf("thumbnail %+v %v", got, err)
		}
		if _, err := storage.GetMediaThumbnail(ctx, db, "hs.test", "abc", 32, 32, "scale"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing thumbnail: %v", err)
		}
		if err := storage.PutURLPreview(ctx, db, "https://x", `{"a":1}`, 10); err != nil {
			t.Fatal(err)
		}
		if err := storage.PutURLPreview(ctx, db, "https://x", `{"a":2}`, 20); err != nil {
			t.Fatal(err)
		}
		if og, err := storage.GetURLPreview(ctx, db, "https://x", 15); err != nil || og != `{"a":2}` {
			t.Fatalf("preview %q %v", og, err)
		}
		if _, err := storage.GetURLPreview(ctx, db, "https://x", 25); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("stale preview: %v", err)
		}
	})
}
