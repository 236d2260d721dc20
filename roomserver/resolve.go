package roomserver

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
)

// resolveStates merges several states of a room into one with the room version's
// state resolution algorithm (v1 for room version 1, v2 or v2.1 otherwise), as
// implemented by gomatrixserverlib. extra holds events the states refer to that are
// not stored yet. The result is sorted by key.
func (rs *Roomserver) resolveStates(ctx context.Context, r *room, sets [][]state.Entry, extra map[int64]*Event) ([]state.Entry, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	same := true
	for _, s := range sets[1:] {
		if !slices.Equal(s, sets[0]) {
			same = false
			break
		}
	}
	if same || len(sets) == 1 {
		return sets[0], nil
	}

	// The events of every state set.
	var need []int64
	for _, s := range sets {
		for _, e := range s {
			if extra[e.Event] == nil {
				need = append(need, e.Event)
			}
		}
	}
	loaded, err := rs.eventsByNID(ctx, need)
	if err != nil {
		return nil, err
	}
	byNID := func(nid int64) *Event {
		if ev := extra[nid]; ev != nil {
			return ev
		}
		return loaded[nid]
	}
	keyOf := make(map[string]state.Key)
	nidOf := make(map[string]int64)
	stateSets := make([][]gomatrixserverlib.PDU, len(sets))
	for i, s := range sets {
		for _, e := range s {
			ev := byNID(e.Event)
			if ev == nil {
				return nil, fmt.Errorf("state resolution: event %d is missing", e.Event)
			}
			stateSets[i] = append(stateSets[i], ev.PDU)
			keyOf[ev.EventID()] = e.Key
			nidOf[ev.EventID()] = e.Event
		}
	}

	// The auth chains of all of them.
	authEvents, rejected, err := rs.authChain(ctx, stateSets, extra)
	if err != nil {
		return nil, err
	}
	resolved, err := ResolveStateSets(r.version, stateSets, authEvents, func(eventID string) bool { return rejected[eventID] })
	if err != nil {
		return nil, err
	}
	out := make([]state.Entry, 0, len(resolved))
	for _, pdu := range resolved {
		k, ok := keyOf[pdu.EventID()]
		if !ok {
			// An event from the auth chain that was not in any state set: find its key.
			ks, err := rs.stateKeys(ctx, []tuple{{pdu.Type(), *pdu.StateKey()}}, true)
			if err != nil {
				return nil, err
			}
			k = ks[tuple{pdu.Type(), *pdu.StateKey()}]
			ev, err := rs.eventByID(ctx, pdu.EventID())
			if err != nil || ev == nil {
				return nil, fmt.Errorf("state resolution: resolved event %s is not stored: %v", pdu.EventID(), err)
			}
			nidOf[pdu.EventID()] = ev.NID
		}
		out = append(out, state.Entry{Key: k, Event: nidOf[pdu.EventID()]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Compare(out[j].Key) < 0 })
	return out, nil
}

// ResolveStateSets runs gomatrixserverlib's state resolution for a room version over
// full state sets, with authEvents holding (at least) their auth chains.
//
// Room versions 1 to 11 use ResolveConflictsNew (state res v1, or v2 with the spec's
// definition of the conflicted set: a key is conflicted unless every set has the same
// event for it). For state res v2.1 (room version 12) the pinned gomatrixserverlib's
// ResolveConflictsNew panics whenever power events conflict (it sorts them before it
// has a create event, as v2.1 starts from an empty state), so v12 rooms are resolved
// with the v2 algorithm (ResolveStateConflictsV2, as Dendrite does) over the same
// conflicted/unconflicted split. Revisit when gomatrixserverlib's v2.1 works.
func ResolveStateSets(version gomatrixserverlib.RoomVersion, stateSets [][]gomatrixserverlib.PDU,
	authEvents []gomatrixserverlib.PDU, isRejected func(eventID string) bool) ([]gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, err
	}
	if verImpl.StateResAlgorithm() != gomatrixserverlib.StateResV2_1 {
		out, err := gomatrixserverlib.ResolveConflictsNew(version, stateSets, authEvents, userIDForSender, isRejected)
		if err != nil {
			return nil, fmt.Errorf("state resolution: %w", err)
		}
		return out, nil
	}
	conflicted, unconflicted := splitConflicted(stateSets)
	out := gomatrixserverlib.ResolveStateConflictsV2(conflicted, unconflicted, authEvents, userIDForSender, isRejected)
	if out == nil {
		return nil, fmt.Errorf("state resolution: no create event among the auth events")
	}
	return out, nil
}

