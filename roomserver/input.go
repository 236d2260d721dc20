package roomserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// InputKind says how an input event joins the room.
type InputKind int

const (
	// InputNew is a new event of the room's DAG: its prev events must be known (and
	// not outliers); its state is computed from them. An event stored as an outlier
	// joins the live timeline under its NID, with a new stream position; when the
	// timeline already descends from it (the state of a join) it changes neither the
	// forward extremities nor the current state.
	InputNew InputKind = iota
	// InputOutlier is an event known out of context (auth chains, state of a join):
	// only checked against its own auth events, no state, not in the timeline.
	InputOutlier
	// InputBackfill is an older event of the room's history, fetched by backfill: it
	// joins the DAG and the timeline with its own state (from its prev events, or
	// StateBefore) but is older than the room's head: it is not checked against the
	// current state, does not change the forward extremities or the current state,
	// and is not published as new (its stream position is negative: /sync never
	// returns it, /messages does, by depth). An event stored as an outlier (state of a
	// join) is promoted into the timeline under its NID.
	InputBackfill
)

// InputEvent is an event from elsewhere (federation), already verified by the caller:
// well-formed for its room version, signatures and content hash checked (an event
// whose content hash fails must be given redacted).
type InputEvent struct {
	Kind  InputKind
	Event gomatrixserverlib.PDU
	// StateBefore, for InputNew and InputBackfill, is the state before the event as
	// event IDs, all stored already (as outliers or not): given when its prev events
	// are not all known (a gap in a federation /send, the oldest event of a backfill),
	// in place of the state computed from the prev events. Rejected events in it are
	// left out.
	StateBefore []string
	// PrevStates, for InputNew and InputBackfill when StateBefore is nil, is the state
	// after each prev event as event IDs (stored already), when some prev events are
	// not known here: the state before the event is their resolution.
	PrevStates [][]string
}

// InputResult is the outcome for one input event.
type InputResult struct {
	EventID string
	// Event is the stored event (nil when Err is set).
	Event *Event
	// AlreadyKnown: the event was stored before; nothing changed.
	AlreadyKnown bool
	Rejected     bool
	SoftFailed   bool
	// Err is set when the event could not be processed (missing prev or auth events,
	// unknown room); nothing was stored for it.
	Err error
}

// InputEvents persists events received from elsewhere, in the given order (give
// prev and auth events before the events that refer to them). For each new event it
// computes the state before it (resolving the states of its prev events when there are
// several), checks it against its auth events and against that state (failing either
// stores it as rejected), checks it against the room's current state (failing stores
// it soft-failed: kept in the DAG, hidden from clients, not a forward extremity), then
// updates the forward extremities and the current state (resolving forks).
//
// The returned error is for failures of the roomserver itself; per-event problems are
// in the results.
func (rs *Roomserver) InputEvents(ctx context.Context, events []InputEvent) ([]InputResult, error) {
	out := make([]InputResult, len(events))
	for i, in := range events {
		res, err := rs.inputEvent(ctx, in)
		if err != nil {
			return out[:i], err
		}
		out[i] = res
	}
	return out, nil
}

