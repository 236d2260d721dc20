package storage_test

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func nextPos(t *testing.T, db *storage.DB, stream string) int64 {
	t.Helper()
	var pos int64
	err := db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		pos, err = storage.NextStreamPosition(context.Background(), tx, stream)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestStreamPositionsAreDenseAndIndependent(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if cur, err := storage.CurrentStreamPosition(ctx, db, "s1"); err != nil || cur != 0 {
			t.Fatalf("current position of a new stream: %d %v", cur, err)
		}
		for want := int64(1); want <= 3; want++ {
			if got := nextPos(t, db, "s1"); got != want {
				t.Fatalf("position %d of s1: got %d", want, got)
			}
		}
		if got := nextPos(t, db, "s2"); got != 1 {
			t.Fatalf("first position of s2: got %d, streams are not independent", got)
		}
		// A rolled-back transaction gives its position back.
		boom := errors.New("boom")
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if _, err := storage.NextStreamPosition(ctx, tx, "s1"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if cur, err := storage.CurrentStreamPosition(ctx, db, "s1"); err != nil || cur != 3 {
			t.Fatalf("current position after rollback: %d %v", cur, err)
		}
		if got := nextPos(t, db, "s1"); got != 4 {
			t.Fatalf("position after rollback: got %d, want 4", got)
		}
	})
}

func TestStreamPositionsConcurrent(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const workers, each = 8, 25
		var mu sync.Mutex
		var got []int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := db.WithTx(ctx, func(tx *storage.Tx) error {
						pos, err := storage.NextStreamPosition(ctx, tx, storage.StreamAccountData)
						if err != nil {
							return err
						}
						mu.Lock()
						got = append(got, pos)
						mu.Unlock()
						return nil
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		if len(got) != workers*each {
			t.Fatalf("got %d positions, want %d", len(got), workers*each)
		}
		for i, p := range got {
			if p != int64(i+1) {
				t.Fatalf("positions are not unique and dense: index %d has %d", i, p)
			}
		}
		if cur, _ := storage.CurrentStreamPosition(ctx, db, storage.StreamAccountData); cur != workers*each {
			t.Fatalf("current position %d, want %d", cur, workers*each)
		}
	})
}

// A transaction that takes a later position cannot commit before the one holding an
// earlier position: readers never see positions appear out of order.
func TestStreamPositionsCommitInOrder(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		release := make(chan struct{})
		firstTaken := make(chan int64, 1)
		firstDone := make(chan error, 1)
		go func() {
			firstDone <- db.WithTx(ctx, func(tx *storage.Tx) error {
				pos, err := storage.NextStreamPosition(ctx, tx, "ordered")
				if err != nil {
					return err
				}
				firstTaken <- pos
				<-release
				return nil
			})
		}()
		var first int64
		select {
		case first = <-firstTaken:
		case err := <-firstDone:
			t.Fatalf("first transaction ended early: %v", err)
		}
		secondDone := make(chan int64, 1)
		go func() {
			var pos int64
			_ = db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				pos, err = storage.NextStreamPosition(ctx, tx, "ordered")
				return err
			})
			secondDone <- pos
		}()
		select {
		case pos := <-secondDone:
			t.Fatalf("second transaction got position %d while the first (position %d) was still open", pos, first)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		if err := <-firstDone; err != nil {
			t.Fatal(err)
		}
		select {
		case pos := <-secondDone:
			if pos != first+1 {
				t.Fatalf("second position %d, want %d", pos, first+1)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("second transaction still blocked after the first committed")
		}
	})
}
