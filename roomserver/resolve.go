package roomserver

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

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
// event for it). State res v2.1 (room version 12) is resolveV21.
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
	return resolveV21(stateSets, authEvents, isRejected)
}

// resolveV21 is state resolution v2.1 (MSC4297, room version 12), following the
// spec's algorithm step by step with gomatrixserverlib's event auth rules.
//
// The pinned gomatrixserverlib's own v2.1 (ResolveConflictsNew) cannot be used:
//   - it panics whenever control events conflict: it sorts them by their senders'
//     power, which in room version 12 needs the create event (creators have unlimited
//     power), but v2.1 starts from an empty partial state, so its resolver has no
//     create event yet;
//   - when the partial state lacks a needed event, its iterative auth checks add the
//     event being checked instead of its auth event (authAndApplyEvents), so from an
//     empty partial state every conflicted event fails auth. State res v2 hides this
//     because it starts from the unconflicted state, which has them all.
func resolveV21(stateSets [][]gomatrixserverlib.PDU, authEvents []gomatrixserverlib.PDU,
	isRejected func(eventID string) bool) ([]gomatrixserverlib.PDU, error) {
	conflicted, unconflicted := splitConflicted(stateSets)
	known := make(map[string]gomatrixserverlib.PDU, len(authEvents))
	for _, p := range authEvents {
		known[p.EventID()] = p
	}
	var create gomatrixserverlib.PDU
	for _, list := range [][]gomatrixserverlib.PDU{unconflicted, authEvents} {
		for _, p := range list {
			known[p.EventID()] = p
			if create == nil && p.Type() == spec.MRoomCreate && p.StateKeyEquals("") {
				create = p
			}
		}
	}
	if create == nil {
		return nil, fmt.Errorf("state resolution: no create event among the states and auth events")
	}
	r := &v21Resolver{known: known, create: create, isRejected: isRejected,
		partial: map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}}

	// 1. The full conflicted set, split into the control events (with the events of
	// the set in their auth chains) and the others.
	full := fullConflictedSet(stateSets, conflicted, authEvents)
	inFull := make(map[string]bool, len(full))
	for _, p := range full {
		inFull[p.EventID()] = true
	}
	inControl := map[string]bool{}
	var stack []string
	for _, p := range full {
		if isControlEvent(p) {
			stack = append(stack, p.EventID())
		}
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if inControl[id] || !inFull[id] {
			continue
		}
		inControl[id] = true
		stack = append(stack, known[id].AuthEventIDs()...)
	}
	var control, others []gomatrixserverlib.PDU
	for _, p := range full {
		if inControl[p.EventID()] {
			control = append(control, p)
		} else {
			others = append(others, p)
		}
	}

	// 2. The control events in reverse topological power ordering, checked one by
	// one from an empty partial state (v2.1).
	for _, p := range r.powerOrder(control) {
		r.authAndApply(p)
	}
	// 3. The other events in mainline order of the resolved power levels.
	for _, p := range r.mainlineOrder(others) {
		r.authAndApply(p)
	}
	// 4. The unconflicted state map on top, without further checks.
	for _, p := range unconflicted {
		r.partial[gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}] = p
	}
	out := make([]gomatrixserverlib.PDU, 0, len(r.partial))
	for _, p := range r.partial {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EventID() < out[j].EventID() })
	return out, nil
}

// v21Resolver holds the partial state of a state res v2.1 run.
type v21Resolver struct {
	known      map[string]gomatrixserverlib.PDU
	create     gomatrixserverlib.PDU
	isRejected func(eventID string) bool
	partial    map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
}

// isControlEvent reports whether an event can remove power or access: power levels,
// join rules, and kicks and bans (a leave or ban by someone else).
func isControlEvent(p gomatrixserverlib.PDU) bool {
	switch p.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return p.StateKeyEquals("")
	case spec.MRoomMember:
		if p.StateKey() == nil || p.StateKeyEquals(string(p.SenderID())) {
			return false
		}
		m, err := p.Membership()
		return err == nil && (m == spec.Leave || m == spec.Ban)
	}
	return false
}

