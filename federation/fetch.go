package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/roomserver"
)

// Fetching room history from another server: the events before a PDU whose prev
// events we lack (/get_missing_events), the state at an event (/state_ids, /state)
// stored as outliers, and older events (/backfill). Every fetched event is parsed for
// the room's version (content hash) and its signatures checked before it is stored.

const (
	// maxGapEvents bounds the events asked with /get_missing_events for one PDU.
	maxGapEvents = 20
	// maxFetchEvents bounds the events fetched one by one with /event for one state
	// or one event's auth events; more than that, /state or /event_auth bring them
	// at once.
	maxFetchEvents = 50
	// maxAuthChainEvents and maxAuthChainBytes bound an /event_auth answer (a room's
	// auth chain grows with its members and their changes of membership).
	maxAuthChainEvents = 10000
	maxAuthChainBytes  = 64 << 20
)

// parseVerified parses events of a room version and checks their signatures; bad ones
// are dropped (logged).
func (s *Server) parseVerified(ctx context.Context, ver gomatrixserverlib.RoomVersion, roomID string, raws []json.RawMessage) []gomatrixserverlib.PDU {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil
	}
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	for _, raw := range raws {
		ev, err := parsePDU(impl, raw)
		if err != nil || ev.RoomID().String() != roomID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keys, userIDForSender); err != nil {
			logrus.WithField("event_id", ev.EventID()).WithError(err).Info("fetched event with a bad signature dropped")
			continue
		}
		out = append(out, ev)
	}
	return out
}

// parsePDU parses an event received from another server for its room version. Events
// over the byte limits of room versions that only counted code points before (a long
// state key of multi-byte characters) are kept: rooms created before the stricter
// rule must stay usable (gomatrixserverlib marks these errors Persistable).
func parsePDU(impl gomatrixserverlib.IRoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := impl.NewEventFromUntrustedJSON(raw)
	var ve gomatrixserverlib.EventValidationError
	if err != nil && errors.As(err, &ve) && ve.Persistable && ev != nil {
		return ev, nil
	}
	return ev, err
}

// authOrder sorts events so that each comes after those of its auth events that are
// in the list (then by depth), as the roomserver needs outliers.
func authOrder(evs []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	byID := make(map[string]gomatrixserverlib.PDU, len(evs))
	for _, ev := range evs {
		byID[ev.EventID()] = ev
	}
	sorted := make([]gomatrixserverlib.PDU, 0, len(evs))
	sorted = append(sorted, evs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Depth() < sorted[j].Depth() })
	done := map[string]bool{}
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	var visit func(ev gomatrixserverlib.PDU, depth int)
	visit = func(ev gomatrixserverlib.PDU, depth int) {
		if done[ev.EventID()] || depth > 1000 {
			return
		}
		done[ev.EventID()] = true
		for _, a := range ev.AuthEventIDs() {
			if dep, ok := byID[a]; ok {
				visit(dep, depth+1)
			}
		}
		out = append(out, ev)
	}
	for _, ev := range sorted {
		visit(ev, 0)
	}
	return out
}

// knownInTimeline reports whether every ID is a stored event with state of its own
// (not an outlier).
func (s *Server) knownInTimeline(ctx context.Context, ids []string) (bool, error) {
	if len(ids) == 0 {
		return true, nil
	}
	found, err := s.rooms.Events(ctx, ids)
	if err != nil {
		return false, err
	}
	for _, id := range ids {
		if ev := found[id]; ev == nil || ev.Outlier {
			return false, nil
		}
	}
	return true, nil
}

