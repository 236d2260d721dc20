package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// This file holds what federation needs to take part in membership changes across
// servers: templates for make_join/make_leave/make_knock, local invites of remote users
// built without being stored, rooms imported from a send_join answer, and memberships
// received outside the room's DAG (a remote invite, the rejection of one, a knock).

// ServerInRoom reports whether server has a joined member in the room's current state.
// A room this server does not know gives false and no error.
func (rs *Roomserver) ServerInRoom(ctx context.Context, roomID string, server spec.ServerName) (bool, error) {
	r, err := rs.room(ctx, roomID)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if r.head.Load().create == nil {
		return false, nil
	}
	members, err := roomstore.MembersOfRoom(ctx, rs.db, r.nid, spec.Join, "")
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if u, err := spec.NewUserID(m.StateKey, true); err == nil && u.Domain() == server {
			return true, nil
		}
	}
	return false, nil
}

// JoinedServers returns the servers with a joined member in the room, sorted.
func (rs *Roomserver) JoinedServers(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	members, err := roomstore.MembersOfRoom(ctx, rs.db, r.nid, spec.Join, "")
	if err != nil {
		return nil, err
	}
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for _, m := range members {
		if u, err := spec.NewUserID(m.StateKey, true); err == nil && !seen[u.Domain()] {
			seen[u.Domain()] = true
			out = append(out, u.Domain())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func isNotFound(err error) bool {
	me, ok := err.(spec.MatrixError)
	return ok && me.ErrCode == spec.ErrorNotFound
}

// MemberContent returns the content of a local user's own membership event: their
// profile (for joins) and the extra keys.
func (rs *Roomserver) MemberContent(ctx context.Context, userID, membership string, extra map[string]any) map[string]any {
	return rs.memberContent(ctx, userID, membership, extra)
}

// MembershipTemplate answers make_join, make_leave and make_knock: an unsigned
// m.room.member event of userID (on another server) with the given membership, built
// on the room's forward extremities with its auth events, that passes the auth rules
// against the current state. For a join of a restricted room the user may join through
// an allowed room, join_authorised_via_users_server names the local member who
// authorises it. M_NOT_FOUND when this server has no joined member in the room.
func (rs *Roomserver) MembershipTemplate(ctx context.Context, roomID, userID, membership string) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, "", err
	}
	in, err := rs.ServerInRoom(ctx, roomID, rs.cfg.ServerName)
	if err != nil {
		return nil, "", err
	}
	if !in {
		return nil, "", spec.NotFound(fmt.Sprintf("This server is not in room %s", roomID))
	}
	head := r.head.Load()
	cur, _, err := rs.membershipIn(ctx, head, userID)
	if err != nil {
		return nil, "", err
	}
	content := map[string]any{"membership": membership}
	switch membership {
	case spec.Join:
		if cur != spec.Join && cur != spec.Invite {
			via, err := rs.restrictedJoinAuthoriser(ctx, r, head, userID)
			if err != nil {
				return nil, "", err
			}
			if via != "" {
				content["join_authorised_via_users_server"] = via
			}
		}
	case spec.Leave:
		if err := inRoom("The user is not in the room")(cur); err != nil {
			return nil, "", err
		}
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, "", err
	}
	sk := userID
	events, errs := rs.buildChain(ctx, r, head, []protoEvent{{sender: userID, typ: spec.MRoomMember, stateKey: &sk, content: raw}})
	if errs[0] != nil {
		return nil, "", errs[0]
	}
	// The template is the built event without hashes, signatures and unsigned: the
	// joining server fills in its own and signs it.
	var proto gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(events[0].pdu.JSON(), &proto); err != nil {
		return nil, "", err
	}
	proto.Signature, proto.Unsigned = nil, nil
	return &proto, r.version, nil
}

// BuildInvite builds and signs the invite of req.Target (a user of another server) by
// the local user req.Sender, checked against the room's current state, without storing
// it: the invitee's server must countersign it first (then give it to InputEvents).
func (rs *Roomserver) BuildInvite(ctx context.Context, req MembershipRequest) (gomatrixserverlib.PDU, error) {
	if err := rs.checkLocalUser(req.Sender); err != nil {
		return nil, err
	}
	if _, err := spec.NewUserID(req.Target, true); err != nil {
		return nil, spec.InvalidParam(fmt.Sprintf("Invalid user ID %q", req.Target))
	}
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	head := r.head.Load()
	cur, _, err := rs.membershipIn(ctx, head, req.Target)
	if err != nil {
		return nil, err
	}
	if cur == spec.Join || cur == spec.Ban {
		return nil, spec.Forbidden(fmt.Sprintf("%s cannot be invited: their membership is %s", req.Target, cur))
	}
	content := map[string]any{"membership": spec.Invite}
	for k, v := range req.Content {
		content[k] = v
	}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	if req.IsDirect {
		content["is_direct"] = true
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, spec.BadJSON(err.Error())
	}
	sk := req.Target
	events, errs := rs.buildChain(ctx, r, head, []protoEvent{{sender: req.Sender, typ: spec.MRoomMember, stateKey: &sk, content: raw}})
	if errs[0] != nil {
		return nil, errs[0]
	}
	return events[0].pdu, nil
}

// JoinFromState persists a room joined through another server: the auth chain and the
// state before the join (from a checked send_join answer) are stored as outliers, then
// join becomes a timeline event whose state before it is exactly that state (its prev
// events are not known here). The join becomes the room's only forward extremity and
// the state after it the room's current state, so local users can use the room at
// once. The room may be unknown, or known from an earlier membership (an invite
// received over federation, or an old stay in the room).
func (rs *Roomserver) JoinFromState(ctx context.Context, join gomatrixserverlib.PDU, stateEvs, authChain []gomatrixserverlib.PDU) (*Event, error) {
	if join.Type() != spec.MRoomMember || join.StateKey() == nil {
		return nil, spec.BadJSON("Not a membership event")
	}
	if m, _ := join.Membership(); m != spec.Join {
		return nil, spec.BadJSON("Not a join event")
	}
	roomID := join.RoomID().String()
	r, newRoom, unlock, err := rs.lockRoomOrNew(ctx, roomID, join.Version())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if known, err := rs.eventByID(ctx, join.EventID()); err != nil {
		return nil, err
	} else if known != nil && !known.Outlier {
		return known, nil
	}

	// 1. The auth chain and the state, as outliers, each after its auth events.
	all := map[string]gomatrixserverlib.PDU{}
	for _, list := range [][]gomatrixserverlib.PDU{authChain, stateEvs} {
		for _, ev := range list {
			if ev.RoomID().String() != roomID || ev.Version() != r.version {
				return nil, spec.BadJSON(fmt.Sprintf("event %s is not an event of room %s", ev.EventID(), roomID))
			}
			all[ev.EventID()] = ev
		}
	}
	list := make([]gomatrixserverlib.PDU, 0, len(all))
	for _, ev := range all {
		list = append(list, ev)
	}
	ordered := gomatrixserverlib.ReverseTopologicalOrdering(list, gomatrixserverlib.TopologicalOrderByAuthEvents)
	ids := make([]string, len(ordered))
	for i, ev := range ordered {
		ids[i] = ev.EventID()
	}
	known, err := rs.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	// Numeric IDs of every (type, state key), in one go.
	var tuples []tuple
	for _, ev := range ordered {
		if ev.StateKey() != nil {
			tuples = append(tuples, tuple{ev.Type(), *ev.StateKey()})
		}
	}
	tuples = append(tuples, tuple{spec.MRoomMember, *join.StateKey()})
	keys, err := rs.stateKeys(ctx, tuples, true)
	if err != nil {
		return nil, err
	}
	rejected := map[string]bool{}
	var outliers []*newEvent
	for _, pdu := range ordered {
		if k := known[pdu.EventID()]; k != nil {
			rejected[pdu.EventID()] = k.Rejected
			continue
		}
		ne := &newEvent{pdu: pdu, outlier: true}
		var auth []gomatrixserverlib.PDU
		for _, id := range pdu.AuthEventIDs() {
			a := all[id]
			if a == nil {
				if k := known[id]; k != nil {
					a = k.PDU
				}
			}
			if a == nil || rejected[id] {
				ne.rejected = true
				break
			}
			auth = append(auth, a)
		}
		if !ne.rejected {
			provider, err := gomatrixserverlib.NewAuthEvents(auth)
			ne.rejected = err != nil || !authSelectionOK(pdu, auth) || gomatrixserverlib.Allowed(pdu, provider, userIDForSender) != nil
		}
		rejected[pdu.EventID()] = ne.rejected
		if pdu.StateKey() != nil {
			ne.key, ne.hasKey = keys[tuple{pdu.Type(), *pdu.StateKey()}], true
		}
		outliers = append(outliers, ne)
	}
	// The join must be allowed by the state (checked before anything is stored).
	var statePDUs []gomatrixserverlib.PDU
	hasCreate := false
	for _, ev := range stateEvs {
		if rejected[ev.EventID()] || ev.StateKey() == nil {
			continue
		}
		statePDUs = append(statePDUs, ev)
		hasCreate = hasCreate || (ev.Type() == spec.MRoomCreate && ev.StateKeyEquals(""))
	}
	if !hasCreate {
		return nil, spec.BadJSON("The join answer's state has no create event")
	}
	provider, err := gomatrixserverlib.NewAuthEvents(statePDUs)
	if err != nil {
		return nil, spec.BadJSON(fmt.Sprintf("The join answer's state: %v", err))
	}
	if err := gomatrixserverlib.Allowed(join, provider, userIDForSender); err != nil {
		return nil, spec.Forbidden(fmt.Sprintf("The join is not allowed by the room's state: %v", err))
	}
	if len(outliers) > 0 {
		w := &roomWrite{r: r, newRoom: newRoom, events: outliers, headFrom: -1}
		if err := rs.commit(w); err != nil {
			return nil, fmt.Errorf("store the state of %s: %w", roomID, err)
		}
		r = w.r
	}

	// 2. The state before the join, as entries.
	stored, err := rs.eventsByID(ctx, eventIDsOf(stateEvs))
	if err != nil {
		return nil, err
	}
	var entries []state.Entry
	var create *Event
	for _, ev := range stateEvs {
		s := stored[ev.EventID()]
		if s == nil || s.Rejected || s.StateKey() == nil {
			continue
		}
		k, ok := keys[tuple{s.Type(), *s.StateKey()}]
		if !ok {
			return nil, fmt.Errorf("room %s: no numeric ID for state key of %s", roomID, s.EventID())
		}
		entries = append(entries, state.Entry{Key: k, Event: s.NID})
		if s.Type() == spec.MRoomCreate && s.StateKeyEquals("") {
			create = s
		}
	}
	if create == nil {
		return nil, fmt.Errorf("room %s: the stored state has no create event", roomID)
	}
	entries = withEntries(entries)

	// 3. The join, on top of that state; it becomes the room's head.
	k := keys[tuple{spec.MRoomMember, *join.StateKey()}]
	ne := &newEvent{pdu: join, base: state.Empty, changes: entries, key: k, hasKey: true}
	old := &roomHead{state: state.Empty}
	if h := r.head.Load(); h != nil {
		old.state, old.lastEventNID = h.state, h.lastEventNID
	}
	old.create = create
	w := &roomWrite{r: r, oldHead: old, events: []*newEvent{ne}, moveHead: true, headFrom: 0, exts: []extRef{{idx: 0}}}
	if err := rs.commit(w); err != nil {
		return nil, fmt.Errorf("store the join of %s: %w", roomID, err)
	}
	return ne.ev, nil
}

func eventIDsOf(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	return out
}

// withEntries sorts entries and keeps the last one of each key.
func withEntries(entries []state.Entry) []state.Entry {
	byKey := map[state.Key]int64{}
	for _, e := range entries {
		byKey[e.Key] = e.Event
	}
	out := make([]state.Entry, 0, len(byKey))
	for k, v := range byKey {
		out = append(out, state.Entry{Key: k, Event: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Compare(out[j].Key) < 0 })
	return out
}

// lockRoomOrNew takes the room's write lock, then returns the room with a current head,
// or a new in-memory room of the version when the room is not known (checked under the
// lock, so two writers cannot both create it).
func (rs *Roomserver) lockRoomOrNew(ctx context.Context, roomID string, ver gomatrixserverlib.RoomVersion) (*room, bool, func(), error) {
	unlock, err := rs.locker.Lock(ctx, roomID)
	if err != nil {
		return nil, false, nil, err
	}
	r, newRoom, err := rs.roomOrNew(ctx, roomID, ver)
	if err == nil && !newRoom {
		err = rs.refreshHead(ctx, r)
	}
	if err != nil {
		unlock()
		return nil, false, nil, err
	}
	return r, newRoom, unlock, nil
}

// roomOrNew returns the room, or a new in-memory room (not stored yet) of the version.
func (rs *Roomserver) roomOrNew(ctx context.Context, roomID string, ver gomatrixserverlib.RoomVersion) (*room, bool, error) {
	r, err := rs.room(ctx, roomID)
	if err == nil {
		if r.version != ver {
			return nil, false, spec.BadJSON(fmt.Sprintf("room %s has version %s, not %s", roomID, r.version, ver))
		}
		return r, false, nil
	}
	if !isNotFound(err) {
		return nil, false, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, false, spec.UnsupportedRoomVersion(err.Error())
	}
	return &room{id: roomID, version: verImpl.Version(), verImpl: verImpl}, true, nil
}

// StoreOutOfBandMembership stores a membership event of a local user that this server
// got outside the room's DAG: an invite from another server, the leave that rejects it
// (or leaves a room through another server), a knock. The event's prev events are not
// known here, so it is stored as an outlier, but it enters the room's current state (the
// user's membership, for /sync and the room lists) and is published to the outputs
// with OutOfBand set. A room this server does not know is created as a stub: its state
// holds only such memberships, and it cannot be sent to until a local user joins.
//
// It refuses (M_FORBIDDEN) rooms in which this server has a joined member: their events
// must come through the DAG.
func (rs *Roomserver) StoreOutOfBandMembership(ctx context.Context, pdu gomatrixserverlib.PDU) (*Event, error) {
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return nil, spec.BadJSON("Not a membership event")
	}
	if err := rs.checkLocalUser(*pdu.StateKey()); err != nil {
		return nil, err
	}
	roomID := pdu.RoomID().String()
	if in, err := rs.ServerInRoom(ctx, roomID, rs.cfg.ServerName); err != nil {
		return nil, err
	} else if in {
		return nil, spec.Forbidden("This server is in the room: the event must come through the room's history")
	}
	r, newRoom, unlock, err := rs.lockRoomOrNew(ctx, roomID, pdu.Version())
	if err != nil {
		return nil, err
	}
	defer unlock()
	var old *roomHead
	if !newRoom {
		old = r.head.Load()
	}
	if known, err := rs.eventByID(ctx, pdu.EventID()); err != nil {
		return nil, err
	} else if known != nil {
		return known, nil
	}
	k, _, err := rs.stateKey(ctx, spec.MRoomMember, *pdu.StateKey(), true)
	if err != nil {
		return nil, err
	}
	ne := &newEvent{pdu: pdu, outlier: true, key: k, hasKey: true}
	w := &roomWrite{r: r, newRoom: newRoom, oldHead: old, events: []*newEvent{ne}, moveHead: true, headFrom: -1,
		headBase: state.Empty, headChanges: []state.Entry{{Key: k, Event: -1}}}
	if old != nil {
		w.headBase = old.state
		for _, x := range old.extremities {
			w.exts = append(w.exts, extRef{ext: x, idx: -1})
		}
	}
	var replaced string
	if old != nil {
		if prev, err := rs.stateEvent(ctx, old.state, spec.MRoomMember, *pdu.StateKey()); err != nil {
			return nil, err
		} else if prev != nil {
			replaced = prev.EventID()
		}
	}
	if err := rs.commitOutOfBand(w, ne, replaced); err != nil {
		return nil, fmt.Errorf("store membership %s: %w", pdu.EventID(), err)
	}
	return ne.ev, nil
}

// commitOutOfBand commits w (one outlier that enters the current state) and publishes
// its event with OutOfBand set, at the position of its NID, so /sync wakes up for it.
func (rs *Roomserver) commitOutOfBand(w *roomWrite, ne *newEvent, replaced string) error {
	job := &commitJob{}
	job.run = func(ctx context.Context, tw *txWriter) error {
		outs, err := rs.runWrite(ctx, tw, w)
		if err != nil {
			return err
		}
		out := OutputEvent{Event: ne.ev, StreamPos: ne.ev.NID, OutOfBand: true, StateChanged: true, AddsState: []string{ne.ev.EventID()}}
		if replaced != "" {
			out.RemovesState = []string{replaced}
		}
		job.outputs = append(outs, out)
		return nil
	}
	job.after = func() { rs.installWrite(w) }
	return rs.committer.do(job)
}