// senderPower is the sender's power level by the event's own auth events (creators of
// a room version 12 room have more than any number).
func (r *v21Resolver) senderPower(p gomatrixserverlib.PDU) int64 {
	for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(r.create) {
		if c == string(p.SenderID()) {
			return gomatrixserverlib.CreatorPowerLevel
		}
	}
	for _, id := range p.AuthEventIDs() {
		a := r.known[id]
		if a == nil || a.Type() != spec.MRoomPowerLevels || !a.StateKeyEquals("") {
			continue
		}
		c, err := gomatrixserverlib.NewPowerLevelContentFromEvent(a)
		if err != nil {
			return 0
		}
		return c.UserLevel(p.SenderID())
	}
	return 0
}

// powerOrder is the reverse topological power ordering: the smallest topological
// order of the events by their auth events, preferring higher sender power, then
// earlier origin_server_ts, then smaller event ID.
func (r *v21Resolver) powerOrder(events []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	in := make(map[string]gomatrixserverlib.PDU, len(events))
	for _, p := range events {
		in[p.EventID()] = p
	}
	// waiting[id] counts the auth events of id inside the set not yet ordered;
	// children[id] are the events of the set that list id as an auth event.
	waiting := map[string]int{}
	children := map[string][]string{}
	power := map[string]int64{}
	for _, p := range events {
		power[p.EventID()] = r.senderPower(p)
		seen := map[string]bool{}
		for _, a := range p.AuthEventIDs() {
			if in[a] != nil && !seen[a] {
				seen[a] = true
				waiting[p.EventID()]++
				children[a] = append(children[a], p.EventID())
			}
		}
	}
	less := func(x, y gomatrixserverlib.PDU) bool {
		if px, py := power[x.EventID()], power[y.EventID()]; px != py {
			return px > py
		}
		if x.OriginServerTS() != y.OriginServerTS() {
			return x.OriginServerTS() < y.OriginServerTS()
		}
		return x.EventID() < y.EventID()
	}
	var ready []gomatrixserverlib.PDU
	for _, p := range events {
		if waiting[p.EventID()] == 0 {
			ready = append(ready, p)
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(events))
	for len(ready) > 0 {
		best := 0
		for i := range ready {
			if less(ready[i], ready[best]) {
				best = i
			}
		}
		p := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		out = append(out, p)
		for _, c := range children[p.EventID()] {
			if waiting[c]--; waiting[c] == 0 {
				ready = append(ready, in[c])
			}
		}
	}
	return out
}

// mainlineOrder sorts events by the position of their closest power levels event on
// the mainline of the resolved power levels (nearer the create event first), then
// origin_server_ts, then event ID.
func (r *v21Resolver) mainlineOrder(events []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	plOf := func(p gomatrixserverlib.PDU) gomatrixserverlib.PDU {
		for _, id := range p.AuthEventIDs() {
			if a := r.known[id]; a != nil && a.Type() == spec.MRoomPowerLevels && a.StateKeyEquals("") {
				return a
			}
		}
		return nil
	}
	// depth[id]: distance of a mainline event from the resolved power levels.
	depth := map[string]int{}
	var mainline int
	for p := r.partial[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}]; p != nil && mainline <= len(r.known); p = plOf(p) {
		depth[p.EventID()] = mainline
		mainline++
	}
	// position: 0 for events with no mainline power levels event before them, higher
	// the nearer their closest one is to the resolved power levels.
	position := make(map[string]int, len(events))
	for _, e := range events {
		pos := 0
		for p, steps := e, 0; p != nil && steps <= len(r.known); steps++ {
			if d, ok := depth[p.EventID()]; ok {
				pos = mainline - d
				break
			}
			p = plOf(p)
		}
		position[e.EventID()] = pos
	}
	out := append([]gomatrixserverlib.PDU(nil), events...)
	sort.SliceStable(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if px, py := position[x.EventID()], position[y.EventID()]; px != py {
			return px < py
		}
		if x.OriginServerTS() != y.OriginServerTS() {
			return x.OriginServerTS() < y.OriginServerTS()
		}
		return x.EventID() < y.EventID()
	})
	return out
}

