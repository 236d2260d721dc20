package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/roomserver/invitefilter"
	"github.com/myelin-chat/myelin/storage"
)

// maxPrevEvents caps the prev_events of a new local event.
const maxPrevEvents = 10

// maxEventSize is the spec's limit on the size of an event (canonical JSON).
const maxEventSize = 65536

// SendRequest asks for a new event from a local user.
type SendRequest struct {
	RoomID string
	// Sender is the user ID of a local user.
	Sender string
	Type   string
	// StateKey is nil for a message event.
	StateKey *string
	// Content is the event content: a JSON object as json.RawMessage or []byte, or a Go
	// value that marshals to one.
	Content any
	// Redacts is the target of an m.room.redaction event.
	Redacts string
	// TxnID and DeviceID identify the client transaction (kept for local echo).
	TxnID    string
	DeviceID string
	// TxnScope, when set with TxnID, makes the send idempotent: the first send of
	// (Sender, DeviceID, TxnScope, TxnID) records the transaction ID in the
	// transaction that stores the event, and every later send with the same key
	// returns that event instead of creating another (also after a crash or restart,
	// and when the two race). The client API uses the endpoint and room as scope.
	TxnScope string
	// Unsigned is put in the event's unsigned object (not signed, not hashed).
	Unsigned map[string]any
	// Timestamp is origin_server_ts (application services may set it); zero means now.
	Timestamp time.Time
}

// SendEvent builds, signs, authorises and persists a new event from a local user. It
// returns once the event has committed. Auth failures are M_FORBIDDEN; nothing is
// stored then. With req.TxnScope the send is idempotent per client transaction (see
// SendRequest.TxnScope).
//
// Concurrent sends to one room queue up: the room's writer takes every queued request,
// builds them as a chain (each on top of the previous one) and commits them together,
// so a busy room is not limited to one commit per event.
func (rs *Roomserver) SendEvent(ctx context.Context, req SendRequest) (*Event, error) {
	content, err := contentJSON(req.Content)
	if err != nil {
		return nil, err
	}
	if err := rs.checkLocalUser(req.Sender); err != nil {
		return nil, err
	}
	if req.Type == "" {
		return nil, spec.BadJSON("Event type is required")
	}
	if req.Type == spec.MRoomCreate {
		// The create event starts a room and cannot be replaced (a bad request, not a
		// question of power).
		return nil, spec.BadJSON("m.room.create can only be sent by creating a room")
	}
	if req.Type == spec.MRoomMember && req.StateKey != nil {
		if err := rs.checkInviteByState(ctx, req.Sender, *req.StateKey, content); err != nil {
			return nil, err
		}
	}
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	p := protoEvent{
		sender: req.Sender, typ: req.Type, stateKey: req.StateKey, content: content,
		redacts: req.Redacts, unsigned: req.Unsigned, ts: req.Timestamp,
		txnID: req.TxnID, deviceID: req.DeviceID,
	}
	if req.TxnID != "" && req.TxnScope != "" {
		p.txnScope = req.TxnScope
		// The common replay (a client retrying after a timeout or a restart) is
		// answered here; one racing the first send is caught by the commit.
		if ev, found, err := rs.replayedSend(ctx, p); err != nil || found {
			return ev, err
		}
	}
	sr := &sendReq{p: p, done: make(chan struct{})}
	q := rs.sendQueue(r.id)
	q.mu.Lock()
	q.pending = append(q.pending, sr)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go rs.drainSends(r, q)
	}
	// Once queued the request runs to completion: a caller that gave up could not
	// know whether its event was stored.
	<-sr.done
	return sr.ev, sr.err
}

// protoEvent is what a local event is built from.
type protoEvent struct {
	sender   string
	typ      string
	stateKey *string
	content  []byte
	redacts  string
	unsigned map[string]any
	ts       time.Time
	txnID    string
	deviceID string
	// txnScope is set when the send is idempotent (SendRequest.TxnScope).
	txnScope string
}

// txnKey identifies an idempotent send; "" when the send is not idempotent.
func (p *protoEvent) txnKey() string {
	if p.txnScope == "" {
		return ""
	}
	return p.sender + "\x00" + p.deviceID + "\x00" + p.txnScope + "\x00" + p.txnID
}