// stateFrom fetches the state before eventID from server: /state_ids, then the events
// of it (or of their auth chain) unknown here, stored as outliers; fetchToo are more
// events to fetch alongside. It returns the IDs of the state events stored.
func (s *Server) stateFrom(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, roomID, eventID string, fetchToo ...string) ([]string, error) {
	q := "?event_id=" + url.QueryEscape(eventID)
	var ids struct {
		PDUIDs  []string `json:"pdu_ids"`
		AuthIDs []string `json:"auth_chain_ids"`
	}
	if err := s.client.DoSigned(ctx, "GET", server, "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+q, nil, &ids); err != nil {
		return nil, fmt.Errorf("state_ids at %s from %s: %w", eventID, server, err)
	}
	all := append(append([]string{}, ids.PDUIDs...), ids.AuthIDs...)
	found, err := s.rooms.Events(ctx, append(slices.Clone(all), fetchToo...))
	if err != nil {
		return nil, err
	}
	need := uniq(append(slices.Clone(all), fetchToo...))
	var missing []string
	for id := range need {
		if found[id] == nil {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) == 0 {
		return s.storedState(ctx, ids.PDUIDs)
	}
	// Few missing events (a handful, or under a tenth of the state and its auth chain)
	// come one by one with /event; more come at once with /state. Events that cannot be
	// had are left out of the state, and so is anything whose auth chain needs them.
	if (len(missing) <= 5 || len(missing)*10 < len(need)) && len(missing) <= maxFetchEvents {
		if err := s.storeFetched(ctx, s.fetchEvents(ctx, server, ver, roomID, missing)); err != nil {
			return nil, err
		}
		return s.storedState(ctx, ids.PDUIDs)
	}
	var st struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := s.client.DoSigned(ctx, "GET", server, "/_matrix/federation/v1/state/"+url.PathEscape(roomID)+q, nil, &st); err != nil {
		return nil, fmt.Errorf("state at %s from %s: %w", eventID, server, err)
	}
	chain := s.parseVerified(ctx, ver, roomID, st.AuthChain)
	pdus := s.parseVerified(ctx, ver, roomID, st.PDUs)
	// /state does not carry fetchToo (the event itself): fetched one by one, they are
	// stored in the same batch, after the state and auth chain they usually need (the
	// prev event of a gap refers to the state before it: stored first, it would be
	// dropped for want of its auth events).
	var extra []string
	for _, id := range fetchToo {
		if found[id] == nil {
			extra = append(extra, id)
		}
	}
	toStore := append(chain, pdus...)
	toStore = append(toStore, s.fetchEvents(ctx, server, ver, roomID, extra)...)
	if err := s.storeOutliers(ctx, toStore, found); err != nil {
		return nil, err
	}
	stateIDs := make([]string, 0, len(pdus))
	for _, ev := range pdus {
		if ev.StateKey() != nil {
			stateIDs = append(stateIDs, ev.EventID())
		}
	}
	return s.storedState(ctx, stateIDs)
}

// storedState returns the IDs among ids of state events stored here (others, which
// could not be fetched or stored, are left out).
func (s *Server) storedState(ctx context.Context, ids []string) ([]string, error) {
	found, err := s.rooms.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if ev := found[id]; ev != nil && ev.StateKey() != nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// fetchEvents fetches events one by one from server (/event), checked; those it
// cannot have are left out.
func (s *Server) fetchEvents(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, roomID string, ids []string) []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	for _, id := range ids {
		var txn struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := s.client.DoSigned(ctx, "GET", server, "/_matrix/federation/v1/event/"+url.PathEscape(id), nil, &txn); err != nil {
			logrus.WithFields(logrus.Fields{"server": server, "event_id": id}).WithError(err).Info("event not fetched")
			continue
		}
		for _, ev := range s.parseVerified(ctx, ver, roomID, txn.PDUs) {
			if ev.EventID() == id {
				out = append(out, ev)
			}
		}
	}
	return out
}

// storeFetched stores fetched events we do not have yet as outliers, auth events first.
func (s *Server) storeFetched(ctx context.Context, evs []gomatrixserverlib.PDU) error {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID()
	}
	known, err := s.rooms.Events(ctx, ids)
	if err != nil {
		return err
	}
	return s.storeOutliers(ctx, evs, known)
}