func (rs *Roomserver) inputEvent(ctx context.Context, in InputEvent) (InputResult, error) {
	pdu := in.Event
	_ = pdu.EventID()
	res := InputResult{EventID: pdu.EventID()}
	roomID := pdu.RoomID().String()
	isCreate := pdu.Type() == spec.MRoomCreate && pdu.StateKeyEquals("")

	r, err := rs.room(ctx, roomID)
	newRoom := false
	if err != nil {
		if me, ok := err.(spec.MatrixError); !ok || me.ErrCode != spec.ErrorNotFound {
			return res, err
		}
		if !isCreate {
			res.Err = err
			return res, nil
		}
		verImpl, verr := gomatrixserverlib.GetRoomVersion(pdu.Version())
		if verr != nil {
			res.Err = spec.UnsupportedRoomVersion(verr.Error())
			return res, nil
		}
		r = &room{id: roomID, version: verImpl.Version(), verImpl: verImpl}
		newRoom = true
	}
	if pdu.Version() != r.version {
		res.Err = spec.BadJSON(fmt.Sprintf("event of room version %s in a room of version %s", pdu.Version(), r.version))
		return res, nil
	}
	unlock, err := rs.locker.Lock(ctx, roomID)
	if err != nil {
		return res, err
	}
	defer unlock()
	if !newRoom {
		if err := rs.refreshHead(ctx, r); err != nil {
			return res, err
		}
	}

	var promoteNID int64
	if known, err := rs.eventByID(ctx, pdu.EventID()); err != nil {
		return res, err
	} else if known != nil {
		if !known.Outlier || in.Kind == InputOutlier {
			res.AlreadyKnown, res.Event, res.Rejected, res.SoftFailed = true, known, known.Rejected, known.SoftFailed
			return res, nil
		}
		if known.RoomNID != r.nid {
			res.Err = fmt.Errorf("event %s is stored for another room", pdu.EventID())
			return res, nil
		}
		if h := r.head.Load(); h == nil || h.create == nil {
			// A stub room (memberships of local users received out of band, no state
			// of its own): nothing to check the event against; it stays as it is.
			res.Err = fmt.Errorf("event %s is stored out of band for a room this server is not in", pdu.EventID())
			return res, nil
		}
		// An event stored as an outlier (state of a join, a fetched auth event) that
		// comes again as a timeline event takes its place in the DAG under its NID:
		// in history (backfill), or in the live timeline with a new stream position.
		promoteNID = known.NID
	}

	if isCreate && !newRoom && promoteNID == 0 {
		res.Err = spec.Forbidden(fmt.Sprintf("room %s already has a create event", roomID))
		return res, nil
	}
	ne := &newEvent{pdu: pdu, outlier: in.Kind == InputOutlier, backfill: in.Kind == InputBackfill, promoteNID: promoteNID}
	if newRoom && in.Kind == InputBackfill {
		res.Err = fmt.Errorf("room %s is not known: nothing to backfill", roomID)
		return res, nil
	}
	if pdu.StateKey() != nil {
		k, _, err := rs.stateKey(ctx, pdu.Type(), *pdu.StateKey(), true)
		if err != nil {
			return res, err
		}
		ne.key, ne.hasKey = k, true
	}

	// 1. Against its own auth events.
	authIDs := pdu.AuthEventIDs()
	authEvs, err := rs.eventsByID(ctx, authIDs)
	if err != nil {
		return res, err
	}
	var authPDUs []gomatrixserverlib.PDU
	for _, id := range authIDs {
		ev := authEvs[id]
		if ev == nil {
			if in.Kind == InputOutlier {
				// An outlier is only ever checked against its auth events: without them
				// it is dropped (and may come again with them).
				res.Err = fmt.Errorf("auth event %s of %s is not known", id, pdu.EventID())
				return res, nil
			}
			// The caller fetched what it could: an event whose auth events cannot be
			// had cannot pass the auth rules, and is rejected (spec: checks on receipt).
			ne.rejected = true
			continue
		}
		if ev.Rejected || ev.RoomNID != r.nid || newRoom {
			ne.rejected = true
		}
		authPDUs = append(authPDUs, ev.PDU)
	}
	if !ne.rejected && !authSelectionOK(pdu, authPDUs) {
		ne.rejected = true
	}
	if !ne.rejected {
		provider, err := gomatrixserverlib.NewAuthEvents(authPDUs)
		if err != nil || gomatrixserverlib.Allowed(pdu, provider, userIDForSender) != nil {
			ne.rejected = true
		}
	}

	w := &roomWrite{r: r, newRoom: newRoom, events: []*newEvent{ne}, headFrom: -1}
	head := r.head.Load()
	if !newRoom {
		w.oldHead = head
	}
	if ne.outlier {
		if newRoom {
			res.Err = fmt.Errorf("room %s is not known: its create event cannot be an outlier", roomID)
			return res, nil
		}
		return rs.finishInput(w, ne, res)
	}

	// 2. The state before the event, from its prev events (or as given).
	prevIDs := pdu.PrevEventIDs()
	var beforeEntries []state.Entry
	if in.StateBefore != nil || len(in.PrevStates) > 0 {
		sets := in.PrevStates
		if in.StateBefore != nil {
			sets = [][]string{in.StateBefore}
		}
		var entrySets [][]state.Entry
		for _, ids := range sets {
			entries, unknown, err := rs.entriesOfIDs(ctx, r, ids)
			if err != nil {
				return res, err
			}
			if unknown != "" {
				res.Err = fmt.Errorf("state event %s before %s is not known", unknown, pdu.EventID())
				return res, nil
			}
			entrySets = append(entrySets, entries)
		}
		entries := entrySets[0]
		if len(entrySets) > 1 {
			if entries, err = rs.resolveStates(ctx, r, entrySets, nil); err != nil {
				return res, err
			}
		}
		ne.base, ne.changes, beforeEntries = state.Empty, entries, entries
	} else {
		prevEvs, err := rs.eventsByID(ctx, prevIDs)
		if err != nil {
			return res, err
		}
		var prevStates [][]state.Entry
		var base *state.Snapshot
		for _, id := range prevIDs {
			p := prevEvs[id]
			if p == nil || p.Outlier || p.RoomNID != r.nid {
				res.Err = fmt.Errorf("prev event %s of %s is not known", id, pdu.EventID())
				return res, nil
			}
			snap, err := rs.states.Snapshot(ctx, p.stateAfter)
			if err != nil {
				return res, err
			}
			if base == nil {
				base = snap
			}
			if len(prevIDs) > 1 {
				entries, err := rs.states.Entries(ctx, snap)
				if err != nil {
					return res, err
				}
				prevStates = append(prevStates, entries)
			}
		}
		if base == nil {
			base = state.Empty
			if !isCreate {
				res.Err = fmt.Errorf("event %s has no prev events", pdu.EventID())
				return res, nil
			}
		}
		ne.base = base
		if len(prevStates) > 1 {
			resolved, err := rs.resolveStates(ctx, r, prevStates, nil)
			if err != nil {
				return res, err
			}
			ne.changes = entriesDiff(prevStates[0], resolved)
			beforeEntries = resolved
		}
	}

	// 3. Against the state before it.
	if !ne.rejected {
		ok, err := rs.allowedAt(ctx, pdu, ne.base, beforeEntries)
		if err != nil {
			return res, err
		}
		ne.rejected = !ok
	}

	// A promoted outlier that our timeline already descends from (the state of a join
	// is before the join) is history: no soft failure, no forward extremity, the
	// current state stays; it still gets a stream position and reaches /sync.
	past := false
	if promoteNID != 0 && !ne.backfill {
		if past, err = rs.behindHead(ctx, r, head, pdu); err != nil {
			return res, err
		}
	}

	// 4. Against the current state (soft failure); history is not.
	if !ne.rejected && !newRoom && !ne.backfill && !past {
		ok, err := rs.allowedAt(ctx, pdu, head.state, nil)
		if err != nil {
			return res, err
		}
		ne.softFailed = !ok
	}

	if !ne.rejected {
		if err := rs.inputRedactions(ctx, r, ne, ne.base, beforeEntries); err != nil {
			return res, err
		}
	}

	// 5. Forward extremities and current state.
	if ne.rejected || ne.softFailed || ne.backfill || past {
		return rs.finishInput(w, ne, res)
	}
	w.moveHead = true
	if newRoom {
		w.headFrom = 0
		w.exts = []extRef{{idx: 0}}
		return rs.finishInput(w, ne, res)
	}
	w.exts = remainingExtremities(head.extremities, prevIDs)
	w.exts = append(w.exts, extRef{idx: 0})
	if len(w.exts) == 1 {
		w.headFrom = 0
		return rs.finishInput(w, ne, res)
	}
	// A fork stays open: the current state is the resolution of every extremity's state.
	if err := rs.resolveHead(ctx, w, ne, ne.base, beforeEntries); err != nil {
		return res, err
	}
	return rs.finishInput(w, ne, res)
}

