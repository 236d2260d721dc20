package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
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
		ev, err := impl.NewEventFromUntrustedJSON(raw)
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

// stateFrom fetches the state before eventID from server: /state_ids, then /state
// when some of those events (or their auth chain) are unknown here, storing them as
// outliers. It returns the state's event IDs.
func (s *Server) stateFrom(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, roomID, eventID string) ([]string, error) {
	q := "?event_id=" + url.QueryEscape(eventID)
	var ids struct {
		PDUIDs  []string `json:"pdu_ids"`
		AuthIDs []string `json:"auth_chain_ids"`
	}
	if err := s.client.DoSigned(ctx, "GET", server, "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+q, nil, &ids); err != nil {
		return nil, fmt.Errorf("state_ids at %s from %s: %w", eventID, server, err)
	}
	all := append(append([]string{}, ids.PDUIDs...), ids.AuthIDs...)
	found, err := s.rooms.Events(ctx, all)
	if err != nil {
		return nil, err
	}
	if len(found) == len(uniq(all)) {
		return ids.PDUIDs, nil
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
	if err := s.storeOutliers(ctx, append(chain, pdus...), found); err != nil {
		return nil, err
	}
	stateIDs := make([]string, 0, len(pdus))
	for _, ev := range pdus {
		if ev.StateKey() != nil {
			stateIDs = append(stateIDs, ev.EventID())
		}
	}
	return stateIDs, nil
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
	// (but an outlier reached by backfill joins the timeline, and needs its state).
	known, err := s.rooms.Events(ctx, []string{ev.EventID()})
	if err != nil {
		return roomserver.InputResult{}, err
	}
	k := known[ev.EventID()]
	have := k != nil && (!k.Outlier || kind != roomserver.InputBackfill)
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

// fillGap fetches, from origin, the events between our forward extremities and the
// prev events of ev (at most maxGapEvents, with /get_missing_events) and stores them,
// oldest first; an event of the gap whose own prev events are still unknown gets its
// state from origin. Failures are logged: ev itself is then given its state the same way.
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
		res, err := s.inputWithState(ctx, origin, ver, roomserver.InputNew, m)
		if err != nil {
			log.WithError(err).Info("gap: input failed")
			return
		}
		if res.Err != nil {
			log.WithField("missing_event", m.EventID()).WithError(res.Err).Info("gap: event not stored")
		}
	}
}
