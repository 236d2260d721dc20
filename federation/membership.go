package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomserver/invitefilter"
	"github.com/myelin-chat/myelin/storage"
)

// MembershipRooms is what the membership endpoints (incoming and outgoing) need of the
// roomserver beyond Rooms.
type MembershipRooms interface {
	Rooms
	ServerInRoom(ctx context.Context, roomID string, server spec.ServerName) (bool, error)
	JoinedServers(ctx context.Context, roomID string) ([]spec.ServerName, error)
	// StreamPosition is the position below which every event has committed.
	StreamPosition() int64
	MembershipTemplate(ctx context.Context, roomID, userID, membership string) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error)
	BuildInvite(ctx context.Context, req roomserver.MembershipRequest) (gomatrixserverlib.PDU, error)
	JoinFromState(ctx context.Context, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) (*roomserver.Event, error)
	StoreOutOfBandMembership(ctx context.Context, pdu gomatrixserverlib.PDU) (*roomserver.Event, error)
	MemberContent(ctx context.Context, userID, membership string, extra map[string]any) map[string]any
	Membership(ctx context.Context, roomID, userID string) (string, *roomserver.Event, error)
	CurrentStateEvent(ctx context.Context, roomID, eventType, stateKey string) (*roomserver.Event, error)
	Join(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
	Leave(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
	Invite(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
	Knock(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
}

// membershipRoutes registers make_join/send_join, make_leave/send_leave, invite and
// make_knock/send_knock (spec: server-server API, "Joining rooms" and following).
func (s *Server) membershipRoutes(r *mux.Router) {
	r.HandleFunc("/v1/make_join/{roomID}/{userID}", s.makeMembership(spec.Join)).Methods(http.MethodGet)
	r.HandleFunc("/v1/make_leave/{roomID}/{userID}", s.makeMembership(spec.Leave)).Methods(http.MethodGet)
	r.HandleFunc("/v1/make_knock/{roomID}/{userID}", s.makeMembership(spec.Knock)).Methods(http.MethodGet)
	r.HandleFunc("/v2/send_join/{roomID}/{eventID}", s.sendMembership(spec.Join, false)).Methods(http.MethodPut)
	r.HandleFunc("/v1/send_join/{roomID}/{eventID}", s.sendMembership(spec.Join, true)).Methods(http.MethodPut)
	r.HandleFunc("/v2/send_leave/{roomID}/{eventID}", s.sendMembership(spec.Leave, false)).Methods(http.MethodPut)
	r.HandleFunc("/v1/send_leave/{roomID}/{eventID}", s.sendMembership(spec.Leave, true)).Methods(http.MethodPut)
	r.HandleFunc("/v1/send_knock/{roomID}/{eventID}", s.sendMembership(spec.Knock, false)).Methods(http.MethodPut)
	r.HandleFunc("/v2/invite/{roomID}/{eventID}", s.putInvite).Methods(http.MethodPut)
}

// incompatibleVersion is 400 M_INCOMPATIBLE_ROOM_VERSION with the room's version.
func incompatibleVersion(ver gomatrixserverlib.RoomVersion) error {
	return httputil.NewError(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
		"Your server does not support room version %s", ver).With("room_version", string(ver))
}

// makeMembership is GET /v1/make_{join,leave,knock}/{roomId}/{userId}: a template of the
// membership event for the origin's user, built on the room's latest events.
func (s *Server) makeMembership(membership string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		roomID, err := pathVar(r, "roomID")
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		userID, err := pathVar(r, "userID")
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		uid, err := spec.NewUserID(userID, true)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("Bad user ID %q", userID))
			return
		}
		if uid.Domain() != Origin(ctx) {
			httputil.WriteError(w, r, httputil.Forbidden("The user %s is not on the requesting server", userID))
			return
		}
		ver, err := s.members.RoomVersion(ctx, roomID)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if err := s.checkACL(ctx, roomID); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if membership != spec.Leave {
			supported := r.URL.Query()["ver"]
			if len(supported) == 0 {
				supported = []string{"1"} // the spec's default
			}
			if !slices.Contains(supported, string(ver)) {
				httputil.WriteError(w, r, incompatibleVersion(ver))
				return
			}
		}
		proto, ver, err := s.members.MembershipTemplate(ctx, roomID, userID, membership)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteResult(w, map[string]any{"event": proto, "room_version": ver})
	}
}