// maxPastWalk bounds the events behindHead reads.
const maxPastWalk = 1000

// behindHead reports whether pdu is an ancestor of the room's forward extremities:
// it walks back from them through prev events, over stored events deeper than pdu
// (a descendant is deeper than its ancestors). When that cannot be known, pdu counts
// as behind the head: more than maxPastWalk events to read, or a prev event not stored
// here (a gap, such as the events before our join) on the way. An outlier was part of
// a state we accepted already; as history it changes nothing until an event on top of
// it arrives, where as a forward extremity an old event would be checked against the
// current state and kept as a fork for ever.
func (rs *Roomserver) behindHead(ctx context.Context, r *room, head *roomHead, pdu gomatrixserverlib.PDU) (bool, error) {
	target, depth := pdu.EventID(), pdu.Depth()
	seen := map[string]bool{}
	var front []string
	for _, x := range head.extremities {
		seen[x.ID] = true
		front = append(front, x.ID)
	}
	for read := 0; len(front) > 0; read += len(front) {
		if read > maxPastWalk {
			return true, nil
		}
		evs, err := rs.eventsByID(ctx, front)
		if err != nil {
			return false, fmt.Errorf("walk back to %s: %w", target, err)
		}
		var next []string
		for _, id := range front {
			ev := evs[id]
			if ev == nil {
				return true, nil
			}
			if ev.RoomNID != r.nid || ev.Depth() <= depth {
				continue
			}
			for _, p := range ev.PrevEventIDs() {
				if p == target {
					return true, nil
				}
				if !seen[p] {
					seen[p] = true
					next = append(next, p)
				}
			}
		}
		front = next
	}
	return false, nil
}

