package state

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/myelin-chat/myelin/roomserver/internal/lru"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

const (
	// maxBlock is the size above which a block is split.
	maxBlock = 256
	// targetBlock is the size blocks are cut to when written or split.
	targetBlock = 128
)

// Snapshot is an immutable room state. The zero NID is the empty state.
//
// A snapshot may hold pointers to its blocks ("pinned"): the current state of each
// room is kept pinned so that reading it never touches the database. Snapshots in the
// LRU cache are not pinned; their blocks go through the block cache.
type Snapshot struct {
	NID     int64
	RoomNID int64
	refs    []BlockRef
	// blocks written by Apply that are not in the block cache yet (see Store.Remember).
	fresh []*Block
}

// Empty is the state of a room before its create event.
var Empty = &Snapshot{}

// Len returns the number of entries.
func (s *Snapshot) Len() int {
	n := 0
	for _, r := range s.refs {
		n += r.Len
	}
	return n
}

// Pinned reports whether every block of the snapshot is held in memory.
func (s *Snapshot) Pinned() bool {
	for _, r := range s.refs {
		if r.blk == nil {
			return false
		}
	}
	return true
}

func (s *Snapshot) unpinned() *Snapshot {
	c := &Snapshot{NID: s.NID, RoomNID: s.RoomNID, refs: slices.Clone(s.refs)}
	for i := range c.refs {
		c.refs[i].blk = nil
	}
	return c
}

// blockIndex returns the index of the block that holds (or would hold) key.
func (s *Snapshot) blockIndex(key Key) int {
	i := sort.Search(len(s.refs), func(i int) bool { return s.refs[i].First.Compare(key) > 0 }) - 1
	return max(i, 0)
}

// Store reads and writes snapshots and blocks, with LRU caches of both.
type Store struct {
	db     storage.Querier
	blocks *lru.Cache[int64, *Block]
	snaps  *lru.Cache[int64, *Snapshot]
}

// NewStore returns a Store reading through db, caching up to maxBlocks blocks and
// maxSnapshots snapshots.
func NewStore(db storage.Querier, maxBlocks, maxSnapshots int) *Store {
	return &Store{db: db, blocks: lru.New[int64, *Block](maxBlocks), snaps: lru.New[int64, *Snapshot](maxSnapshots)}
}

// Snapshot loads a snapshot by NID (0 is the empty state). The result is not pinned.
func (s *Store) Snapshot(ctx context.Context, nid int64) (*Snapshot, error) {
	if nid == 0 {
		return Empty, nil
	}
	if snap, ok := s.snaps.Get(nid); ok {
		return snap, nil
	}
	roomNID, data, err := roomstore.StateSnapshot(ctx, s.db, nid)
	if err != nil {
		return nil, err
	}
	refs, err := decodeRefs(data)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", nid, err)
	}
	snap := &Snapshot{NID: nid, RoomNID: roomNID, refs: refs}
	s.snaps.Add(nid, snap)
	return snap, nil
}

// Pin returns the snapshot with all its blocks held in memory.
func (s *Store) Pin(ctx context.Context, snap *Snapshot) (*Snapshot, error) {
	if snap.Pinned() {
		return snap, nil
	}
	all := make([]int, len(snap.refs))
	for i := range all {
		all[i] = i
	}
	blks, err := s.load(ctx, snap, all)
	if err != nil {
		return nil, err
	}
	c := &Snapshot{NID: snap.NID, RoomNID: snap.RoomNID, refs: slices.Clone(snap.refs)}
	for i := range c.refs {
		c.refs[i].blk = blks[i]
	}
	return c, nil
}

// load returns the blocks at the given indexes of snap, from the snapshot's pins, the
// cache or the database (one query for all misses).
func (s *Store) load(ctx context.Context, snap *Snapshot, idxs []int) (map[int]*Block, error) {
	out := make(map[int]*Block, len(idxs))
	var missing []int64
	for _, i := range idxs {
		ref := &snap.refs[i]
		if ref.blk != nil {
			out[i] = ref.blk
			continue
		}
		if b, ok := s.blocks.Get(ref.NID); ok {
			out[i] = b
			continue
		}
		missing = append(missing, ref.NID)
	}
	if len(missing) == 0 {
		return out, nil
	}
	data, err := roomstore.StateBlocks(ctx, s.db, missing)
	if err != nil {
		return nil, err
	}
	for _, i := range idxs {
		if out[i] != nil {
			continue
		}
		nid := snap.refs[i].NID
		d, ok := data[nid]
		if !ok {
			return nil, fmt.Errorf("state block %d of snapshot %d is missing", nid, snap.NID)
		}
		entries, err := decodeEntries(d)
		if err != nil {
			return nil, fmt.Errorf("state block %d: %w", nid, err)
		}
		b := &Block{NID: nid, Entries: entries}
		s.blocks.Add(nid, b)
		out[i] = b
	}
	return out, nil
}

