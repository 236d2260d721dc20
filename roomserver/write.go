package roomserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// newEvent is an event checked and ready to be persisted by a roomWrite.
type newEvent struct {
	pdu      gomatrixserverlib.PDU
	outlier  bool
	backfill bool // history: negative stream position, not published
	// promoteNID is the NID of the outlier row this event turns into a timeline event
	// (0 for a new row); a live one gets the position allocated for it as its stream
	// position, as NIDs are stream positions for new rows.
	promoteNID int64
	rejected   bool
	softFailed bool
	// key is the state key of state events (hasKey false for non-state events).
	key    state.Key
	hasKey bool
	// The state before the event: the state after the previous event of the same
	// write (chain), or base with changes applied (changes are written in the
	// transaction; empty changes mean base itself). Unused for outliers.
	chain         bool
	base          *state.Snapshot
	changes       []state.Entry
	txnID         string
	deviceID      string
	txnScope      string // record txnID in this scope with the event (idempotent send)
	redactTarget  *Event // a known target this (accepted) redaction applies to
	pendingTarget string // an unknown target to remember the redaction for
	redactedBy    string // a pending redaction that applies to this event on insert

	// Set in the transaction.
	ev            *Event
	before, after *state.Snapshot
}

// extRef is a forward extremity of the new head: an existing one, or an event of the
// write (index into roomWrite.events).
type extRef struct {
	ext extremity
	idx int // -1 for an existing extremity
}

// roomWrite is the persistence of a batch of events of one room, made while the room's
// lock is held.
type roomWrite struct {
	r       *room
	newRoom bool // insert the rooms row (the create event is in events)
	oldHead *roomHead
	events  []*newEvent
	// moveHead: the head becomes headFrom's state after (headFrom >= 0) or headBase
	// with headChanges, with extremities exts.
	moveHead    bool
	headFrom    int
	headBase    *state.Snapshot
	headChanges []state.Entry
	exts        []extRef

	// Results of the transaction, installed by after.
	newHead   *roomHead
	snapshots []*state.Snapshot
	redacted  []*Event
	roomNID   int64
}

// commit persists w through the group committer and installs the results.
func (rs *Roomserver) commit(w *roomWrite) error {
	job := &commitJob{}
	job.run = func(ctx context.Context, tw *txWriter) error {
		outs, err := rs.runWrite(ctx, tw, w)
		if err != nil {
			return err
		}
		job.outputs = outs
		return nil
	}
	job.after = func() { rs.installWrite(w) }
	return rs.committer.do(job)
}