// AuthChainError is an /event_auth answer refused as a whole: an event of it is not
// valid (format, room, signatures), fails the auth rules against its own auth events
// (none of them rejected here), refers to an auth event that is neither in it nor
// stored here, or the chain is over the bounds. Nothing of it is stored.
type AuthChainError struct{ msg string }

func (e *AuthChainError) Error() string { return e.msg }

func chainErr(format string, args ...any) error {
	return &AuthChainError{msg: fmt.Sprintf(format, args...)}
}

// fetchMissingAuth gets, from server, the auth events of ev that are not stored here:
// its whole auth chain with one /event_auth request (verified before anything of it is
// stored, see authChainFrom), else, when the server does not answer it, the missing
// ones (and theirs) one by one with /event, at most maxFetchEvents. They are stored as
// outliers, auth events first, each checked against its own auth events. What cannot
// be had makes the roomserver reject ev. An *AuthChainError is returned for a chain
// refused: ev should be refused too.
func (s *Server) fetchMissingAuth(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) error {
	unknown := func(ids []string) ([]string, error) {
		found, err := s.rooms.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, id := range ids {
			if found[id] == nil {
				out = append(out, id)
			}
		}
		return out, nil
	}
	missing, err := unknown(ev.AuthEventIDs())
	if err != nil || len(missing) == 0 {
		return err
	}
	chain, known, err := s.authChainFrom(ctx, server, ver, ev)
	var refused *AuthChainError
	switch {
	case err == nil:
		return s.storeOutliers(ctx, chain, known)
	case errors.As(err, &refused) || errors.Is(err, ErrAnswerTooLarge):
		logrus.WithFields(logrus.Fields{"server": server, "event_id": ev.EventID()}).WithError(err).Info("auth chain refused")
		if !errors.As(err, &refused) {
			err = chainErr("auth chain of %s from %s: %v", ev.EventID(), server, err)
		}
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	logrus.WithFields(logrus.Fields{"server": server, "event_id": ev.EventID()}).WithError(err).
		Debug("event_auth not answered: missing auth events fetched one by one")
	// One by one, following the auth events of what comes back.
	fetched := map[string]gomatrixserverlib.PDU{}
	queue := missing
	for len(queue) > 0 && len(fetched) < maxFetchEvents {
		id := queue[0]
		queue = queue[1:]
		if _, done := fetched[id]; done {
			continue
		}
		fetched[id] = nil
		got := s.fetchEvents(ctx, server, ver, ev.RoomID().String(), []string{id})
		if len(got) == 0 {
			continue
		}
		fetched[id] = got[0]
		more, err := unknown(got[0].AuthEventIDs())
		if err != nil {
			return err
		}
		queue = append(queue, more...)
	}
	var evs []gomatrixserverlib.PDU
	for _, f := range fetched {
		if f != nil {
			evs = append(evs, f)
		}
	}
	return s.storeFetched(ctx, evs)
}

// authChainFrom fetches the auth chain of ev from server (/event_auth, one request, at
// most maxAuthChainBytes and maxAuthChainEvents) and verifies all of it before
// anything is stored: each event well-formed for the room's version and of the room
// (an event whose content hash fails is taken redacted, as the spec says), signed by
// its servers, and, in auth order, allowed by the auth rules against its own auth
// events, which must be in the chain or stored here (one referring to an event
// rejected here is left for the roomserver to reject). It returns the
// events in auth order and those of the chain stored here already. A chain failing
// any check is an *AuthChainError; a failed request another error.
func (s *Server) authChainFrom(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, map[string]*roomserver.Event, error) {
	roomID := ev.RoomID().String()
	var answer struct {
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	uri := "/_matrix/federation/v1/event_auth/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
	if err := s.client.DoSignedLimit(ctx, "GET", server, uri, nil, &answer, maxAuthChainBytes); err != nil {
		return nil, nil, err
	}
	if len(answer.AuthChain) > maxAuthChainEvents {
		return nil, nil, chainErr("auth chain of %s from %s has %d events, more than the %d accepted", ev.EventID(), server, len(answer.AuthChain), maxAuthChainEvents)
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, nil, err
	}
	byID := make(map[string]gomatrixserverlib.PDU, len(answer.AuthChain))
	chain := make([]gomatrixserverlib.PDU, 0, len(answer.AuthChain))
	for i, raw := range answer.AuthChain {
		p, err := parsePDU(impl, raw)
		if err != nil {
			return nil, nil, chainErr("auth chain of %s from %s: event %d is not valid: %v", ev.EventID(), server, i, err)
		}
		if p.RoomID().String() != roomID {
			return nil, nil, chainErr("auth chain of %s from %s: event %s is of another room", ev.EventID(), server, p.EventID())
		}
		if byID[p.EventID()] != nil {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, p, s.keys, userIDForSender); err != nil {
			return nil, nil, chainErr("auth chain of %s from %s: event %s has a bad signature: %v", ev.EventID(), server, p.EventID(), err)
		}
		byID[p.EventID()] = p
		chain = append(chain, p)
	}
	// Auth events neither in the chain nor stored here: the chain is incomplete.
	var refs []string
	for _, p := range append([]gomatrixserverlib.PDU{ev}, chain...) {
		for _, a := range p.AuthEventIDs() {
			if byID[a] == nil {
				refs = append(refs, a)
			}
		}
	}
	ids := make([]string, 0, len(chain)+len(refs))
	for _, p := range chain {
		ids = append(ids, p.EventID())
	}
	known, err := s.rooms.Events(ctx, append(ids, refs...))
	if err != nil {
		return nil, nil, err
	}
	for _, p := range append([]gomatrixserverlib.PDU{ev}, chain...) {
		for _, a := range p.AuthEventIDs() {
			if byID[a] == nil && known[a] == nil {
				return nil, nil, chainErr("auth chain of %s from %s is incomplete: %s refers to %s, which it lacks", ev.EventID(), server, p.EventID(), a)
			}
		}
	}
	// The auth rules, auth events first; an event stored here already was checked. An
	// event referring to one rejected here (or to such an event of the chain) is not
	// checked: the roomserver stores it rejected, as the auth rules have it, so that
	// what refers to it is rejected in turn rather than left without its auth events.
	ordered := authOrder(chain)
	tainted := map[string]bool{}
	for _, p := range ordered {
		if known[p.EventID()] != nil {
			continue
		}
		for _, a := range p.AuthEventIDs() {
			if k := known[a]; tainted[a] || (k != nil && k.Rejected) {
				tainted[p.EventID()] = true
			}
		}
		if tainted[p.EventID()] {
			continue
		}
		auth := make([]gomatrixserverlib.PDU, 0, len(p.AuthEventIDs()))
		for _, a := range p.AuthEventIDs() {
			if c := byID[a]; c != nil {
				auth = append(auth, c)
			} else {
				auth = append(auth, known[a].PDU)
			}
		}
		provider, err := gomatrixserverlib.NewAuthEvents(auth)
		if err == nil {
			err = gomatrixserverlib.Allowed(p, provider, userIDForSender)
		}
		if err != nil {
			return nil, nil, chainErr("auth chain of %s from %s: event %s fails the auth rules: %v", ev.EventID(), server, p.EventID(), err)
		}
	}
	return ordered, known, nil
}

func uniq(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// storeOutliers stores the events not in known as outliers, auth events first.
func (s *Server) storeOutliers(ctx context.Context, evs []gomatrixserverlib.PDU, known map[string]*roomserver.Event) error {
	var in []roomserver.InputEvent
	seen := map[string]bool{}
	for _, ev := range authOrder(evs) {
		if known[ev.EventID()] != nil || seen[ev.EventID()] {
			continue
		}
		seen[ev.EventID()] = true
		in = append(in, roomserver.InputEvent{Kind: roomserver.InputOutlier, Event: ev})
	}
	if len(in) == 0 {
		return nil
	}
	res, err := s.rooms.InputEvents(ctx, in)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			logrus.WithField("event_id", r.EventID).WithError(r.Err).Debug("state event not stored")
		}
	}
	return nil
}

// inputWithState gives the roomserver an event whose prev events may be unknown here:
// when they are, the state before it is fetched from server first.
func (s *Server) inputWithState(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, kind roomserver.InputKind, ev gomatrixserverlib.PDU) (roomserver.InputResult, error) {
	in := roomserver.InputEvent{Kind: kind, Event: ev}
	// An event stored already needs nothing fetched: the roomserver answers for it
	// (but an outlier joins the timeline, and needs its state).
	known, err := s.rooms.Events(ctx, []string{ev.EventID()})
	if err != nil {
		return roomserver.InputResult{}, err
	}
	k := known[ev.EventID()]
	have := k != nil && !k.Outlier
	ok := have
	if !have {
		if ok, err = s.knownInTimeline(ctx, ev.PrevEventIDs()); err != nil {
			return roomserver.InputResult{}, err
		}
	}
	if !ok {
		st, err := s.stateFrom(ctx, server, ver, ev.RoomID().String(), ev.EventID())
		if err != nil {
			return roomserver.InputResult{EventID: ev.EventID(), Err: err}, nil
		}
		in.StateBefore = st
	}
	res, err := s.rooms.InputEvents(ctx, []roomserver.InputEvent{in})
	if err != nil || len(res) != 1 {
		return roomserver.InputResult{EventID: ev.EventID(), Err: err}, err
	}
	return res[0], nil
}

// stateAfterPrevs returns the state after each prev event of ev, as event IDs: ours
// for prev events in our timeline, else from server (the state at the prev event with
// /state_ids, and the prev event itself, which is part of the state after it when it
// is a state event). The roomserver resolves them into the state before ev.
func (s *Server) stateAfterPrevs(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) ([][]string, error) {
	prevs := ev.PrevEventIDs()
	known, err := s.rooms.Events(ctx, prevs)
	if err != nil {
		return nil, err
	}
	out := make([][]string, 0, len(prevs))
	for _, p := range prevs {
		if k := known[p]; k != nil && !k.Outlier {
			st, err := s.rooms.StateAtEvent(ctx, p, true)
			if err != nil {
				return nil, err
			}
			out = append(out, ids(st))
			continue
		}
		st, err := s.stateFrom(ctx, server, ver, ev.RoomID().String(), p, p)
		if err != nil {
			return nil, err
		}
		got, err := s.rooms.Events(ctx, append([]string{p}, st...))
		if err != nil {
			return nil, err
		}
		if pe := got[p]; pe != nil && pe.StateKey() != nil && !pe.Rejected {
			kept := st[:0:0]
			for _, id := range st {
				if e := got[id]; e != nil && (e.Type() != pe.Type() || *e.StateKey() != *pe.StateKey()) {
					kept = append(kept, id)
				}
			}
			st = append(kept, p)
		}
		out = append(out, st)
	}
	return out, nil
}

// inputPulled gives the roomserver an event fetched to fill a gap: when its prev
// events are not all in our timeline, the state before it is made from the state
// after each of them (stateAfterPrevs); auth events still missing after that (which
// usually brings them, with their chain) are fetched then.
func (s *Server) inputPulled(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) (roomserver.InputResult, error) {
	if have, err := s.knownInTimeline(ctx, []string{ev.EventID()}); err != nil || have {
		return roomserver.InputResult{EventID: ev.EventID(), AlreadyKnown: have}, err
	}
	in := roomserver.InputEvent{Kind: roomserver.InputNew, Event: ev}
	if ok, err := s.knownInTimeline(ctx, ev.PrevEventIDs()); err != nil {
		return roomserver.InputResult{}, err
	} else if !ok {
		states, err := s.stateAfterPrevs(ctx, server, ver, ev)
		if err != nil {
			return roomserver.InputResult{EventID: ev.EventID(), Err: err}, nil
		}
		in.PrevStates = states
	}
	if err := s.fetchMissingAuth(ctx, server, ver, ev); err != nil {
		var refused *AuthChainError
		if errors.As(err, &refused) {
			return roomserver.InputResult{EventID: ev.EventID(), Err: err}, nil
		}
		return roomserver.InputResult{}, err
	}
	res, err := s.rooms.InputEvents(ctx, []roomserver.InputEvent{in})
	if err != nil || len(res) != 1 {
		return roomserver.InputResult{EventID: ev.EventID(), Err: err}, err
	}
	return res[0], nil
}

// fillGap fetches, from origin, the events between our forward extremities and the
// prev events of ev (at most maxGapEvents, with /get_missing_events) and stores them,
// oldest first; an event of the gap whose own prev events are still unknown gets the
// state after them from origin (inputPulled). Failures are logged; the caller checks
// whether the gap closed.
func (s *Server) fillGap(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) {
	roomID := ev.RoomID().String()
	log := logrus.WithFields(logrus.Fields{"origin": origin, "room_id": roomID, "event_id": ev.EventID()})
	info, err := s.rooms.RoomInfo(ctx, roomID)
	if err != nil {
		log.WithError(err).Info("gap: room info")
		return
	}
	body := map[string]any{"earliest_events": info.Extremities, "latest_events": []string{ev.EventID()},
		"limit": maxGapEvents, "min_depth": 0}
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := s.client.DoSigned(ctx, "POST", origin, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID), body, &resp); err != nil {
		log.WithError(err).Info("gap: get_missing_events failed")
		return
	}
	evs := s.parseVerified(ctx, ver, roomID, resp.Events)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	for _, m := range evs {
		if m.EventID() == ev.EventID() {
			continue
		}
		res, err := s.inputPulled(ctx, origin, ver, m)
		if err != nil {
			log.WithError(err).Info("gap: input failed")
			return
		}
		if res.Err != nil {
			log.WithField("missing_event", m.EventID()).WithError(res.Err).Info("gap: event not stored")
		}
	}
}