// checkMembershipEvent parses a membership event sent by origin for roomID/eventID and
// checks what every send_* and invite needs: it is the event the path names, of the
// expected membership, about a user of senderServer.
func checkMembershipEvent(raw []byte, ver gomatrixserverlib.RoomVersion, roomID, eventID, membership string) (gomatrixserverlib.PDU, error) {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, incompatibleVersion(ver)
	}
	ev, err := impl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, httputil.BadJSON("Bad event: %v", err)
	}
	if ev.EventID() != eventID {
		return nil, httputil.BadJSON("The event's ID is %s, not %s", ev.EventID(), eventID)
	}
	if ev.RoomID().String() != roomID {
		return nil, httputil.BadJSON("The event is not in room %s", roomID)
	}
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return nil, httputil.BadJSON("Not an m.room.member event")
	}
	if m, err := ev.Membership(); err != nil || m != membership {
		return nil, httputil.BadJSON("The event's membership is not %s", membership)
	}
	return ev, nil
}

// sendMembership is PUT /v{1,2}/send_{join,leave,knock}/{roomId}/{eventId}: the origin's
// signed membership event, built from a make_* template, enters the room.
func (s *Server) sendMembership(membership string, v1 bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := s.acceptMembership(r, membership)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if v1 {
			// v1 answers [200, body] (kept for servers that still use it).
			httputil.WriteJSON(w, http.StatusOK, []any{http.StatusOK, body})
			return
		}
		httputil.WriteResult(w, body)
	}
}

func (s *Server) acceptMembership(r *http.Request, membership string) (any, error) {
	ctx := r.Context()
	start := time.Now()
	origin := Origin(ctx)
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		return nil, err
	}
	eventID, err := pathVar(r, "eventID")
	if err != nil {
		return nil, err
	}
	ver, err := s.members.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if err := s.checkACL(ctx, roomID); err != nil {
		return nil, err
	}
	raw, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	ev, err := checkMembershipEvent(raw, ver, roomID, eventID, membership)
	if err != nil {
		return nil, err
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		return nil, httputil.Forbidden("The event must be sent by a user of the sending server")
	}
	// A join, leave or knock is always about its own sender; one naming someone else is
	// malformed rather than unauthorised (400, as the spec's send_* endpoints describe).
	if *ev.StateKey() != sender.String() {
		return nil, httputil.BadJSON("The event's state_key must be its sender")
	}
	if in, err := s.members.ServerInRoom(ctx, roomID, spec.ServerName(s.cfg.ServerName)); err != nil {
		return nil, err
	} else if !in {
		return nil, httputil.NotFound("This server is not in room %s", roomID)
	}
	// A restricted join authorised by one of our users needs our signature.
	signed := false
	if membership == spec.Join {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		if u, err := spec.NewUserID(c.Via, true); err == nil && string(u.Domain()) == s.cfg.ServerName {
			if ev, err = s.countersign(ev); err != nil {
				return nil, err
			}
			signed = true
		}
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keys, userIDForSender); err != nil {
		return nil, httputil.Forbidden("Signature check failed: %v", err)
	}
	// The origin gave the event to us only: our sender sends it to the rest of the room.
	if err := storage.MarkSendOnBehalf(ctx, s.db, ev.EventID(), string(origin)); err != nil {
		return nil, err
	}
	res, err := s.members.InputEvents(ctx, []roomserver.InputEvent{{Kind: roomserver.InputNew, Event: ev}})
	if err != nil {
		return nil, err
	}
	switch {
	case len(res) != 1:
		return nil, httputil.Unknown("The event was not processed")
	case res[0].Err != nil:
		return nil, httputil.BadJSON("The event cannot be accepted: %v", res[0].Err)
	case res[0].Rejected || res[0].SoftFailed:
		return nil, httputil.Forbidden("The %s is not allowed by the room's state", membership)
	}
	logrus.WithFields(logrus.Fields{"room_id": roomID, "origin": origin, "user_id": sender.String(),
		"input_ms": time.Since(start).Milliseconds()}).Info("remote " + membership)
	switch membership {
	case spec.Join:
		state, err := s.members.StateAtEvent(ctx, eventID, false)
		if err != nil {
			return nil, err
		}
		chain, err := s.authChain(ctx, append(slices.Clone(state), res[0].Event))
		if err != nil {
			return nil, err
		}
		servers, err := s.members.JoinedServers(ctx, roomID)
		if err != nil {
			return nil, err
		}
		body := map[string]any{
			"origin": s.cfg.ServerName, "state": pdus(state), "auth_chain": pdus(chain),
			"members_omitted": false, "servers_in_room": servers,
		}
		if signed {
			body["event"] = json.RawMessage(ev.JSON())
		}
		return body, nil
	case spec.Knock:
		state, err := s.strippedState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		return map[string]any{"knock_room_state": state}, nil
	}
	return struct{}{}, nil
}