// sendResponse is what is recorded for an idempotent send: the client API's answer.
func sendResponse(eventID string) string {
	b, _ := json.Marshal(map[string]string{"event_id": eventID})
	return string(b)
}

// replayedSend returns the event an earlier send with p's transaction ID stored.
func (rs *Roomserver) replayedSend(ctx context.Context, p protoEvent) (*Event, bool, error) {
	resp, found, err := storage.TransactionResponse(ctx, rs.db, p.sender, p.deviceID, p.txnScope, p.txnID)
	if err != nil || !found {
		return nil, false, err
	}
	var body struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal([]byte(resp), &body); err != nil || body.EventID == "" {
		return nil, false, fmt.Errorf("transaction %s of %s: unreadable response %q", p.txnID, p.sender, resp)
	}
	ev, err := rs.eventByID(ctx, body.EventID)
	if err != nil {
		return nil, false, err
	}
	if ev == nil {
		return nil, false, fmt.Errorf("transaction %s of %s: event %s is missing", p.txnID, p.sender, body.EventID)
	}
	return ev, true, nil
}

// txnReplayError fails a write whose event idx carries a transaction ID that another
// write recorded first.
type txnReplayError struct{ idx int }

func (e *txnReplayError) Error() string {
	return fmt.Sprintf("event %d of the write replays a recorded transaction ID", e.idx)
}

// sendReq is a queued SendEvent.
type sendReq struct {
	p    protoEvent
	ev   *Event
	err  error
	done chan struct{}
}

// roomSendQueue holds the SendEvent requests of one room waiting for its writer.
type roomSendQueue struct {
	mu      sync.Mutex
	pending []*sendReq
	running bool
}

// maxChain caps the events built and committed together for one room.
const maxChain = 64

func (rs *Roomserver) sendQueue(roomID string) *roomSendQueue {
	rs.queuesMu.Lock()
	defer rs.queuesMu.Unlock()
	q := rs.queues[roomID]
	if q == nil {
		q = &roomSendQueue{}
		rs.queues[roomID] = q
	}
	return q
}

// drainSends is a room's writer: it sends the queued requests, a chain at a time,
// until the queue is empty.
func (rs *Roomserver) drainSends(r *room, q *roomSendQueue) {
	for {
		q.mu.Lock()
		n := chainLen(q.pending)
		if n == 0 {
			q.running = false
			q.mu.Unlock()
			rs.queuesMu.Lock()
			q.mu.Lock()
			if !q.running && len(q.pending) == 0 && rs.queues[r.id] == q {
				delete(rs.queues, r.id)
			}
			q.mu.Unlock()
			rs.queuesMu.Unlock()
			return
		}
		batch := slices.Clone(q.pending[:n])
		q.pending = q.pending[n:]
		q.mu.Unlock()
		rs.sendChain(r, batch)
		for _, sr := range batch {
			close(sr.done)
		}
	}
}

// chainLen returns how many of the pending requests the next chain takes: at most
// maxChain, and never two with the same transaction ID (the second must see the
// first's committed record to be answered as a replay).
func chainLen(pending []*sendReq) int {
	n := min(len(pending), maxChain)
	var keys map[string]bool
	for i, sr := range pending[:n] {
		k := sr.p.txnKey()
		if k == "" {
			continue
		}
		if keys[k] {
			return i
		}
		if keys == nil {
			keys = map[string]bool{}
		}
		keys[k] = true
	}
	return n
}

