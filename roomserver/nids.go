package roomserver

import (
	"context"
	"fmt"
	"sync"

	"github.com/myelin-chat/myelin/roomserver/internal/lru"
	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// nidCache maps event types and state keys to NIDs and back. Event types are few and
// kept in maps; state keys (mostly user IDs) go through LRU caches. NIDs are created
// in their own small transactions, so a cached NID is always committed.
type nidCache struct {
	mu        sync.RWMutex
	types     map[string]int64
	typeNames map[int64]string
	keys      *lru.Cache[string, int64]
	keyNames  *lru.Cache[int64, string]
}

func newNIDCache(size int) *nidCache {
	return &nidCache{
		types:     make(map[string]int64),
		typeNames: make(map[int64]string),
		keys:      lru.New[string, int64](size),
		keyNames:  lru.New[int64, string](size),
	}
}

func (c *nidCache) addTypes(m map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, nid := range m {
		c.types[t] = nid
		c.typeNames[nid] = t
	}
}

func (c *nidCache) addKeys(m map[string]int64) {
	for k, nid := range m {
		c.keys.Add(k, nid)
		c.keyNames.Add(nid, k)
	}
}

// tuple is an (event type, state key) pair as strings.
type tuple struct{ Type, StateKey string }

// stateKeys resolves tuples to state keys. With create, missing NIDs are created
// (committed at once); otherwise tuples without NIDs are left out of the result:
// they cannot be in any state.
func (rs *Roomserver) stateKeys(ctx context.Context, tuples []tuple, create bool) (map[tuple]state.Key, error) {
	out := make(map[tuple]state.Key, len(tuples))
	var missingTypes, missingKeys []string
	seenT, seenK := map[string]bool{}, map[string]bool{}
	rs.nids.mu.RLock()
	for _, t := range tuples {
		if _, ok := rs.nids.types[t.Type]; !ok && !seenT[t.Type] {
			seenT[t.Type] = true
			missingTypes = append(missingTypes, t.Type)
		}
	}
	rs.nids.mu.RUnlock()
	for _, t := range tuples {
		if _, ok := rs.nids.keys.Get(t.StateKey); !ok && !seenK[t.StateKey] {
			seenK[t.StateKey] = true
			missingKeys = append(missingKeys, t.StateKey)
		}
	}
	if len(missingTypes) > 0 || len(missingKeys) > 0 {
		if err := rs.loadNIDs(ctx, missingTypes, missingKeys, create); err != nil {
			return nil, err
		}
	}
	rs.nids.mu.RLock()
	defer rs.nids.mu.RUnlock()
	for _, t := range tuples {
		tn, ok := rs.nids.types[t.Type]
		if !ok {
			continue
		}
		kn, ok := rs.nids.keys.Get(t.StateKey)
		if !ok {
			// Evicted since loaded (tiny cache) or unknown: look it up on its own.
			m, err := roomstore.StateKeyNIDs(ctx, rs.db, []string{t.StateKey})
			if err != nil {
				return nil, err
			}
			if kn, ok = m[t.StateKey]; !ok {
				continue
			}
		}
		out[t] = state.Key{Type: tn, StateKey: kn}
	}
	return out, nil
}

func (rs *Roomserver) loadNIDs(ctx context.Context, types, keys []string, create bool) error {
	if create {
		var tm, km map[string]int64
		err := rs.db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			if len(types) > 0 {
				if tm, err = roomstore.EnsureEventTypes(ctx, tx, types); err != nil {
					return err
				}
			}
			if len(keys) > 0 {
				if km, err = roomstore.EnsureStateKeys(ctx, tx, keys); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("create state NIDs: %w", err)
		}
		rs.nids.addTypes(tm)
		rs.nids.addKeys(km)
		return nil
	}
	if len(types) > 0 {
		m, err := roomstore.EventTypeNIDs(ctx, rs.db, types)
		if err != nil {
			return err
		}
		rs.nids.addTypes(m)
	}
	if len(keys) > 0 {
		m, err := roomstore.StateKeyNIDs(ctx, rs.db, keys)
		if err != nil {
			return err
		}
		rs.nids.addKeys(m)
	}
	return nil
}

// stateKey resolves one tuple; ok is false when it cannot be in any state.
func (rs *Roomserver) stateKey(ctx context.Context, eventType, stateKey string, create bool) (state.Key, bool, error) {
	// Both NIDs cached (nearly always): no maps to build, as stateKeys does.
	rs.nids.mu.RLock()
	tn, ok := rs.nids.types[eventType]
	rs.nids.mu.RUnlock()
	if ok {
		if kn, ok := rs.nids.keys.Get(stateKey); ok {
			return state.Key{Type: tn, StateKey: kn}, true, nil
		}
	}
	t := tuple{eventType, stateKey}
	m, err := rs.stateKeys(ctx, []tuple{t}, create)
	if err != nil {
		return state.Key{}, false, err
	}
	k, ok := m[t]
	return k, ok, nil
}

// tupleNames maps state keys back to (type, state key) strings.
func (rs *Roomserver) tupleNames(ctx context.Context, keys []state.Key) (map[state.Key]tuple, error) {
	var missingT, missingK []int64
	rs.nids.mu.RLock()
	for _, k := range keys {
		if _, ok := rs.nids.typeNames[k.Type]; !ok {
			missingT = append(missingT, k.Type)
		}
	}
	rs.nids.mu.RUnlock()
	for _, k := range keys {
		if _, ok := rs.nids.keyNames.Get(k.StateKey); !ok {
			missingK = append(missingK, k.StateKey)
		}
	}
	keyNames := map[int64]string{}
	if len(missingT) > 0 {
		m, err := roomstore.EventTypes(ctx, rs.db, missingT)
		if err != nil {
			return nil, err
		}
		inv := make(map[string]int64, len(m))
		for nid, t := range m {
			inv[t] = nid
		}
		rs.nids.addTypes(inv)
	}
	if len(missingK) > 0 {
		m, err := roomstore.StateKeys(ctx, rs.db, missingK)
		if err != nil {
			return nil, err
		}
		for nid, k := range m {
			keyNames[nid] = k
			rs.nids.keys.Add(k, nid)
			rs.nids.keyNames.Add(nid, k)
		}
	}
	out := make(map[state.Key]tuple, len(keys))
	rs.nids.mu.RLock()
	defer rs.nids.mu.RUnlock()
	for _, k := range keys {
		t, ok := rs.nids.typeNames[k.Type]
		if !ok {
			return nil, fmt.Errorf("unknown event type NID %d", k.Type)
		}
		sk, ok := keyNames[k.StateKey]
		if !ok {
			if sk, ok = rs.nids.keyNames.Get(k.StateKey); !ok {
				return nil, fmt.Errorf("unknown state key NID %d", k.StateKey)
			}
		}
		out[k] = tuple{t, sk}
	}
	return out, nil
}

// typeNID returns the NID of an event type; ok is false when no event has that type.
func (rs *Roomserver) typeNID(ctx context.Context, eventType string) (int64, bool, error) {
	rs.nids.mu.RLock()
	nid, ok := rs.nids.types[eventType]
	rs.nids.mu.RUnlock()
	if ok {
		return nid, true, nil
	}
	if err := rs.loadNIDs(ctx, []string{eventType}, nil, false); err != nil {
		return 0, false, err
	}
	rs.nids.mu.RLock()
	nid, ok = rs.nids.types[eventType]
	rs.nids.mu.RUnlock()
	return nid, ok, nil
}