// authSelectionOK checks the auth events of an event as the spec requires on receipt:
// no two for the same (type, state key), and none that the auth events selection
// algorithm would not pick (gomatrixserverlib's Allowed does not check this).
func authSelectionOK(pdu gomatrixserverlib.PDU, auth []gomatrixserverlib.PDU) bool {
	needed := map[gomatrixserverlib.StateKeyTuple]bool{}
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu}).Tuples() {
		needed[t] = true
	}
	seen := map[gomatrixserverlib.StateKeyTuple]bool{}
	for _, a := range auth {
		if a.StateKey() == nil {
			return false
		}
		t := gomatrixserverlib.StateKeyTuple{EventType: a.Type(), StateKey: *a.StateKey()}
		if seen[t] || !needed[t] {
			return false
		}
		seen[t] = true
	}
	return true
}

// resolveHead sets the new head state of a write whose extremities are several: the
// state resolution of the states after each extremity (the new event's from memory).
func (rs *Roomserver) resolveHead(ctx context.Context, w *roomWrite, ne *newEvent, base *state.Snapshot, beforeEntries []state.Entry) error {
	const pendingNID = -1 // stands for events[0] of the write, whose NID is allocated at commit
	after := beforeEntries
	if after == nil {
		var err error
		if after, err = rs.states.Entries(ctx, base); err != nil {
			return err
		}
	}
	if ne.hasKey {
		after = withEntry(after, state.Entry{Key: ne.key, Event: pendingNID})
	}
	sets := [][]state.Entry{after}
	for _, x := range w.exts {
		if x.idx >= 0 {
			continue
		}
		ev, err := rs.eventByNID(ctx, x.ext.NID)
		if err != nil {
			return err
		}
		if ev == nil {
			return fmt.Errorf("extremity %s is missing", x.ext.ID)
		}
		snap, err := rs.states.Snapshot(ctx, ev.stateAfter)
		if err != nil {
			return err
		}
		entries, err := rs.states.Entries(ctx, snap)
		if err != nil {
			return err
		}
		sets = append(sets, entries)
	}
	extra := map[int64]*Event{pendingNID: {PDU: ne.pdu, NID: pendingNID, Rejected: false}}
	resolved, err := rs.resolveStates(ctx, w.r, sets, extra)
	if err != nil {
		return err
	}
	headEntries, err := rs.states.Entries(ctx, w.oldHead.state)
	if err != nil {
		return err
	}
	w.headBase = w.oldHead.state
	// The new event's entry (pendingNID) gets its real NID in the transaction.
	w.headChanges = entriesDiff(headEntries, resolved)
	return nil
}

// allowedAt checks pdu against a state: snap, or entries when non-nil.
func (rs *Roomserver) allowedAt(ctx context.Context, pdu gomatrixserverlib.PDU, snap *state.Snapshot, entries []state.Entry) (bool, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu})
	var provider *gomatrixserverlib.AuthEvents
	var err error
	if entries == nil {
		provider, err = rs.authEventsFor(ctx, snap, needed.Tuples())
	} else {
		provider, err = rs.authEventsFromEntries(ctx, entries, needed.Tuples())
	}
	if err != nil {
		return false, err
	}
	return gomatrixserverlib.Allowed(pdu, provider, userIDForSender) == nil, nil
}