// sendChain builds the requests on top of each other and commits the ones that pass
// auth together, under the room's lock.
func (rs *Roomserver) sendChain(r *room, reqs []*sendReq) {
	ctx := context.Background()
	fail := func(err error) {
		for _, sr := range reqs {
			if sr.err == nil && sr.ev == nil {
				sr.err = err
			}
		}
	}
	unlock, err := rs.lockRoom(ctx, r)
	if err != nil {
		fail(err)
		return
	}
	defer unlock()
	for len(reqs) > 0 {
		protos := make([]protoEvent, len(reqs))
		for i, sr := range reqs {
			protos[i] = sr.p
		}
		head := r.head.Load()
		events, errs := rs.buildChain(ctx, r, head, protos)
		var owners []*sendReq
		for i, sr := range reqs {
			if errs[i] != nil {
				sr.err = errs[i]
			} else {
				owners = append(owners, sr)
			}
		}
		if len(events) == 0 {
			return
		}
		err := rs.commitChain(r, head, events)
		var replay *txnReplayError
		if errors.As(err, &replay) {
			// Another send with the same transaction ID committed first (another
			// process, or a replay that missed the record before queueing): answer this
			// one with that event and write the others again, without it.
			sr := owners[replay.idx]
			var found bool
			if sr.ev, found, sr.err = rs.replayedSend(ctx, sr.p); sr.err == nil && !found {
				sr.err = fmt.Errorf("transaction %s of %s: recorded but not found", sr.p.txnID, sr.p.sender)
			}
			reqs = slices.Delete(owners, replay.idx, replay.idx+1)
			continue
		}
		if err != nil {
			fail(err)
			return
		}
		for i, sr := range owners {
			sr.ev = events[i].ev
		}
		return
	}
}

// sendLocked builds and persists one local event on top of the room's head. The
// caller holds the room's lock.
func (rs *Roomserver) sendLocked(ctx context.Context, r *room, p protoEvent) (*Event, error) {
	head := r.head.Load()
	events, errs := rs.buildChain(ctx, r, head, []protoEvent{p})
	if errs[0] != nil {
		return nil, errs[0]
	}
	if err := rs.commitChain(r, head, events); err != nil {
		return nil, err
	}
	return events[0].ev, nil
}

// commitChain persists events built by buildChain on top of head.
func (rs *Roomserver) commitChain(r *room, head *roomHead, events []*newEvent) error {
	w := &roomWrite{r: r, oldHead: head, events: events, moveHead: true, headFrom: len(events) - 1}
	w.exts = remainingExtremities(head.extremities, events[0].pdu.PrevEventIDs())
	w.exts = append(w.exts, extRef{idx: len(events) - 1})
	return rs.commit(w)
}

// buildChain builds, signs and authorises local events, each on top of the previous
// one that passed (the first on the room's forward extremities). It returns the events
// that passed and, for each proto, its error (nil when it passed).
func (rs *Roomserver) buildChain(ctx context.Context, r *room, head *roomHead, protos []protoEvent) ([]*newEvent, []error) {
	errs := make([]error, len(protos))
	if head == nil || head.create == nil {
		for i := range errs {
			errs[i] = errRoomNotFound(r.id)
		}
		return nil, errs
	}
	prevs := head.extremities
	if len(prevs) > maxPrevEvents {
		prevs = slices.Clone(prevs)
		sort.Slice(prevs, func(i, j int) bool { return prevs[i].Depth > prevs[j].Depth })
		prevs = prevs[:maxPrevEvents]
	}
	// State changed by earlier events of the chain.
	overlay := map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}
	var out []*newEvent
	for i, p := range protos {
		ne, err := rs.buildOne(ctx, r, head, prevs, overlay, p)
		if err != nil {
			errs[i] = err
			continue
		}
		out = append(out, ne)
		prevs = []extremity{{ID: ne.pdu.EventID(), Depth: ne.pdu.Depth()}}
		if sk := ne.pdu.StateKey(); sk != nil {
			overlay[gomatrixserverlib.StateKeyTuple{EventType: ne.pdu.Type(), StateKey: *sk}] = ne.pdu
		}
	}
	return out, errs
}

func (rs *Roomserver) buildOne(ctx context.Context, r *room, head *roomHead, prevs []extremity,
	overlay map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU, p protoEvent) (*newEvent, error) {
	// An ordinary event on the head's state needs the same auth events as the
	// sender's previous one until the state changes: remembered per sender.
	cacheable := p.stateKey == nil && !specialAuthTypes[p.typ] && len(overlay) == 0 && head.state.NID != 0
	var as *authState
	if cacheable {
		as = r.authStates.get(head.state.NID, p.sender)
	}
	if as == nil {
		var err error
		if as, err = rs.authStateFor(ctx, r, head, overlay, p); err != nil {
			return nil, err
		}
	}
	pdu, authIDs, err := rs.build(r, prevs, p, as.auth, as.authIDs)
	if err != nil {
		return nil, err
	}
	if cacheable && as.authIDs == nil {
		r.authStates.put(head.state.NID, p.sender, &authState{pdus: as.pdus, auth: as.auth, authIDs: authIDs})
	}
	auth, pdus := as.auth, as.pdus
	ne := &newEvent{pdu: pdu, chain: true, txnID: p.txnID, deviceID: p.deviceID, txnScope: p.txnScope}
	if pdu.Type() == spec.MRoomRedaction {
		if err := rs.checkLocalRedaction(ctx, r, pdu, auth, ne); err != nil {
			return nil, err
		}
	}
	if err := r.allowed.check(pdu, pdus); err != nil {
		return nil, forbidden(err)
	}
	if pdu.StateKey() != nil {
		k, _, err := rs.stateKey(ctx, pdu.Type(), *pdu.StateKey(), true)
		if err != nil {
			return nil, err
		}
		ne.key, ne.hasKey = k, true
	}
	return ne, nil
}