// promoteOutlierPrevs brings the prev events of ev that are stored as outliers into
// the timeline (oldest first), each with the state before it from server when its own
// prev events are not in our timeline: a new event of the origin may refer to an event
// we only know from the state of our join (sent while we were joining), which
// /get_missing_events does not return (our timeline descends from it).
func (s *Server) promoteOutlierPrevs(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU) error {
	known, err := s.rooms.Events(ctx, ev.PrevEventIDs())
	if err != nil {
		return err
	}
	var outliers []gomatrixserverlib.PDU
	for _, id := range ev.PrevEventIDs() {
		if k := known[id]; k != nil && k.Outlier && !k.Rejected {
			outliers = append(outliers, k.PDU)
		}
	}
	sort.SliceStable(outliers, func(i, j int) bool { return outliers[i].Depth() < outliers[j].Depth() })
	for _, o := range outliers {
		res, err := s.inputWithState(ctx, server, ver, roomserver.InputNew, o)
		if err != nil {
			return fmt.Errorf("promote outlier %s: %w", o.EventID(), err)
		}
		switch {
		case res.Err != nil:
			logrus.WithField("event_id", o.EventID()).WithError(res.Err).Info("outlier prev event not brought into the timeline")
		case res.Rejected || res.SoftFailed:
			logrus.WithFields(logrus.Fields{"event_id": o.EventID(), "rejected": res.Rejected, "soft_failed": res.SoftFailed}).
				Info("outlier prev event brought into the timeline failed the auth rules")
		}
	}
	return nil
}