// authEventsFromEntries is authEventsFor over a state given as entries.
func (rs *Roomserver) authEventsFromEntries(ctx context.Context, entries []state.Entry, tuples []gomatrixserverlib.StateKeyTuple) (*gomatrixserverlib.AuthEvents, error) {
	ts := make([]tuple, len(tuples))
	for i, t := range tuples {
		ts[i] = tuple{t.EventType, t.StateKey}
	}
	keys, err := rs.stateKeys(ctx, ts, false)
	if err != nil {
		return nil, err
	}
	var nids []int64
	for _, k := range keys {
		for _, e := range entries {
			if e.Key == k {
				nids = append(nids, e.Event)
			}
		}
	}
	evs, err := rs.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	var pdus []gomatrixserverlib.PDU
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// inputRedactions handles redactions for an accepted input event: a redaction is
// applied to its target when the target is known and the redaction allowed (same
// server as the target's sender, or enough power); otherwise it waits for the target.
// A pending redaction of this event is applied on insert.
func (rs *Roomserver) inputRedactions(ctx context.Context, r *room, ne *newEvent, base *state.Snapshot, entries []state.Entry) error {
	pdu := ne.pdu
	if pdu.Type() == spec.MRoomRedaction {
		targetID := redactsOf(pdu)
		target, err := rs.eventByID(ctx, targetID)
		if err != nil {
			return err
		}
		switch {
		case targetID == "":
		case target == nil || target.Outlier || target.Rejected:
			ne.pendingTarget = targetID
		case target.RoomNID == r.nid:
			ok, err := rs.redactionAllowed(ctx, r, pdu, target.PDU, base, entries)
			if err != nil {
				return err
			}
			if ok {
				ne.redactTarget = target
			}
		}
	}
	pending, err := roomstore.PendingRedactionsOf(ctx, rs.db, pdu.EventID())
	if err != nil {
		return err
	}
	for _, id := range pending {
		red, err := rs.eventByID(ctx, id)
		if err != nil {
			return err
		}
		if red == nil || red.RoomNID != r.nid || red.Rejected {
			continue
		}
		snap, err := rs.states.Snapshot(ctx, red.stateBefore)
		if err != nil {
			return err
		}
		ok, err := rs.redactionAllowed(ctx, r, red.PDU, pdu, snap, nil)
		if err != nil {
			return err
		}
		if ok {
			ne.redactedBy = id
			break
		}
	}
	return nil
}

// redactionAllowed is the spec's condition for applying a redaction (room versions 3
// and later check it when applying): same server as the target's sender, or the
// redaction's sender has the redact power level in the state before the redaction.
func (rs *Roomserver) redactionAllowed(ctx context.Context, r *room, redaction, target gomatrixserverlib.PDU, snap *state.Snapshot, entries []state.Entry) (bool, error) {
	rs1, err1 := spec.NewUserID(string(redaction.SenderID()), true)
	ts, err2 := spec.NewUserID(string(target.SenderID()), true)
	if err1 == nil && err2 == nil && rs1.Domain() == ts.Domain() {
		return true, nil
	}
	tuples := []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomPowerLevels}, {EventType: spec.MRoomCreate}}
	var provider *gomatrixserverlib.AuthEvents
	var err error
	if entries == nil {
		provider, err = rs.authEventsFor(ctx, snap, tuples)
	} else {
		provider, err = rs.authEventsFromEntries(ctx, entries, tuples)
	}
	if err != nil {
		return false, err
	}
	create, _ := provider.Create()
	creator := ""
	if create != nil {
		creator = string(create.SenderID())
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(provider, creator)
	if err != nil {
		return false, nil
	}
	level := pl.UserLevel(redaction.SenderID())
	if create != nil && r.verImpl.PrivilegedCreators() && slices.Contains(gomatrixserverlib.CreatorsFromCreateEvent(create), string(redaction.SenderID())) {
		level = gomatrixserverlib.CreatorPowerLevel
	}
	return level >= pl.Redact, nil
}

func (rs *Roomserver) finishInput(w *roomWrite, ne *newEvent, res InputResult) (InputResult, error) {
	if err := rs.commit(w); err != nil {
		return res, err
	}
	res.Event, res.Rejected, res.SoftFailed = ne.ev, ne.rejected, ne.softFailed
	return res, nil
}

// entriesOfIDs builds state entries from stored events given by ID; unknown is the
// first ID that is not a stored state event of the room. Rejected events are skipped.
func (rs *Roomserver) entriesOfIDs(ctx context.Context, r *room, ids []string) (entries []state.Entry, unknown string, err error) {
	evs, err := rs.eventsByID(ctx, ids)
	if err != nil {
		return nil, "", err
	}
	out := make([]state.Entry, 0, len(ids))
	for _, id := range ids {
		ev := evs[id]
		if ev == nil || ev.RoomNID != r.nid || ev.StateKey() == nil {
			return nil, id, nil
		}
		if ev.Rejected {
			continue
		}
		out = append(out, state.Entry{Key: state.Key{Type: ev.typeNID, StateKey: ev.keyNID}, Event: ev.NID})
	}
	return out, "", nil
}
