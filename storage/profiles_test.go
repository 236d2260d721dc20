package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func updateProfile(t *testing.T, db *storage.DB, user, field string, value json.RawMessage, max int) (before, after storage.Profile, err error) {
	t.Helper()
	err = db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		before, after, err = storage.UpdateProfileField(context.Background(), tx, user, field, value, max)
		return err
	})
	return before, after, err
}

func profileJSON(t *testing.T, p storage.Profile) string {
	t.Helper()
	b, err := json.Marshal(p.Map())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProfiles(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice = "@alice:test"
		p, err := storage.GetProfile(ctx, db, alice)
		if err != nil || profileJSON(t, p) != `{}` {
			t.Fatalf("empty profile: %+v %v", p, err)
		}
		steps := []struct {
			field, value string // value "" removes
			want         string
		}{
			{"displayname", `"Alice"`, `{"displayname":"Alice"}`},
			{"avatar_url", `"mxc://test/abc"`, `{"avatar_url":"mxc://test/abc","displayname":"Alice"}`},
			{"m.tz", `"Europe/Paris"`, `{"avatar_url":"mxc://test/abc","displayname":"Alice","m.tz":"Europe/Paris"}`},
			{"org.example.obj", `{"a":[1,2,{"b":null}]}`, `{"avatar_url":"mxc://test/abc","displayname":"Alice","m.tz":"Europe/Paris","org.example.obj":{"a":[1,2,{"b":null}]}}`},
			{"org.example.null", `null`, `{"avatar_url":"mxc://test/abc","displayname":"Alice","m.tz":"Europe/Paris","org.example.null":null,"org.example.obj":{"a":[1,2,{"b":null}]}}`},
			{"displayname", `"Alice 2"`, `{"avatar_url":"mxc://test/abc","displayname":"Alice 2","m.tz":"Europe/Paris","org.example.null":null,"org.example.obj":{"a":[1,2,{"b":null}]}}`},
			{"org.example.obj", "", `{"avatar_url":"mxc://test/abc","displayname":"Alice 2","m.tz":"Europe/Paris","org.example.null":null}`},
			{"avatar_url", "", `{"displayname":"Alice 2","m.tz":"Europe/Paris","org.example.null":null}`},
			{"displayname", `""`, `{"m.tz":"Europe/Paris","org.example.null":null}`},
			{"org.example.missing", "", `{"m.tz":"Europe/Paris","org.example.null":null}`},
		}
		for _, st := range steps {
			var v json.RawMessage
			if st.value != "" {
				v = json.RawMessage(st.value)
			}
			before, after, err := updateProfile(t, db, alice, st.field, v, 64*1024)
			if err != nil {
				t.Fatalf("set %s=%s: %v", st.field, st.value, err)
			}
			if got := profileJSON(t, after); got != st.want {
				t.Fatalf("after %s=%s: returned %s, want %s", st.field, st.value, got, st.want)
			}
			stored, err := storage.GetProfile(ctx, db, alice)
			if err != nil {
				t.Fatal(err)
			}
			if got := profileJSON(t, stored); got != st.want {
				t.Fatalf("after %s=%s: stored %s, want %s", st.field, st.value, got, st.want)
			}
			_ = before
		}
		if v, ok := p.Field("displayname"); ok {
			t.Fatalf("unset displayname reported as set: %s", v)
		}
		stored, _ := storage.GetProfile(ctx, db, alice)
		if v, ok := stored.Field("org.example.null"); !ok || string(v) != "null" {
			t.Fatalf("null field: %s %v", v, ok)
		}
		if _, _, err := updateProfile(t, db, alice, "displayname", json.RawMessage(`5`), 0); err == nil {
			t.Fatal("displayname accepted a number")
		}
		bob, _ := storage.GetProfile(ctx, db, "@bob:test")
		if profileJSON(t, bob) != `{}` {
			t.Fatalf("bob sees alice's profile: %+v", bob)
		}
		if _, _, err := updateProfile(t, db, "@bob:test", "org.example.keep", json.RawMessage(`1`), 0); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteCustomProfileFields(ctx, db, alice); err != nil {
			t.Fatal(err)
		}
		if p, _ := storage.GetProfile(ctx, db, alice); profileJSON(t, p) != `{}` {
			t.Fatalf("custom fields left after deletion: %s", profileJSON(t, p))
		}
		if p, _ := storage.GetProfile(ctx, db, "@bob:test"); profileJSON(t, p) != `{"org.example.keep":1}` {
			t.Fatalf("another user's fields deleted: %s", profileJSON(t, p))
		}
	})
}

func TestProfileSizeLimit(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice = "@alice:test"
		big := json.RawMessage(`"` + strings.Repeat("x", 600) + `"`)
		if _, _, err := updateProfile(t, db, alice, "org.example.a", big, 1000); err != nil {
			t.Fatal(err)
		}
		_, after, err := updateProfile(t, db, alice, "org.example.b", big, 1000)
		if !errors.Is(err, storage.ErrProfileTooLarge) {
			t.Fatalf("want ErrProfileTooLarge, got %v", err)
		}
		if _, ok := after.Field("org.example.b"); ok {
			t.Fatal("refused field returned as set")
		}
		p, _ := storage.GetProfile(ctx, db, alice)
		if _, ok := p.Field("org.example.b"); ok {
			t.Fatal("refused field was stored")
		}
		// Replacing the big field by a small one fits.
		if _, _, err := updateProfile(t, db, alice, "org.example.a", json.RawMessage(`1`), 1000); err != nil {
			t.Fatal(err)
		}
		if _, _, err := updateProfile(t, db, alice, "org.example.b", big, 1000); err != nil {
			t.Fatal(err)
		}
	})
}

// Concurrent writers of different fields cannot together push a profile over the limit.
func TestProfileSizeLimitConcurrent(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice, limit = "@alice:test", 2000
		val := json.RawMessage(`"` + strings.Repeat("y", 500) + `"`)
		// Open the connections first and start the writers together, so they really overlap.
		var warm sync.WaitGroup
		for i := 0; i < 8; i++ {
			warm.Add(1)
			go func() {
				defer warm.Done()
				_ = db.WithTx(ctx, func(tx *storage.Tx) error {
					time.Sleep(50 * time.Millisecond)
					return nil
				})
			}()
		}
		warm.Wait()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_ = db.WithTx(ctx, func(tx *storage.Tx) error {
					_, _, err := storage.UpdateProfileField(ctx, tx, alice, fmt.Sprintf("org.example.f%d", i), val, limit)
					return err
				})
			}()
		}
		close(start)
		wg.Wait()
		p, err := storage.GetProfile(ctx, db, alice)
		if err != nil {
			t.Fatal(err)
		}
		if p.Size() > limit {
			t.Fatalf("profile grew to %d bytes, over the %d limit", p.Size(), limit)
		}
		if len(p.Fields) != 3 {
			t.Fatalf("%d fields stored, want 3 (the most that fit)", len(p.Fields))
		}
	})
}
