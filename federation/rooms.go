package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
)

// Rooms is what the federation API needs of the roomserver.
type Rooms interface {
	Event(ctx context.Context, eventID string) (*roomserver.Event, error)
	Events(ctx context.Context, eventIDs []string) (map[string]*roomserver.Event, error)
	RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error)
	StateAtEvent(ctx context.Context, eventID string, after bool) ([]*roomserver.Event, error)
	CurrentState(ctx context.Context, roomID string) ([]*roomserver.Event, error)
	CurrentStateEvent(ctx context.Context, roomID, eventType, stateKey string) (*roomserver.Event, error)
	CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]*roomserver.Event, error)
	JoinedMembers(ctx context.Context, roomID string) ([]string, error)
	RoomInfo(ctx context.Context, roomID string) (*roomserver.RoomInfo, error)
	Messages(ctx context.Context, req roomserver.MessagesRequest) (*roomserver.MessagesPage, error)
	EventsNearTimestamp(ctx context.Context, roomID string, ts int64, backward bool, limit int) ([]*roomserver.Event, error)
	VisibleToServer(ctx context.Context, server spec.ServerName, events []*roomserver.Event) ([]bool, error)
	ServerAllowed(ctx context.Context, roomID string, server spec.ServerName) bool
	InputEvents(ctx context.Context, events []roomserver.InputEvent) ([]roomserver.InputResult, error)
}

// Limits of a transaction (spec: at most 50 PDUs and 100 EDUs).
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

func (s *Server) roomRoutes(r *mux.Router) {
	r.HandleFunc("/v1/event/{eventID}", s.getEvent).Methods(http.MethodGet)
	r.HandleFunc("/v1/state_ids/{roomID}", s.getStateIDs).Methods(http.MethodGet)
	r.HandleFunc("/v1/state/{roomID}", s.getState).Methods(http.MethodGet)
	r.HandleFunc("/v1/event_auth/{roomID}/{eventID}", s.getEventAuth).Methods(http.MethodGet)
	r.HandleFunc("/v1/send/{txnID}", s.putSend).Methods(http.MethodPut)
	s.historyRoutes(r)
	s.directoryRoutes(r)
}

// checkACL refuses (403 M_FORBIDDEN) an origin denied by the room's m.room.server_acl.
func (s *Server) checkACL(ctx context.Context, roomID string) error {
	if origin := Origin(ctx); !s.rooms.ServerAllowed(ctx, roomID, origin) {
		return httputil.Forbidden("Server %s is denied by the room's server ACL", origin)
	}
	return nil
}

func pathVar(r *http.Request, name string) (string, error) {
	v, err := url.PathUnescape(mux.Vars(r)[name])
	if err != nil || v == "" {
		return "", httputil.InvalidParam("Bad %s", name)
	}
	return v, nil
}

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// hasJoinedMember reports whether state has a joined member on server.
func hasJoinedMember(state []*roomserver.Event, server spec.ServerName) bool {
	for _, ev := range state {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		uid, err := spec.NewUserID(*ev.StateKey(), true)
		if err != nil || uid.Domain() != server {
			continue
		}
		if ev.Membership == spec.Join {
			return true
		}
	}
	return false
}

// originInRoom checks that the requesting server has a joined member in the room, at
// the given event (before or after it) or now; M_FORBIDDEN otherwise.
func (s *Server) originInRoom(ctx context.Context, roomID, eventID string) error {
	origin := Origin(ctx)
	if err := s.checkACL(ctx, roomID); err != nil {
		return err
	}
	if eventID != "" {
		for _, after := range []bool{false, true} {
			st, err := s.rooms.StateAtEvent(ctx, eventID, after)
			if err == nil && hasJoinedMember(st, origin) {
				return nil
			}
		}
	}
	cur, err := s.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return err
	}
	if hasJoinedMember(cur, origin) {
		return nil
	}
	return httputil.Forbidden("Server %s is not in room %s", origin, roomID)
}

// eventInRoom loads an event and checks it belongs to roomID (when given).
func (s *Server) eventInRoom(ctx context.Context, roomID, eventID string) (*roomserver.Event, error) {
	ev, err := s.rooms.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if roomID != "" && ev.RoomID().String() != roomID {
		return nil, httputil.NotFound("Event not found")
	}
	return ev, nil
}