// authStateFor looks up the state events p needs for its auth (from the overlay of
// the chain, then the head's state).
func (rs *Roomserver) authStateFor(ctx context.Context, r *room, head *roomHead,
	overlay map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU, p protoEvent) (*authState, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: p.sender, Type: p.typ, StateKey: p.stateKey, Content: p.content, Version: r.verImpl,
	})
	if err != nil {
		return nil, spec.BadJSON(err.Error())
	}
	tuples := needed.Tuples()
	if p.typ == spec.MRoomRedaction {
		tuples = append(tuples, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels})
	}
	var fromHead []gomatrixserverlib.StateKeyTuple
	var pdus []gomatrixserverlib.PDU
	for _, t := range tuples {
		if e, ok := overlay[t]; ok {
			pdus = append(pdus, e)
		} else {
			fromHead = append(fromHead, t)
		}
	}
	evs, err := rs.stateEventsFor(ctx, head.state, fromHead)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
	}
	auth, err := gomatrixserverlib.NewAuthEvents(pdus)
	if err != nil {
		return nil, err
	}
	return &authState{pdus: pdus, auth: auth}, nil
}

// remainingExtremities returns the extremities not referenced by prevs.
func remainingExtremities(exts []extremity, prevs []string) []extRef {
	var out []extRef
	for _, x := range exts {
		if !slices.Contains(prevs, x.ID) {
			out = append(out, extRef{ext: x, idx: -1})
		}
	}
	return out
}

// build makes and signs an event on top of prevs, with auth events chosen from auth
// (which must hold the state the event needs), or authIDs when the caller knows them
// already. It returns the auth event IDs it used.
func (rs *Roomserver) build(r *room, prevs []extremity, p protoEvent, auth *gomatrixserverlib.AuthEvents,
	authIDs []string) (gomatrixserverlib.PDU, []string, error) {
	if n := negativeFraction(p.content); n != "" {
		return nil, nil, spec.BadJSON(fmt.Sprintf("Content holds the number %s: a negative number written with a leading zero cannot be signed faithfully here (room versions 6 and later allow only integers)", n))
	}
	if k := escapedKey(p.content); k != "" {
		return nil, nil, spec.BadJSON(fmt.Sprintf("Content holds the key %q: keys with quotes, backslashes or control characters cannot be signed faithfully here", k))
	}
	var depth int64
	prevIDs := make([]string, 0, len(prevs))
	for _, x := range prevs {
		prevIDs = append(prevIDs, x.ID)
		depth = max(depth, x.Depth)
	}
	if depth < maxDepth {
		depth++
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: p.sender,
		Type:     p.typ,
		StateKey: p.stateKey,
		Content:  p.content,
		Redacts:  p.redacts,
		Depth:    depth,
	}
	if !(r.verImpl.DomainlessRoomIDs() && p.typ == spec.MRoomCreate) {
		proto.RoomID = r.id
	}
	if len(prevIDs) > 0 {
		proto.PrevEvents = prevIDs
	} else {
		proto.PrevEvents = []string{}
	}
	if len(p.unsigned) > 0 {
		if err := proto.SetUnsigned(p.unsigned); err != nil {
			return nil, nil, spec.BadJSON("unsigned: " + err.Error())
		}
	}
	builder := r.verImpl.NewEventBuilderFromProtoEvent(proto)
	if authIDs != nil {
		builder.AuthEvents = authIDs
	} else if err := builder.AddAuthEvents(auth); err != nil {
		return nil, nil, spec.BadJSON(err.Error())
	}
	ts := p.ts
	if ts.IsZero() {
		ts = rs.cfg.Now()
	}
	var pdu gomatrixserverlib.PDU
	var err error
	authIDs, isList := builder.AuthEvents.([]string)
	if !isList {
		return nil, nil, fmt.Errorf("build: auth events of type %T", builder.AuthEvents)
	}
	if proto.RoomID != "" && fastBuildable(r.verImpl, &p) &&
		fastBuildOK(r.verImpl, rs.cfg.ServerName, rs.cfg.KeyID, rs.cfg.PrivateKey) {
		// A plain message: the same event as Build makes, at a fraction of the cost
		// (see fastbuild.go).
		pdu, err = fastBuild(&fastEvent{
			verImpl: r.verImpl, roomID: proto.RoomID, sender: p.sender, typ: p.typ, content: p.content,
			prevEvents: prevIDs, authEvents: authIDs, depth: depth, ts: ts,
			origin: rs.cfg.ServerName, keyID: rs.cfg.KeyID, key: rs.cfg.PrivateKey,
		})
	} else {
		pdu, err = builder.Build(ts, rs.cfg.ServerName, rs.cfg.KeyID, rs.cfg.PrivateKey)
	}
	if err != nil {
		return nil, nil, spec.BadJSON("Invalid event: " + err.Error())
	}
	if len(pdu.JSON()) > maxEventSize {
		return nil, nil, spec.MatrixError{ErrCode: "M_TOO_LARGE", Err: "Event is larger than 65536 bytes"}
	}
	_ = pdu.EventID()
	return pdu, authIDs, nil
}