// runWrite writes w in the transaction and returns its outputs. It may run twice.
func (rs *Roomserver) runWrite(ctx context.Context, tw *txWriter, w *roomWrite) ([]OutputEvent, error) {
	q := tw.q
	w.snapshots = nil
	w.redacted = nil
	w.newHead = nil
	w.roomNID = w.r.nid
	if w.newRoom {
		nid, err := roomstore.InsertRoom(ctx, q, w.r.id, string(w.r.version), storage.NowMS())
		if err != nil {
			if err == storage.ErrExists {
				return nil, spec.RoomInUse("Room ID already exists")
			}
			return nil, err
		}
		w.roomNID = nid
	}
	nids, err := tw.alloc(ctx, len(w.events))
	if err != nil {
		return nil, err
	}
	byNID := make(map[int64]*Event, len(w.events))
	prevAfter := state.Empty
	if w.oldHead != nil {
		prevAfter = w.oldHead.state
	}
	var lastNID int64
	var txns []storage.TxnRecord
	var txnIdx []int // index in w.events of each of txns
	for i, ne := range w.events {
		pdu := ne.pdu
		nid := nids[i]
		if ne.promoteNID != 0 {
			nid = ne.promoteNID
		}
		ev := &Event{
			PDU:        pdu,
			NID:        nid,
			RoomNID:    w.roomNID,
			Outlier:    ne.outlier,
			Rejected:   ne.rejected,
			SoftFailed: ne.softFailed,
			RedactedBy: ne.redactedBy,
			TxnID:      ne.txnID,
			DeviceID:   ne.deviceID,
			Membership: membershipOf(pdu),
			typeNID:    ne.key.Type,
			keyNID:     ne.key.StateKey,
		}
		if !ne.outlier && !ne.rejected && !ne.softFailed {
			ev.StreamPos = nids[i]
			if ne.backfill {
				ev.StreamPos = -ev.NID
			}
		}
		ev.RelType, ev.RelatesTo = relation(pdu.Content())
		if ne.redactedBy != "" {
			// Stored with the redaction applied: serve it stripped from the start.
			c := pdu.JSON()
			p, err := w.r.verImpl.NewEventFromTrustedJSONWithEventID(pdu.EventID(), c, false)
			if err != nil {
				return nil, err
			}
			p.Redact()
			_ = p.EventID()
			ev.PDU = p
			ev.RelType, ev.RelatesTo = "", ""
		}
		if !ne.outlier {
			before := prevAfter
			if !ne.chain {
				before = ne.base
				if len(ne.changes) > 0 {
					if before, err = rs.states.Apply(ctx, q, ne.base, w.roomNID, ne.changes); err != nil {
						return nil, err
					}
					w.snapshots = append(w.snapshots, before)
				}
			}
			after := before
			if ne.hasKey {
				if old, ok, err := rs.states.Lookup(ctx, before, ne.key); err != nil {
					return nil, err
				} else if ok {
					if e := byNID[old]; e != nil {
						ev.ReplacesState = e.EventID()
					} else if e, err := rs.eventByNID(ctx, old); err != nil {
						return nil, err
					} else if e != nil {
						ev.ReplacesState = e.EventID()
					}
				}
				if !ne.rejected {
					if after, err = rs.states.Apply(ctx, q, before, w.roomNID, []state.Entry{{Key: ne.key, Event: ev.NID}}); err != nil {
						return nil, err
					}
					w.snapshots = append(w.snapshots, after)
				}
			}
			ev.stateBefore, ev.stateAfter = before.NID, after.NID
			ne.before, ne.after = before, after
			prevAfter = after
		}
		row := &roomstore.Event{
			NID:            ev.NID,
			EventID:        pdu.EventID(),
			RoomNID:        w.roomNID,
			StreamPos:      ev.StreamPos,
			Depth:          pdu.Depth(),
			Type:           pdu.Type(),
			StateKey:       pdu.StateKey(),
			TypeNID:        ne.key.Type,
			StateKeyNID:    ne.key.StateKey,
			Sender:         string(pdu.SenderID()),
			OriginServerTS: int64(pdu.OriginServerTS()),
			Membership:     ev.Membership,
			StateBefore:    ev.stateBefore,
			StateAfter:     ev.stateAfter,
			ReplacesID:     ev.ReplacesState,
			Outlier:        ne.outlier,
			Rejected:       ne.rejected,
			SoftFailed:     ne.softFailed,
			RedactedBy:     ne.redactedBy,
			RelType:        ev.RelType,
			RelatesTo:      ev.RelatesTo,
			TxnID:          ne.txnID,
			DeviceID:       ne.deviceID,
			JSON:           pdu.JSON(),
		}
		if ne.promoteNID != 0 {
			if err := roomstore.PromoteOutlier(ctx, q, row); err != nil {
				return nil, err
			}
		} else {
			tw.addEvent(row)
		}
		if ne.txnScope != "" && ne.txnID != "" {
			txns = append(txns, storage.TxnRecord{UserID: row.Sender, DeviceID: ne.deviceID, Scope: ne.txnScope,
				TxnID: ne.txnID, Response: sendResponse(row.EventID)})
			txnIdx = append(txnIdx, i)
		}
		if ne.redactedBy != "" {
			if err := roomstore.DeletePendingRedaction(ctx, q, ne.redactedBy); err != nil {
				return nil, err
			}
		}
		if !ne.rejected && !ne.outlier {
			if t := ne.redactTarget; t != nil {
				if err := roomstore.SetRedactedBy(ctx, q, t.NID, ev.EventID()); err != nil {
					return nil, err
				}
				w.redacted = append(w.redacted, t)
			} else if ne.pendingTarget != "" {
				if err := roomstore.InsertPendingRedaction(ctx, q, ev.EventID(), ne.pendingTarget, w.roomNID); err != nil {
					return nil, err
				}
			}
		}
		ne.ev = ev
		byNID[ev.NID] = ev
		// The head's version (rooms.last_event_nid) must change with every write that
		// moves it: a promoted event's old NID would not, its new position does.
		lastNID = nids[i]
	}

	// The transaction IDs of the write in one go (one statement on PostgreSQL).
	if len(txns) > 0 {
		conflicts, err := storage.InsertTransactionResponses(ctx, q, txns)
		if err != nil {
			return nil, err
		}
		if len(conflicts) > 0 {
			return nil, &txnReplayError{idx: txnIdx[conflicts[0]]}
		}
	}

	var outs []OutputEvent
	for _, ne := range w.events {
		if ne.ev.StreamPos > 0 {
			outs = append(outs, OutputEvent{Event: ne.ev, StreamPos: ne.ev.StreamPos})
		}
	}
	if !w.moveHead {
		return outs, nil
	}

	// The new head.
	var headState *state.Snapshot
	if w.headFrom >= 0 {
		headState = w.events[w.headFrom].after
	} else {
		headState = w.headBase
		if len(w.headChanges) > 0 {
			changes := slices.Clone(w.headChanges)
			for i, c := range changes {
				if c.Event < 0 {
					// -1 stands for events[0], -2 for events[1]...: NIDs allocated above.
					changes[i].Event = w.events[-c.Event-1].ev.NID
				}
			}
			if headState, err = rs.states.Apply(ctx, q, w.headBase, w.roomNID, changes); err != nil {
				return nil, err
			}
			w.snapshots = append(w.snapshots, headState)
		}
	}
	if headState, err = rs.states.Pin(ctx, headState); err != nil {
		return nil, err
	}
	head := &roomHead{state: headState, lastEventNID: lastNID}
	for _, x := range w.exts {
		if x.idx >= 0 {
			ev := w.events[x.idx].ev
			head.extremities = append(head.extremities, extremity{NID: ev.NID, ID: ev.EventID(), Depth: ev.Depth()})
		} else {
			head.extremities = append(head.extremities, x.ext)
		}
	}
	oldState := state.Empty
	if w.oldHead != nil {
		oldState = w.oldHead.state
		head.create = w.oldHead.create
	}
	extNIDs := make([]int64, len(head.extremities))
	for i, x := range head.extremities {
		extNIDs[i] = x.NID
	}
	tw.setHead(roomstore.RoomHead{RoomNID: w.roomNID, SnapshotNID: headState.NID, Extremities: extNIDs, LastEventNID: lastNID})

	// The current state table follows the head.
	diff, err := rs.states.Diff(ctx, oldState, headState)
	if err != nil {
		return nil, err
	}
	adds, removes, err := rs.applyCurrentStateDiff(ctx, q, w, diff, oldState, byNID)
	if err != nil {
		return nil, err
	}
	if head.create == nil {
		for _, ne := range w.events {
			if ne.pdu.Type() == spec.MRoomCreate && ne.pdu.StateKeyEquals("") && !ne.rejected {
				head.create = ne.ev
			}
		}
	}
	w.newHead = head
	attributeStateChanges(outs, adds, removes)
	return outs, nil
}