// authAndApply is one step of the iterative auth checks: the event is checked against
// its own (not rejected) auth events overlaid with the partial state, and goes into
// the partial state if allowed.
func (r *v21Resolver) authAndApply(p gomatrixserverlib.PDU) {
	if p.StateKey() == nil {
		return
	}
	provider, _ := gomatrixserverlib.NewAuthEvents(nil)
	_ = provider.AddEvent(r.create) // implied by the room ID in room version 12
	for _, id := range p.AuthEventIDs() {
		if a := r.known[id]; a != nil && a.StateKey() != nil && !r.isRejected(id) {
			_ = provider.AddEvent(a)
		}
	}
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{p})
	for _, k := range needed.Tuples() {
		if s := r.partial[k]; s != nil {
			_ = provider.AddEvent(s)
		}
	}
	if err := gomatrixserverlib.Allowed(p, provider, userIDForSender); err != nil {
		return
	}
	r.partial[gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}] = p
}

// fullConflictedSet is the spec's full conflicted set for state res v2.1: the
// conflicted events, the auth difference (events in the auth chain of some state set
// but not of all) and the conflicted subgraph (events on an auth_events path from one
// conflicted event to another). Events not among authEvents or the states are unknown
// here and left out. The result is in a deterministic order.
func fullConflictedSet(stateSets [][]gomatrixserverlib.PDU, conflicted, authEvents []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	known := make(map[string]gomatrixserverlib.PDU, len(authEvents))
	for _, p := range authEvents {
		known[p.EventID()] = p
	}
	for _, set := range stateSets {
		for _, p := range set {
			known[p.EventID()] = p
		}
	}
	// ancestors returns the auth chain of the given events (not the events themselves).
	ancestors := func(from []gomatrixserverlib.PDU) map[string]bool {
		seen := map[string]bool{}
		var stack []string
		for _, p := range from {
			stack = append(stack, p.AuthEventIDs()...)
		}
		for len(stack) > 0 {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[id] {
				continue
			}
			p, ok := known[id]
			if !ok {
				continue
			}
			seen[id] = true
			stack = append(stack, p.AuthEventIDs()...)
		}
		return seen
	}

	in := map[string]bool{}
	for _, p := range conflicted {
		in[p.EventID()] = true
	}
	// The auth difference.
	count := map[string]int{}
	for _, set := range stateSets {
		for id := range ancestors(set) {
			count[id]++
		}
	}
	for id, n := range count {
		if n < len(stateSets) {
			in[id] = true
		}
	}
	// The conflicted subgraph: ancestors of a conflicted event from which a
	// conflicted event can be reached.
	isConflicted := map[string]bool{}
	for _, p := range conflicted {
		isConflicted[p.EventID()] = true
	}
	reaches := map[string]bool{}
	done := map[string]bool{}
	var reachesConflicted func(id string) bool
	reachesConflicted = func(id string) bool {
		if done[id] {
			return reaches[id]
		}
		done[id] = true // a DAG; guards against malformed cycles too
		p, ok := known[id]
		if !ok {
			return false
		}
		r := false
		for _, a := range p.AuthEventIDs() {
			if isConflicted[a] || reachesConflicted(a) {
				r = true
			}
		}
		reaches[id] = r
		return r
	}
	for id := range ancestors(conflicted) {
		if isConflicted[id] || reachesConflicted(id) {
			in[id] = true
		}
	}

	ids := make([]string, 0, len(in))
	for id := range in {
		if known[id] != nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	for _, id := range ids {
		out = append(out, known[id])
	}
	return out
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