// getEvent is GET /_matrix/federation/v1/event/{eventId}.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	eventID, err := pathVar(r, "eventID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := s.eventInRoom(r.Context(), "", eventID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.originInRoom(r.Context(), ev.RoomID().String(), eventID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{
		"origin": s.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(time.Now()),
		"pdus": []json.RawMessage{ev.JSON()},
	})
}

// stateAndAuth returns the state before eventID in roomID and the auth chain of that
// state, after checking the origin is in the room.
func (s *Server) stateAndAuth(r *http.Request) (state, chain []*roomserver.Event, err error) {
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		return nil, nil, err
	}
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, httputil.MissingParam("event_id is required")
	}
	if _, err := s.eventInRoom(r.Context(), roomID, eventID); err != nil {
		return nil, nil, err
	}
	if err := s.originInRoom(r.Context(), roomID, eventID); err != nil {
		return nil, nil, err
	}
	state, err = s.rooms.StateAtEvent(r.Context(), eventID, false)
	if err != nil {
		return nil, nil, err
	}
	chain, err = s.authChain(r.Context(), state)
	return state, chain, err
}

// authChain returns every event reachable through auth_events from evs (not evs
// themselves unless reachable).
func (s *Server) authChain(ctx context.Context, evs []*roomserver.Event) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	var out []*roomserver.Event
	var next []string
	for _, ev := range evs {
		next = append(next, ev.AuthEventIDs()...)
	}
	for len(next) > 0 {
		var ids []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			break
		}
		found, err := s.rooms.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		next = next[:0]
		for _, id := range ids {
			if ev := found[id]; ev != nil {
				out = append(out, ev)
				next = append(next, ev.AuthEventIDs()...)
			}
		}
	}
	return out, nil
}

func ids(evs []*roomserver.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.EventID())
	}
	return out
}

func pdus(evs []*roomserver.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.JSON())
	}
	return out
}

// getStateIDs is GET /_matrix/federation/v1/state_ids/{roomId}?event_id=...
func (s *Server) getStateIDs(w http.ResponseWriter, r *http.Request) {
	state, chain, err := s.stateAndAuth(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"pdu_ids": ids(state), "auth_chain_ids": ids(chain)})
}

// getState is GET /_matrix/federation/v1/state/{roomId}?event_id=...
func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	state, chain, err := s.stateAndAuth(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"pdus": pdus(state), "auth_chain": pdus(chain)})
}

