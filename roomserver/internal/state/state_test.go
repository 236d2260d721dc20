package state

import (
	"context"
	"math/rand"
	"sort"
	"testing"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestEncodingRoundTrip(t *testing.T) {
	entries := []Entry{{Key{1, 1}, 10}, {Key{1, 5}, 1 << 40}, {Key{4, 2}, 3}, {Key{4, 3}, 3}, {Key{9, 0}, 7}}
	got, err := decodeEntries(encodeEntries(entries))
	if err != nil || len(got) != len(entries) {
		t.Fatal(got, err)
	}
	for i := range got {
		if got[i] != entries[i] {
			t.Fatalf("%d: %v != %v", i, got[i], entries[i])
		}
	}
	refs := []BlockRef{{First: Key{1, 2}, NID: 5, Len: 128}, {First: Key{4, 100000}, NID: 99, Len: 3}}
	gotRefs, err := decodeRefs(encodeRefs(refs))
	if err != nil || len(gotRefs) != 2 || gotRefs[1].First != refs[1].First || gotRefs[1].NID != 99 || gotRefs[0].Len != 128 {
		t.Fatal(gotRefs, err)
	}
	if _, err := decodeEntries([]byte{1, 5, 1}); err == nil {
		t.Fatal("truncated block decoded")
	}
}

// TestApplyMatchesMap applies random change sets (inserts, replacements, removals) to
// snapshots and checks every snapshot against a plain map, including after reloading
// it from the database with cold caches, and Diff against the map difference.
func TestApplyMatchesMap(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := NewStore(db, 1000, 1000)
		rng := rand.New(rand.NewSource(1))
		model := map[Key]int64{}
		snap := Empty
		var history []*Snapshot
		var models []map[Key]int64
		for round := range 60 {
			var changes []Entry
			n := 1 + rng.Intn(40)
			if round == 0 {
				n = 1500 // one big initial state (several blocks)
			}
			for range n {
				k := Key{Type: int64(1 + rng.Intn(3)), StateKey: int64(rng.Intn(3000))}
				ev := int64(rng.Intn(1_000_000) + 1)
				if rng.Intn(10) == 0 {
					ev = 0
				}
				changes = append(changes, Entry{Key: k, Event: ev})
			}
			var next *Snapshot
			err := db.WithTx(ctx, func(tx *storage.Tx) error {
				var err error
				next, err = s.Apply(ctx, tx, snap, 1, changes)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			s.Remember(next)
			prev := model
			model = map[Key]int64{}
			for k, v := range prev {
				model[k] = v
			}
			sorted := normalise(changes)
			for _, c := range sorted {
				if c.Event == 0 {
					delete(model, c.Key)
				} else {
					model[c.Key] = c.Event
				}
			}
			checkSnapshot(t, s, next, model)
			for _, r := range next.refs {
				if r.Len > maxBlock || r.Len == 0 {
					t.Fatalf("block of %d entries", r.Len)
				}
			}
			diff, err := s.Diff(ctx, snap, next)
			if err != nil {
				t.Fatal(err)
			}
			wantDiff := 0
			for k, v := range model {
				if prev[k] != v {
					wantDiff++
				}
			}
			for k := range prev {
				if _, ok := model[k]; !ok {
					wantDiff++
				}
			}
			if len(diff) != wantDiff {
				t.Fatalf("round %d: diff has %d entries, want %d", round, len(diff), wantDiff)
			}
			for _, d := range diff {
				if model[d.Key] != d.Event {
					t.Fatalf("diff entry %v, model has %d", d, model[d.Key])
				}
			}
			history = append(history, next)
			models = append(models, model)
			snap = next
		}
		// Every old snapshot, reloaded cold from the database.
		cold := NewStore(db, 10, 10)
		for i, h := range history {
			loaded, err := cold.Snapshot(ctx, h.NID)
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, cold, loaded, models[i])
		}
	})
}

func checkSnapshot(t *testing.T, s *Store, snap *Snapshot, model map[Key]int64) {
	t.Helper()
	ctx := context.Background()
	entries, err := s.Entries(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(model) || snap.Len() != len(model) {
		t.Fatalf("snapshot %d has %d entries (Len %d), want %d", snap.NID, len(entries), snap.Len(), len(model))
	}
	if !sort.SliceIsSorted(entries, func(i, j int) bool { return entries[i].Key.Compare(entries[j].Key) < 0 }) {
		t.Fatal("entries not sorted")
	}
	for _, e := range entries {
		if model[e.Key] != e.Event {
			t.Fatalf("entry %v, want %d", e, model[e.Key])
		}
	}
	n := 0
	for k, v := range model {
		if n++; n > 50 {
			break
		}
		got, ok, err := s.Lookup(ctx, snap, k)
		if err != nil || !ok || got != v {
			t.Fatalf("lookup %v = %d %v %v, want %d", k, got, ok, err, v)
		}
	}
	if _, ok, _ := s.Lookup(ctx, snap, Key{Type: 99, StateKey: 1}); ok {
		t.Fatal("found a key never set")
	}
	for typ := int64(1); typ <= 3; typ++ {
		of, err := s.EntriesOfType(ctx, snap, typ)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for k := range model {
			if k.Type == typ {
				want++
			}
		}
		if len(of) != want {
			t.Fatalf("type %d: %d entries, want %d", typ, len(of), want)
		}
	}
}