// maxDepth is the largest depth an event may have (2^63 - 1).
const maxDepth = int64(^uint64(0) >> 1)

// authEventsFor returns the state events of snap for the tuples, as an auth provider.
func (rs *Roomserver) authEventsFor(ctx context.Context, snap *state.Snapshot, tuples []gomatrixserverlib.StateKeyTuple) (*gomatrixserverlib.AuthEvents, error) {
	evs, err := rs.stateEventsFor(ctx, snap, tuples)
	if err != nil {
		return nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// stateEventsFor returns the events of snap for the tuples that are present.
func (rs *Roomserver) stateEventsFor(ctx context.Context, snap *state.Snapshot, tuples []gomatrixserverlib.StateKeyTuple) ([]*Event, error) {
	ts := make([]tuple, len(tuples))
	for i, t := range tuples {
		ts[i] = tuple{t.EventType, t.StateKey}
	}
	keys, err := rs.stateKeys(ctx, ts, false)
	if err != nil {
		return nil, err
	}
	ks := make([]state.Key, 0, len(keys))
	for _, k := range keys {
		ks = append(ks, k)
	}
	found, err := rs.states.LookupMany(ctx, snap, ks)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(found))
	for _, nid := range found {
		nids = append(nids, nid)
	}
	evs, err := rs.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(evs))
	for _, nid := range nids {
		if ev := evs[nid]; ev != nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

// stateEvent returns the event of (type, state key) in snap, nil if absent.
func (rs *Roomserver) stateEvent(ctx context.Context, snap *state.Snapshot, eventType, stateKey string) (*Event, error) {
	evs, err := rs.stateEventsFor(ctx, snap, []gomatrixserverlib.StateKeyTuple{{EventType: eventType, StateKey: stateKey}})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// checkLocalRedaction applies the client-server rule for redactions: users may redact
// their own events; redacting others' needs the redact power level (in auth, which
// holds the power levels and create event the redaction is built on). It records the
// target in ne.
func (rs *Roomserver) checkLocalRedaction(ctx context.Context, r *room, pdu gomatrixserverlib.PDU,
	auth *gomatrixserverlib.AuthEvents, ne *newEvent) error {
	targetID := redactsOf(pdu)
	if targetID == "" {
		return spec.BadJSON("Redaction without a target event")
	}
	target, err := rs.eventByID(ctx, targetID)
	if err != nil {
		return err
	}
	if target == nil {
		// Unknown target: allowed by the spec; applied if the event arrives later.
		ne.pendingTarget = targetID
		return nil
	}
	if target.RoomNID != r.nid {
		return spec.BadJSON("Cannot redact an event from another room")
	}
	if target.SenderID() != pdu.SenderID() {
		pls, err := powerLevelsFrom(auth)
		if err != nil {
			return err
		}
		if pls.level(pdu.SenderID()) < pls.Redact {
			return spec.Forbidden("You don't have permission to redact this event")
		}
	}
	if target.Rejected || target.Outlier {
		ne.pendingTarget = targetID
		return nil
	}
	ne.redactTarget = target
	return nil
}

// powerLevels is a room's power levels with the v12 creator rule applied.
type powerLevels struct {
	gomatrixserverlib.PowerLevelContent
	creators []string
}

func (p *powerLevels) level(user spec.SenderID) int64 {
	if slices.Contains(p.creators, string(user)) {
		return gomatrixserverlib.CreatorPowerLevel
	}
	return p.UserLevel(user)
}

// powerLevels returns the power levels of a state.
func (rs *Roomserver) powerLevels(ctx context.Context, snap *state.Snapshot, create *Event) (*powerLevels, error) {
	plEv, err := rs.stateEvent(ctx, snap, spec.MRoomPowerLevels, "")
	if err != nil {
		return nil, err
	}
	pdus := []gomatrixserverlib.PDU{}
	if plEv != nil {
		pdus = append(pdus, plEv.PDU)
	}
	if create != nil {
		pdus = append(pdus, create.PDU)
	}
	auth, err := gomatrixserverlib.NewAuthEvents(pdus)
	if err != nil {
		return nil, err
	}
	return powerLevelsFrom(auth)
}

// powerLevelsFrom reads the power levels (and v12 creators) from an auth provider.
func powerLevelsFrom(auth *gomatrixserverlib.AuthEvents) (*powerLevels, error) {
	create, _ := auth.Create()
	var creator string
	if create != nil {
		creator = string(create.SenderID())
	}
	c, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(auth, creator)
	if err != nil {
		return nil, err
	}
	out := &powerLevels{PowerLevelContent: c}
	if create != nil && gomatrixserverlib.MustGetRoomVersion(create.Version()).PrivilegedCreators() {
		out.creators = gomatrixserverlib.CreatorsFromCreateEvent(create)
	}
	return out, nil
}

// checkLocalUser checks that userID is a valid user of this server.
func (rs *Roomserver) checkLocalUser(userID string) error {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return spec.InvalidParam(fmt.Sprintf("Invalid user ID %q", userID))
	}
	if u.Domain() != rs.cfg.ServerName {
		return spec.Forbidden(fmt.Sprintf("User %s is not local to this server", userID))
	}
	return nil
}

// contentJSON turns request content into a JSON object.
func contentJSON(c any) ([]byte, error) {
	var raw []byte
	switch v := c.(type) {
	case nil:
		return []byte("{}"), nil
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	case spec.RawJSON:
		raw = v
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return nil, spec.BadJSON("Content is not valid JSON: " + err.Error())
		}
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || !json.Valid(raw) {
		return nil, spec.BadJSON("Content must be a JSON object")
	}
	return raw, nil
}

// forbidden turns an auth failure into M_FORBIDDEN.
func forbidden(err error) error {
	var me spec.MatrixError
	if errors.As(err, &me) {
		return me
	}
	// Some rules reject the event's content whoever sends it (e.g. a room version 12
	// power levels event listing a creator): a bad request, not a lack of power.
	var ve *gomatrixserverlib.EventValidationError
	if errors.As(err, &ve) && ve.Code == 400 {
		return spec.BadJSON(err.Error())
	}
	var vev gomatrixserverlib.EventValidationError
	if errors.As(err, &vev) && vev.Code == 400 {
		return spec.BadJSON(err.Error())
	}
	return spec.Forbidden(err.Error())
}

// checkInviteByState refuses an invite of a local user sent as a plain m.room.member
// state event when the invitee blocks invites from the sender (invitefilter).
func (rs *Roomserver) checkInviteByState(ctx context.Context, sender, target string, content []byte) error {
	if target == sender || rs.checkLocalUser(target) != nil {
		return nil
	}
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(content, &c) != nil || c.Membership != spec.Invite {
		return nil // not an invite; auth and validation deal with the rest
	}
	return invitefilter.Check(ctx, rs.db, target, sender)
}