// Lookup returns the event NID of key in snap.
func (s *Store) Lookup(ctx context.Context, snap *Snapshot, key Key) (int64, bool, error) {
	if len(snap.refs) == 0 {
		return 0, false, nil
	}
	i := snap.blockIndex(key)
	blks, err := s.load(ctx, snap, []int{i})
	if err != nil {
		return 0, false, err
	}
	ev, ok := findEntry(blks[i].Entries, key)
	return ev, ok, nil
}

func findEntry(entries []Entry, key Key) (int64, bool) {
	j := sort.Search(len(entries), func(j int) bool { return entries[j].Key.Compare(key) >= 0 })
	if j < len(entries) && entries[j].Key == key {
		return entries[j].Event, true
	}
	return 0, false
}

// LookupMany returns the event NIDs of the keys present in snap.
func (s *Store) LookupMany(ctx context.Context, snap *Snapshot, keys []Key) (map[Key]int64, error) {
	out := make(map[Key]int64, len(keys))
	if len(snap.refs) == 0 {
		return out, nil
	}
	idxs := make([]int, 0, len(keys))
	for _, k := range keys {
		idxs = append(idxs, snap.blockIndex(k))
	}
	blks, err := s.load(ctx, snap, idxs)
	if err != nil {
		return nil, err
	}
	for n, k := range keys {
		if ev, ok := findEntry(blks[idxs[n]].Entries, k); ok {
			out[k] = ev
		}
	}
	return out, nil
}

// Entries returns every entry of snap, sorted by key.
func (s *Store) Entries(ctx context.Context, snap *Snapshot) ([]Entry, error) {
	all := make([]int, len(snap.refs))
	for i := range all {
		all[i] = i
	}
	return s.entriesOf(ctx, snap, all)
}

func (s *Store) entriesOf(ctx context.Context, snap *Snapshot, idxs []int) ([]Entry, error) {
	blks, err := s.load(ctx, snap, idxs)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, i := range idxs {
		n += len(blks[i].Entries)
	}
	out := make([]Entry, 0, n)
	for _, i := range idxs {
		out = append(out, blks[i].Entries...)
	}
	return out, nil
}

// EntriesOfType returns the entries of one event type, sorted by state key.
func (s *Store) EntriesOfType(ctx context.Context, snap *Snapshot, typeNID int64) ([]Entry, error) {
	if len(snap.refs) == 0 {
		return nil, nil
	}
	lo := snap.blockIndex(Key{Type: typeNID})
	var idxs []int
	for i := lo; i < len(snap.refs) && snap.refs[i].First.Type <= typeNID; i++ {
		idxs = append(idxs, i)
	}
	entries, err := s.entriesOf(ctx, snap, idxs)
	if err != nil {
		return nil, err
	}
	out := entries[:0:0]
	for _, e := range entries {
		if e.Type == typeNID {
			out = append(out, e)
		}
	}
	return out, nil
}

// Diff returns the entries of b that differ from a: changed or added keys with b's
// event, removed keys with Event 0. Blocks shared by both snapshots are skipped.
func (s *Store) Diff(ctx context.Context, a, b *Snapshot) ([]Entry, error) {
	inA := make(map[int64]bool, len(a.refs))
	for _, r := range a.refs {
		inA[r.NID] = true
	}
	inB := make(map[int64]bool, len(b.refs))
	for _, r := range b.refs {
		inB[r.NID] = true
	}
	var aIdx, bIdx []int
	for i, r := range a.refs {
		if !inB[r.NID] {
			aIdx = append(aIdx, i)
		}
	}
	for i, r := range b.refs {
		if !inA[r.NID] {
			bIdx = append(bIdx, i)
		}
	}
	aEntries, err := s.entriesOf(ctx, a, aIdx)
	if err != nil {
		return nil, err
	}
	bEntries, err := s.entriesOf(ctx, b, bIdx)
	if err != nil {
		return nil, err
	}
	old := make(map[Key]int64, len(aEntries))
	for _, e := range aEntries {
		old[e.Key] = e.Event
	}
	var out []Entry
	for _, e := range bEntries {
		if ev, ok := old[e.Key]; !ok || ev != e.Event {
			out = append(out, e)
		}
		delete(old, e.Key)
	}
	for k := range old {
		out = append(out, Entry{Key: k})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Compare(out[j].Key) < 0 })
	return out, nil
}