// strippedTypes are the state events given with invites and knocks.
var strippedTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar",
	spec.MRoomCanonicalAlias, "m.room.encryption", "m.room.topic"}

// strippedState returns the state of a room that invitees and knockers see, as full
// events: invite_room_state and knock_room_state hold events in the room version's
// format since v1.16 (MSC4311); receivers strip them for their clients.
func (s *Server) strippedState(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	for _, t := range strippedTypes {
		ev, err := s.members.CurrentStateEvent(ctx, roomID, t, "")
		if err != nil {
			return nil, err
		}
		if ev != nil {
			out = append(out, json.RawMessage(ev.JSON()))
		}
	}
	return out, nil
}

// putInvite is PUT /v2/invite/{roomId}/{eventId}: another server invites one of our
// users. We countersign the invite and keep it so the user sees it in /sync (with the
// stripped state the inviting server sent).
func (s *Server) putInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	signed, err := s.acceptInvite(ctx, r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"event": json.RawMessage(signed.JSON())})
}

func (s *Server) acceptInvite(ctx context.Context, r *http.Request) (gomatrixserverlib.PDU, error) {
	origin := Origin(ctx)
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		return nil, err
	}
	eventID, err := pathVar(r, "eventID")
	if err != nil {
		return nil, err
	}
	if err := s.checkACL(ctx, roomID); err != nil {
		return nil, err
	}
	var body struct {
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		Event           json.RawMessage               `json:"event"`
		InviteRoomState []json.RawMessage             `json:"invite_room_state"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomVersion == "" {
		body.RoomVersion = gomatrixserverlib.RoomVersionV1
	}
	if _, err := gomatrixserverlib.GetRoomVersion(body.RoomVersion); err != nil {
		return nil, incompatibleVersion(body.RoomVersion)
	}
	if known, err := s.members.RoomVersion(ctx, roomID); err == nil && known != body.RoomVersion {
		return nil, httputil.BadJSON("Room %s has version %s", roomID, known)
	}
	ev, err := checkMembershipEvent(body.Event, body.RoomVersion, roomID, eventID, spec.Invite)
	if err != nil {
		return nil, err
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		return nil, httputil.Forbidden("The invite must be sent by a user of the sending server")
	}
	target, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || string(target.Domain()) != s.cfg.ServerName {
		return nil, httputil.BadJSON("The invited user is not on this server")
	}
	if exists, err := storage.AccountExists(ctx, s.db, target.String()); err != nil {
		return nil, err
	} else if !exists {
		return nil, httputil.NotFound("Unknown user %s", target.String())
	}
	if err := invitefilter.Check(ctx, s.db, target.String(), string(ev.SenderID())); err != nil {
		return nil, err
	}
	if ev, err = s.countersign(ev); err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keys, userIDForSender); err != nil {
		return nil, httputil.Forbidden("Signature check failed: %v", err)
	}
	in, err := s.members.ServerInRoom(ctx, roomID, spec.ServerName(s.cfg.ServerName))
	if err != nil {
		return nil, err
	}
	if in {
		// We are in the room: the invite is a room event like any other (it also comes
		// through /send; if its prev events are not known here, that path fetches them).
		res, err := s.members.InputEvents(ctx, []roomserver.InputEvent{{Kind: roomserver.InputNew, Event: ev}})
		if err != nil {
			return nil, err
		}
		if len(res) == 1 && (res[0].Rejected || res[0].SoftFailed) {
			return nil, httputil.Forbidden("The invite is not allowed by the room's state")
		}
		return ev, nil
	}
	stored := ev
	if len(body.InviteRoomState) > 0 {
		if withState, err := ev.SetUnsigned(map[string]any{"invite_room_state": body.InviteRoomState}); err == nil {
			stored = withState
		}
	}
	if _, err := s.members.StoreOutOfBandMembership(ctx, stored); err != nil {
		return nil, err
	}
	logrus.WithFields(logrus.Fields{"room_id": roomID, "origin": origin, "user_id": target.String()}).Info("remote invite")
	return ev, nil
}

// outOfBandRescind handles a PDU that ends the invite of a local user to a room this
// server is not in (so the event cannot be checked against the room's state): the
// inviter withdrawing the invite (a kick of the invitee, "rescinding" it). It is stored
// out of band, as the invite was, so the user's client sees the invite end. Only the
// user who sent the invite may end it this way; anything else about a room we are not
// in is left to the usual path. handled reports whether the PDU was dealt with here.
func (s *Server) outOfBandRescind(ctx context.Context, ev gomatrixserverlib.PDU) (handled bool, err error) {
	if s.members == nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return false, nil
	}
	target, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || target.Domain() != spec.ServerName(s.cfg.ServerName) {
		return false, nil
	}
	var content struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(ev.Content(), &content) != nil || content.Membership != spec.Leave {
		return false, nil
	}
	roomID := ev.RoomID().String()
	if in, err := s.members.ServerInRoom(ctx, roomID, spec.ServerName(s.cfg.ServerName)); err != nil || in {
		return false, err
	}
	cur, invite, err := s.members.Membership(ctx, roomID, *ev.StateKey())
	if err != nil || cur != spec.Invite || invite == nil {
		return false, nil
	}
	if string(invite.SenderID()) != string(ev.SenderID()) {
		return true, httputil.Forbidden("Only the inviter can withdraw an invite to a room this server is not in")
	}
	if _, err := s.members.StoreOutOfBandMembership(ctx, ev); err != nil {
		return true, err
	}
	logrus.WithFields(logrus.Fields{"room_id": roomID, "user_id": *ev.StateKey(), "sender": ev.SenderID()}).Info("invite withdrawn")
	return true, nil
}

// countersign adds this server's signature to another server's event.
//
// gomatrixserverlib's PDU.Sign cannot be used alone: for room version 12 it returns the
// event as the room version 3-11 type (its v12 event type embeds that one, whose Sign
// it inherits), which drops the create event that v12 auth_events imply, so the
// signed event would fail auth ("create event has different roomID"). The signed JSON
// is parsed again for the event's room version.
func (s *Server) countersign(ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	signed := ev.Sign(s.cfg.ServerName, s.key.ID, s.key.Private)
	verImpl, err := gomatrixserverlib.GetRoomVersion(ev.Version())
	if err != nil {
		return nil, err
	}
	out, err := verImpl.NewEventFromTrustedJSON(signed.JSON(), false)
	if err != nil {
		return nil, fmt.Errorf("countersign %s: %w", ev.EventID(), err)
	}
	return out, nil
}