// splitConflicted splits state sets as the spec defines: a (type, state key) is
// unconflicted when every set maps it to the same event, conflicted otherwise (also
// when some sets lack it); every event of a conflicted key is conflicted.
func splitConflicted(sets [][]gomatrixserverlib.PDU) (conflicted, unconflicted []gomatrixserverlib.PDU) {
	byKey := map[gomatrixserverlib.StateKeyTuple]map[string]gomatrixserverlib.PDU{}
	count := map[gomatrixserverlib.StateKeyTuple]int{}
	var keys []gomatrixserverlib.StateKeyTuple
	for _, set := range sets {
		for _, p := range set {
			k := gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}
			if byKey[k] == nil {
				byKey[k] = map[string]gomatrixserverlib.PDU{}
				keys = append(keys, k)
			}
			byKey[k][p.EventID()] = p
			count[k]++
		}
	}
	for _, k := range keys {
		evs := byKey[k]
		if len(evs) == 1 && count[k] == len(sets) {
			for _, p := range evs {
				unconflicted = append(unconflicted, p)
			}
			continue
		}
		ids := make([]string, 0, len(evs))
		for id := range evs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			conflicted = append(conflicted, evs[id])
		}
	}
	return conflicted, unconflicted
}

// authChain returns every event in the auth chains of the given events (known to this
// server), and which of them were rejected.
func (rs *Roomserver) authChain(ctx context.Context, sets [][]gomatrixserverlib.PDU, extra map[int64]*Event) ([]gomatrixserverlib.PDU, map[string]bool, error) {
	seen := map[string]bool{}
	rejected := map[string]bool{}
	var out []gomatrixserverlib.PDU
	var frontier []string
	for _, ev := range extra {
		rejected[ev.EventID()] = ev.Rejected
	}
	for _, s := range sets {
		for _, pdu := range s {
			frontier = append(frontier, pdu.AuthEventIDs()...)
		}
	}
	for len(frontier) > 0 {
		var ids []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		if len(ids) == 0 {
			break
		}
		evs, err := rs.eventsByID(ctx, ids)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			ev := evs[id]
			if ev == nil {
				continue // not known here: resolution works with what we have
			}
			out = append(out, ev.PDU)
			rejected[id] = ev.Rejected
			frontier = append(frontier, ev.AuthEventIDs()...)
		}
	}
	// Events of the state sets are auth events of others too; make sure they are known.
	for _, s := range sets {
		for _, pdu := range s {
			if !seen[pdu.EventID()] {
				seen[pdu.EventID()] = true
				out = append(out, pdu)
			}
		}
	}
	return out, rejected, nil
}

// entriesDiff returns the changes that turn base into target (both sorted).
func entriesDiff(base, target []state.Entry) []state.Entry {
	var out []state.Entry
	i, j := 0, 0
	for i < len(base) || j < len(target) {
		switch {
		case j == len(target) || (i < len(base) && base[i].Key.Compare(target[j].Key) < 0):
			out = append(out, state.Entry{Key: base[i].Key})
			i++
		case i == len(base) || base[i].Key.Compare(target[j].Key) > 0:
			out = append(out, target[j])
			j++
		default:
			if base[i].Event != target[j].Event {
				out = append(out, target[j])
			}
			i++
			j++
		}
	}
	return out
}

// withEntry returns entries (sorted) with e set.
func withEntry(entries []state.Entry, e state.Entry) []state.Entry {
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Key.Compare(e.Key) >= 0 })
	out := make([]state.Entry, 0, len(entries)+1)
	out = append(out, entries[:i]...)
	out = append(out, e)
	if i < len(entries) && entries[i].Key == e.Key {
		i++
	}
	return append(out, entries[i:]...)
}