// normalise sorts changes by key, keeping the last change of each key.
func normalise(changes []Entry) []Entry {
	c := slices.Clone(changes)
	sort.SliceStable(c, func(i, j int) bool { return c[i].Key.Compare(c[j].Key) < 0 })
	out := c[:0]
	for i, e := range c {
		if i+1 < len(c) && c[i+1].Key == e.Key {
			continue
		}
		out = append(out, e)
	}
	return out
}

// merge applies sorted changes to sorted entries.
func merge(entries, changes []Entry) []Entry {
	out := make([]Entry, 0, len(entries)+len(changes))
	i, j := 0, 0
	for i < len(entries) || j < len(changes) {
		switch {
		case j == len(changes) || (i < len(entries) && entries[i].Key.Compare(changes[j].Key) < 0):
			out = append(out, entries[i])
			i++
		case i == len(entries) || entries[i].Key.Compare(changes[j].Key) > 0:
			if changes[j].Event != 0 {
				out = append(out, changes[j])
			}
			j++
		default: // same key
			if changes[j].Event != 0 {
				out = append(out, changes[j])
			}
			i++
			j++
		}
	}
	return out
}

// split cuts entries into blocks of about targetBlock entries when they exceed maxBlock.
func split(entries []Entry) [][]Entry {
	if len(entries) <= maxBlock {
		return [][]Entry{entries}
	}
	n := (len(entries) + targetBlock - 1) / targetBlock
	size := (len(entries) + n - 1) / n
	var out [][]Entry
	for len(entries) > 0 {
		k := min(size, len(entries))
		out = append(out, entries[:k])
		entries = entries[k:]
	}
	return out
}

// Apply writes (through tx) the snapshot of base with changes applied and returns it.
// Only the blocks holding changed keys are rewritten. The result is pinned where base
// was. Call Remember after the transaction commits to cache what was written; until
// then the new snapshot exists only in tx and in the returned value.
func (s *Store) Apply(ctx context.Context, tx storage.Querier, base *Snapshot, roomNID int64, changes []Entry) (*Snapshot, error) {
	changes = normalise(changes)
	out := &Snapshot{RoomNID: roomNID}
	write := func(entries []Entry) error {
		nid, err := roomstore.InsertStateBlock(ctx, tx, encodeEntries(entries))
		if err != nil {
			return err
		}
		b := &Block{NID: nid, Entries: entries}
		out.fresh = append(out.fresh, b)
		out.refs = append(out.refs, BlockRef{First: entries[0].Key, NID: nid, Len: len(entries), blk: b})
		return nil
	}
	if len(base.refs) == 0 {
		entries := merge(nil, changes)
		for len(entries) > 0 {
			k := min(targetBlock, len(entries))
			if err := write(entries[:k:k]); err != nil {
				return nil, err
			}
			entries = entries[k:]
		}
	} else {
		groups := make(map[int][]Entry)
		var idxs []int
		for _, c := range changes {
			i := base.blockIndex(c.Key)
			if _, ok := groups[i]; !ok {
				idxs = append(idxs, i)
			}
			groups[i] = append(groups[i], c)
		}
		blks, err := s.load(ctx, base, idxs)
		if err != nil {
			return nil, err
		}
		for i, ref := range base.refs {
			ch, changed := groups[i]
			if !changed {
				out.refs = append(out.refs, ref)
				continue
			}
			merged := merge(blks[i].Entries, ch)
			if len(merged) == 0 {
				continue
			}
			if slices.Equal(merged, blks[i].Entries) {
				out.refs = append(out.refs, ref)
				continue
			}
			for _, part := range split(merged) {
				if err := write(part); err != nil {
					return nil, err
				}
			}
		}
	}
	nid, err := roomstore.InsertStateSnapshot(ctx, tx, roomNID, encodeRefs(out.refs))
	if err != nil {
		return nil, err
	}
	out.NID = nid
	return out, nil
}

// Remember caches a snapshot written by Apply and its new blocks, once the
// transaction that wrote them has committed.
func (s *Store) Remember(snap *Snapshot) {
	for _, b := range snap.fresh {
		s.blocks.Add(b.NID, b)
	}
	s.snaps.Add(snap.NID, snap.unpinned())
}