// getEventAuth is GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}.
func (s *Server) getEventAuth(w http.ResponseWriter, r *http.Request) {
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	eventID, err := pathVar(r, "eventID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := s.eventInRoom(r.Context(), roomID, eventID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.originInRoom(r.Context(), roomID, eventID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	chain, err := s.authChain(r.Context(), []*roomserver.Event{ev})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"auth_chain": pdus(chain)})
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// putSend is PUT /_matrix/federation/v1/send/{txnId}: each PDU is parsed for its
// room's version (content hash checked, redacted if it fails), its signatures checked
// with the key ring, then given to the roomserver; then the EDUs are applied (edus.go).
func (s *Server) putSend(w http.ResponseWriter, r *http.Request) {
	txnID, err := pathVar(r, "txnID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	origin := Origin(r.Context())
	if answer, ok := s.txns.get(string(origin), txnID, time.Now()); ok {
		httputil.WriteResult(w, answer)
		return
	}
	var txn struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
	if err := httputil.DecodeJSON(r, &txn); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if txn.Origin != "" && spec.ServerName(txn.Origin) != origin {
		httputil.WriteError(w, r, httputil.Forbidden("Transaction origin does not match the request's"))
		return
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		httputil.WriteError(w, r, httputil.BadJSON("At most %d PDUs and %d EDUs per transaction", maxTxnPDUs, maxTxnEDUs))
		return
	}
	results := map[string]pduResult{}
	for _, raw := range txn.PDUs {
		id, res := s.receivePDU(r.Context(), origin, raw)
		if id != "" {
			results[id] = res
		}
	}
	s.receiveEDUs(r.Context(), origin, txn.EDUs)
	answer := map[string]any{"pdus": results}
	s.txns.put(string(origin), txnID, answer, time.Now())
	httputil.WriteResult(w, answer)
}

func (s *Server) receivePDU(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (string, pduResult) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", pduResult{}
	}
	ver, err := s.rooms.RoomVersion(ctx, head.RoomID)
	if err != nil {
		// Unknown room: without its version the event ID cannot be computed.
		logrus.WithField("origin", origin).WithField("room_id", head.RoomID).Info("PDU for an unknown room")
		return "", pduResult{}
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return "", pduResult{}
	}
	ev, err := parsePDU(impl, raw)
	if err != nil {
		return "", pduResult{}
	}
	id := ev.EventID()
	if !s.rooms.ServerAllowed(ctx, head.RoomID, origin) {
		logrus.WithField("origin", origin).WithField("room_id", head.RoomID).Info("PDU from a server denied by the room's ACL dropped")
		return id, pduResult{Error: "server is denied by the room's server ACL"}
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keys, userIDForSender); err != nil {
		return id, pduResult{Error: fmt.Sprintf("signature check failed: %v", err)}
	}
	if handled, err := s.outOfBandRescind(ctx, ev); handled {
		if err != nil {
			return id, pduResult{Error: err.Error()}
		}
		return id, pduResult{}
	} else if err != nil {
		return id, pduResult{Error: "could not process event"}
	}
	// Missing prev events: the origin is asked for the gap (/get_missing_events); a
	// pushed event whose gap cannot be closed is refused rather than given a state of
	// the origin's choosing (it would become a forward extremity on its word alone).
	// Then auth events still missing are fetched from the origin (else the event is
	// rejected). The gap comes first: its events (often the auth events too, e.g. a
	// power level change just before) join the timeline, where fetched as auth events
	// first they would be outliers that the gap could not bring into the timeline.
	// (Nothing to fetch for an event we already have, e.g. a retransmission.)
	// An event stored as an outlier (part of the state of our join, a fetched auth
	// event) was accepted into a state already: when it comes as a timeline event, a
	// gap before it is no reason to refuse it; it takes the state before it from the
	// origin. Prev events stored as outliers join the timeline first, the same way.
	stored, err := s.rooms.Events(ctx, []string{id})
	if err != nil {
		return id, pduResult{Error: "could not process event"}
	}
	outlier := stored[id] != nil && stored[id].Outlier
	if have, err := s.knownInTimeline(ctx, []string{id}); err != nil {
		return id, pduResult{Error: "could not process event"}
	} else if !have {
		if ok, err := s.knownInTimeline(ctx, ev.PrevEventIDs()); err != nil {
			return id, pduResult{Error: "could not process event"}
		} else if !ok && !outlier {
			s.fillGap(ctx, origin, ver, ev)
			if err := s.promoteOutlierPrevs(ctx, origin, ver, ev); err != nil {
				return id, pduResult{Error: "could not process event"}
			}
			if ok, err := s.knownInTimeline(ctx, ev.PrevEventIDs()); err != nil {
				return id, pduResult{Error: "could not process event"}
			} else if !ok {
				return id, pduResult{Error: "the event's prev events could not be fetched from the origin"}
			}
		}
		if err := s.fetchMissingAuth(ctx, origin, ver, ev); err != nil {
			var refused *AuthChainError
			if errors.As(err, &refused) {
				// Nothing of the chain was stored, nor is ev: it may come again.
				return id, pduResult{Error: err.Error()}
			}
			return id, pduResult{Error: "could not process event"}
		}
	}
	res, err := s.inputWithState(ctx, origin, ver, roomserver.InputNew, ev)
	if err != nil {
		return id, pduResult{Error: "could not process event"}
	}
	switch {
	case res.Err != nil:
		return id, pduResult{Error: res.Err.Error()}
	case res.Rejected:
		// Processed: a rejected event is stored as such (later events may refer to it)
		// and never shown. As other servers do, that is not an error of the transaction.
		logrus.WithFields(logrus.Fields{"origin": origin, "room_id": head.RoomID, "event_id": id}).Info("PDU rejected by the auth rules")
	}
	return id, pduResult{}
}
