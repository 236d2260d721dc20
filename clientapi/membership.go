package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// targetBody is the body of invite, kick, ban and unban.
type targetBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func decodeTarget(r *http.Request) (*targetBody, error) {
	var b targetBody
	if err := httputil.DecodeJSON(r, &b); err != nil {
		return nil, err
	}
	if b.UserID == "" {
		return nil, httputil.MissingParam("user_id is required")
	}
	if _, err := spec.NewUserID(b.UserID, true); err != nil {
		return nil, httputil.InvalidParam("Invalid user ID %q", b.UserID)
	}
	return &b, nil
}

type membershipFunc func(context.Context, roomserver.MembershipRequest) (*roomserver.Event, error)

// Memberships changes the memberships of local users, through other servers when the
// room is not here (federation implements it; see federation.Memberships).
type Memberships interface {
	Join(ctx context.Context, req roomserver.MembershipRequest, via []string) (*roomserver.Event, error)
	Leave(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
	Invite(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error)
	Knock(ctx context.Context, req roomserver.MembershipRequest, via []string) (*roomserver.Event, error)
	// ResolveAlias asks the alias's server for its room ID and servers to join through.
	ResolveAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
}

// localMemberships is Memberships without federation: rooms of this server only.
type localMemberships struct{ rooms *roomserver.Roomserver }

func (l localMemberships) Join(ctx context.Context, req roomserver.MembershipRequest, _ []string) (*roomserver.Event, error) {
	return l.rooms.Join(ctx, req)
}
func (l localMemberships) Leave(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error) {
	return l.rooms.Leave(ctx, req)
}
func (l localMemberships) Invite(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error) {
	return l.rooms.Invite(ctx, req)
}
func (l localMemberships) Knock(ctx context.Context, req roomserver.MembershipRequest, _ []string) (*roomserver.Event, error) {
	return l.rooms.Knock(ctx, req)
}
func (l localMemberships) ResolveAlias(_ context.Context, alias string) (string, []string, error) {
	return "", nil, httputil.NotFound("Room alias %s is not on this server and cannot be resolved", alias)
}

// targetHandler builds the handler of an endpoint acting on another user.
func (s *Server) targetHandler(pick func() membershipFunc) handlerFunc {
	return func(r *http.Request) (any, error) {
		b, err := decodeTarget(r)
		if err != nil {
			return nil, err
		}
		d := requestDevice(r)
		if _, err := pick()(r.Context(), roomserver.MembershipRequest{
			RoomID: pathVar(r, "roomId"), Sender: d.UserID, Target: b.UserID, Reason: b.Reason, DeviceID: d.DeviceID,
		}); err != nil {
			return nil, sendError(err)
		}
		return struct{}{}, nil
	}
}

func (s *Server) postInvite(r *http.Request) (any, error) {
	return s.targetHandler(func() membershipFunc { return s.members.Invite })(r)
}
func (s *Server) postKick(r *http.Request) (any, error) {
	return s.targetHandler(func() membershipFunc { return s.rooms.Kick })(r)
}
func (s *Server) postBan(r *http.Request) (any, error) {
	return s.targetHandler(func() membershipFunc { return s.rooms.Ban })(r)
}
func (s *Server) postUnban(r *http.Request) (any, error) {
	return s.targetHandler(func() membershipFunc { return s.rooms.Unban })(r)
}

type reasonBody struct {
	Reason string `json:"reason"`
}

// joinContentReserved are join body keys that do not go into the member event: the
// server sets them (or, for third_party_signed, checks them).
var joinContentReserved = map[string]bool{
	"reason": true, "membership": true, "third_party_signed": true, "join_authorised_via_users_server": true,
}

// joinRoom joins the requesting user to roomID (through the via servers when the room
// is on other servers). Other keys of the body than reason go into the member event's
// content, as Synapse does (clients set custom member fields).
func (s *Server) joinRoom(r *http.Request, roomID string, via []string) (any, error) {
	var b reasonBody
	var all map[string]any
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := httputil.UnmarshalBody(body, &b); err != nil {
		return nil, err
	}
	if err := httputil.UnmarshalBody(body, &all); err != nil {
		return nil, err
	}
	extra := map[string]any{}
	for k, v := range all {
		if !joinContentReserved[k] {
			extra[k] = v
		}
	}
	d := requestDevice(r)
	if _, err := s.members.Join(r.Context(), roomserver.MembershipRequest{
		RoomID: roomID, Sender: d.UserID, Reason: b.Reason, DeviceID: d.DeviceID, Content: extra,
	}, via); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// postJoinRoomID is POST /rooms/{roomId}/join.
func (s *Server) postJoinRoomID(r *http.Request) (any, error) {
	return s.joinRoom(r, pathVar(r, "roomId"), nil)
}

// viaServers returns the via (and deprecated server_name) query parameters.
func viaServers(r *http.Request) []string {
	q := r.URL.Query()
	return append(append([]string{}, q["via"]...), q["server_name"]...)
}

// resolveForJoin resolves {roomIdOrAlias} of /join and /knock to a room ID and the
// servers to try when the room is elsewhere: the via parameters, then those the alias's
// server named.
func (s *Server) resolveForJoin(r *http.Request) (string, []string, error) {
	idOrAlias := pathVar(r, "roomIdOrAlias")
	via := viaServers(r)
	if strings.HasPrefix(idOrAlias, "#") {
		local, err := s.parseAlias(idOrAlias)
		if err != nil {
			return "", nil, err
		}
		if !local {
			roomID, servers, err := s.members.ResolveAlias(r.Context(), idOrAlias)
			if err != nil {
				return "", nil, err
			}
			return roomID, append(via, servers...), nil
		}
	}
	roomID, err := s.resolveRoomIDOrAlias(r.Context(), idOrAlias)
	return roomID, via, err
}

// postJoin is POST /join/{roomIdOrAlias}?via=...
func (s *Server) postJoin(r *http.Request) (any, error) {
	roomID, via, err := s.resolveForJoin(r)
	if err != nil {
		return nil, err
	}
	return s.joinRoom(r, roomID, via)
}

// postKnock is POST /knock/{roomIdOrAlias}?via=...
func (s *Server) postKnock(r *http.Request) (any, error) {
	roomID, via, err := s.resolveForJoin(r)
	if err != nil {
		return nil, err
	}
	var b reasonBody
	if err := httputil.DecodeJSON(r, &b); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	if _, err := s.members.Knock(r.Context(), roomserver.MembershipRequest{
		RoomID: roomID, Sender: d.UserID, Reason: b.Reason, DeviceID: d.DeviceID,
	}, via); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// postLeave is POST /rooms/{roomId}/leave.
func (s *Server) postLeave(r *http.Request) (any, error) {
	var b reasonBody
	if err := httputil.DecodeJSON(r, &b); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	// The invite to one's server notice room cannot be rejected (joining, then
	// leaving, is allowed).
	if blocked, err := s.isServerNoticeInvite(r.Context(), d.UserID, pathVar(r, "roomId")); err != nil {
		return nil, err
	} else if blocked {
		return nil, httputil.NewError(http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", "You cannot reject this invite")
	}
	if _, err := s.members.Leave(r.Context(), roomserver.MembershipRequest{
		RoomID: pathVar(r, "roomId"), Sender: d.UserID, Reason: b.Reason, DeviceID: d.DeviceID,
	}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// postForget is POST /rooms/{roomId}/forget.
func (s *Server) postForget(r *http.Request) (any, error) {
	d := requestDevice(r)
	if err := s.rooms.Forget(r.Context(), pathVar(r, "roomId"), d.UserID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getJoinedRooms is GET /joined_rooms.
func (s *Server) getJoinedRooms(r *http.Request) (any, error) {
	rooms, err := s.rooms.JoinedRooms(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string][]string{"joined_rooms": rooms}, nil
}

// parseAt reads the "at" parameter of /members: a pagination token of /messages or a
// stream position (as /sync's next_batch carries it, optionally prefixed with "s").
// The prev_batch of a /sync timeline that starts with the room's create event names
// the point before the room existed, where there are no members; it carries the
// position of that /sync answer, and the members there are the answer (as Synapse,
// whose prev_batch for such a timeline is the answer's position).
func parseAt(at string) (int64, error) {
	if p, err := roomserver.ParsePosition(at); err == nil {
		if p.SyncStream > 0 {
			return p.SyncStream, nil
		}
		return max(p.Stream, 1), nil
	}
	digits := strings.TrimPrefix(at, "s")
	if i := strings.IndexAny(digits, "_."); i > 0 {
		digits = digits[:i]
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("Invalid at token %q", at)
	}
	return max(n, 1), nil
}

// getMembers is GET /rooms/{roomId}/members.
func (s *Server) getMembers(r *http.Request) (any, error) {
	roomID := pathVar(r, "roomId")
	q := r.URL.Query()
	d := requestDevice(r)
	req := roomserver.MembersRequest{RoomID: roomID, Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{req.Membership, req.NotMembership} {
		switch m {
		case "", spec.Join, spec.Invite, spec.Knock, spec.Leave, spec.Ban:
		default:
			return nil, httputil.InvalidParam("Unknown membership %q", m)
		}
	}
	if at := q.Get("at"); at != "" {
		n, err := parseAt(at)
		if err != nil {
			return nil, err
		}
		req.AtStream = n
	}
	v, err := s.stateViewFor(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if v.atEvent != "" {
		// A user who left sees the members as they were when they left.
		if req.AtStream == 0 || req.AtStream > v.memberEv.StreamPos {
			req.AtStream = v.memberEv.StreamPos
		}
	}
	evs, err := s.rooms.Members(r.Context(), req)
	if err != nil {
		return nil, err
	}
	chunk, err := s.formatter(d.UserID, d.DeviceID, filter.FormatClient).events(r.Context(), evs)
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": chunk}, nil
}

// getJoinedMembers is GET /rooms/{roomId}/joined_members.
func (s *Server) getJoinedMembers(r *http.Request) (any, error) {
	roomID := pathVar(r, "roomId")
	d := requestDevice(r)
	v, err := s.stateViewFor(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if v.atEvent != "" {
		// Only current members (or anyone, in world_readable rooms) list the joined members.
		return nil, httputil.Forbidden("You aren't a member of the room")
	}
	req := roomserver.MembersRequest{RoomID: roomID, Membership: spec.Join}
	evs, err := s.rooms.Members(r.Context(), req)
	if err != nil {
		return nil, err
	}
	type member struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	joined := make(map[string]member, len(evs))
	for _, ev := range evs {
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		joined[*ev.StateKey()] = member{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

// updateMemberProfiles sends a new m.room.member event with the user's current
// displayname and avatar_url into every room the user is joined to.
func (s *Server) updateMemberProfiles(ctx context.Context, userID string) {
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Warn("profile change: listing joined rooms")
		return
	}
	for _, roomID := range rooms {
		if _, err := s.rooms.Join(ctx, roomserver.MembershipRequest{RoomID: roomID, Sender: userID}); err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"user_id": userID, "room_id": roomID}).Warn("profile change: updating member event")
		}
	}
}
