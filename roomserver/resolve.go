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
	resolved, err := gomatrixserverlib.ResolveConflictsNew(r.version, stateSets, authEvents, userIDForSender,
		func(eventID string) bool { return rejected[eventID] })
	if err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
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