// applyCurrentStateDiff writes the changes of the current state to room_current_state
// and returns the event IDs that entered and left it.
func (rs *Roomserver) applyCurrentStateDiff(ctx context.Context, q storage.Querier, w *roomWrite, diff []state.Entry,
	oldState *state.Snapshot, byNID map[int64]*Event) (adds, removes []string, err error) {
	if len(diff) == 0 {
		return nil, nil, nil
	}
	var need []int64
	var oldKeys []state.Key
	for _, d := range diff {
		if d.Event != 0 && byNID[d.Event] == nil {
			need = append(need, d.Event)
		}
		oldKeys = append(oldKeys, d.Key)
	}
	loaded, err := rs.eventsByNID(ctx, need)
	if err != nil {
		return nil, nil, err
	}
	olds, err := rs.states.LookupMany(ctx, oldState, oldKeys)
	if err != nil {
		return nil, nil, err
	}
	var oldNIDs []int64
	for _, nid := range olds {
		if byNID[nid] == nil {
			oldNIDs = append(oldNIDs, nid)
		}
	}
	oldEvents, err := rs.eventsByNID(ctx, oldNIDs)
	if err != nil {
		return nil, nil, err
	}
	var removedKeys []state.Key
	for _, d := range diff {
		if oldNID, ok := olds[d.Key]; ok {
			if e := byNID[oldNID]; e != nil {
				removes = append(removes, e.EventID())
			} else if e := oldEvents[oldNID]; e != nil {
				removes = append(removes, e.EventID())
			}
		}
		if d.Event == 0 {
			removedKeys = append(removedKeys, d.Key)
			continue
		}
		ev := byNID[d.Event]
		if ev == nil {
			ev = loaded[d.Event]
		}
		if ev == nil || ev.StateKey() == nil {
			return nil, nil, fmt.Errorf("current state: event %d is missing", d.Event)
		}
		adds = append(adds, ev.EventID())
		err := roomstore.UpsertCurrentState(ctx, q, roomstore.CurrentStateRow{
			RoomNID: w.roomNID, RoomID: w.r.id, Type: ev.Type(), StateKey: *ev.StateKey(),
			EventNID: ev.NID, EventID: ev.EventID(), Sender: string(ev.SenderID()), Membership: ev.Membership,
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if len(removedKeys) > 0 {
		names, err := rs.tupleNames(ctx, removedKeys)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range removedKeys {
			t := names[k]
			if err := roomstore.DeleteCurrentState(ctx, q, w.roomNID, t.Type, t.StateKey); err != nil {
				return nil, nil, err
			}
		}
	}
	return adds, removes, nil
}

// attributeStateChanges marks the outputs whose events entered the current state;
// changes not caused by one event of the write (state resolution) go to the last one.
func attributeStateChanges(outs []OutputEvent, adds, removes []string) {
	if len(outs) == 0 || (len(adds) == 0 && len(removes) == 0) {
		return
	}
	added := make(map[string]bool, len(adds))
	for _, id := range adds {
		added[id] = true
	}
	removed := make(map[string]bool, len(removes))
	for _, id := range removes {
		removed[id] = true
	}
	for i := range outs {
		ev := outs[i].Event
		if !added[ev.EventID()] {
			continue
		}
		outs[i].StateChanged = true
		outs[i].AddsState = []string{ev.EventID()}
		delete(added, ev.EventID())
		if r := ev.ReplacesState; r != "" && removed[r] {
			outs[i].RemovesState = []string{r}
			delete(removed, r)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	last := &outs[len(outs)-1]
	last.StateChanged = true
	for _, id := range adds {
		if added[id] {
			last.AddsState = append(last.AddsState, id)
		}
	}
	for _, id := range removes {
		if removed[id] {
			last.RemovesState = append(last.RemovesState, id)
		}
	}
}

// installWrite makes the results of a committed write visible: caches and the head.
func (rs *Roomserver) installWrite(w *roomWrite) {
	for _, s := range w.snapshots {
		rs.states.Remember(s)
	}
	if w.newRoom {
		w.r.nid = w.roomNID
		w.r = rs.rooms.add(w.r)
	}
	for _, ne := range w.events {
		rs.cacheEvent(ne.ev)
	}
	for _, t := range w.redacted {
		rs.eventCache.Remove(t.NID)
	}
	if w.newHead != nil {
		w.r.head.Store(w.newHead)
	}
}
