package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Memberships changes the memberships of local users, through other servers when the
// room is not (or not only) here: joins with make_join/send_join, leaves and invite
// rejections with make_leave/send_leave, invites of remote users with /invite, knocks
// with make_knock/send_knock. Rooms this server is in are changed locally.
type Memberships struct {
	s *Server
}

// Memberships returns the membership component (nil when the roomserver given to
// NewServer cannot take part in federated memberships).
func (s *Server) Memberships() *Memberships {
	if s.members == nil {
		return nil
	}
	return &Memberships{s: s}
}

func (m *Memberships) us() spec.ServerName { return spec.ServerName(m.s.cfg.ServerName) }

// candidates returns the servers to try for a room, in order, without us and duplicates.
func (m *Memberships) candidates(roomID string, first []string, more ...spec.ServerName) []spec.ServerName {
	seen := map[spec.ServerName]bool{m.us(): true}
	var out []spec.ServerName
	add := func(s spec.ServerName) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range first {
		add(spec.ServerName(s))
	}
	named := len(out) > 0
	for _, s := range more {
		add(s)
	}
	// Room IDs of room versions before 12 name the server that created the room: a last
	// resort when the client named no servers (those it names are the ones to use).
	if i := strings.IndexByte(roomID, ':'); i > 0 && !named {
		add(spec.ServerName(roomID[i+1:]))
	}
	return out
}

// remoteError turns an error of a request to another server into what the client sees:
// the other server's Matrix error when it gave one, else 502 M_UNKNOWN.
func remoteError(server spec.ServerName, err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var me struct {
			Errcode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(he.Contents, &me) == nil && me.Errcode != "" && he.Code >= 400 && he.Code < 500 {
			return httputil.NewError(he.Code, me.Errcode, "%s: %s", server, me.Error)
		}
	}
	var fe *gomatrixserverlib.FederationError
	if errors.As(err, &fe) && fe.Err != nil {
		return remoteError(server, fe.Err)
	}
	var hte *httputil.Error
	if errors.As(err, &hte) {
		return hte
	}
	return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not reach %s: %v", server, err)
}

func (m *Memberships) enabled() error {
	if !m.s.cfg.Federation.Enabled {
		return httputil.NotFound("The room is not known to this server and federation is off")
	}
	return nil
}

// joinClient adapts Client to gomatrixserverlib.FederatedJoinClient.
type joinClient struct{ c *Client }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := j.c.FederationClient.MakeJoin(ctx, origin, s, roomID, userID)
	return &res, err
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	res, err := j.c.FederationClient.SendJoin(ctx, origin, s, event)
	return &res, err
}

// Join joins req.Sender to the room: locally when this server is in the room, else
// through the first of via (then the room ID's server, then the server of an invite or
// knock the user has) that accepts it. The send_join answer is checked (signatures,
// hashes, auth of every event and of the join against the state) before the room is
// stored.
func (m *Memberships) Join(ctx context.Context, req roomserver.MembershipRequest, via []string) (*roomserver.Event, error) {
	in, err := m.s.members.ServerInRoom(ctx, req.RoomID, m.us())
	if err != nil {
		return nil, err
	}
	if in {
		ev, err := m.s.members.Join(ctx, req)
		var me spec.MatrixError
		if err == nil || !errors.As(err, &me) || me.ErrCode != spec.ErrorUnableToAuthoriseJoin || m.enabled() != nil {
			return ev, err
		}
		// A restricted room none of our members may authorise joins to: a server of the
		// room with such a member builds the join (make_join/send_join), as the spec
		// has the joining server do when it cannot authorise the join itself.
		servers, serr := m.s.members.JoinedServers(ctx, req.RoomID)
		if serr != nil {
			return nil, serr
		}
		others := m.candidates("", via, servers...)
		if len(others) == 0 {
			return nil, err
		}
		// The user may have joined the allowed room here a moment ago: the server asked
		// must have that join to authorise this one, so ours go out first.
		m.waitDelivered(ctx, others[0], m.s.members.StreamPosition())
		// Our copy may lag behind (a power-level change that lets one of our members
		// invite, not delivered yet): caught up, the join is preferably our own.
		m.catchUp(ctx, req, others[0])
		if ev, err := m.s.members.Join(ctx, req); err == nil || !errors.As(err, &me) || me.ErrCode != spec.ErrorUnableToAuthoriseJoin {
			return ev, err
		}
		return m.remoteJoin(ctx, req, others, true)
	}
	if err := m.enabled(); err != nil {
		return nil, err
	}
	servers := m.candidates(req.RoomID, via, m.membershipServer(ctx, req.RoomID, req.Sender))
	if len(servers) == 0 {
		return nil, httputil.NotFound("No known server to join room %s through", req.RoomID)
	}
	return m.remoteJoin(ctx, req, servers, false)
}

// catchUp stores the events of the room that server has and we lack, up to the latest
// ones its make_join template is built on (prev_events): each is fetched (/event) after
// the gap before it (/get_missing_events). Failures are logged: the join goes on.
func (m *Memberships) catchUp(ctx context.Context, req roomserver.MembershipRequest, server spec.ServerName) {
	log := logrus.WithFields(logrus.Fields{"room_id": req.RoomID, "server": server})
	res, err := m.s.client.FederationClient.MakeJoin(ctx, m.us(), server, req.RoomID, req.Sender)
	if err != nil {
		log.WithError(err).Info("join: make_join to catch up failed")
		return
	}
	var missing []string
	for _, id := range prevEventIDs(res.JoinEvent.PrevEvents) {
		if have, err := m.s.knownInTimeline(ctx, []string{id}); err != nil {
			log.WithError(err).Warn("join: reading our copy of the room to catch up")
			return
		} else if !have {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	ver := res.RoomVersion
	evs := m.s.fetchEvents(ctx, server, ver, req.RoomID, missing)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	for _, ev := range evs {
		m.s.fillGap(ctx, server, ver, ev)
		if r, err := m.s.inputPulled(ctx, server, ver, ev); err != nil || r.Err != nil {
			log.WithField("event_id", ev.EventID()).WithError(errors.Join(err, r.Err)).Info("join: event not stored while catching up")
		}
	}
	have, _ := m.s.knownInTimeline(ctx, missing)
	log.WithFields(logrus.Fields{"missing": len(missing), "caught_up": have}).Info("join: caught up with the room before joining")
}

// prevEventIDs reads the prev_events of an event template: event IDs, or (room
// versions 1 and 2) [event ID, hashes] pairs.
func prevEventIDs(prev any) []string {
	list, _ := prev.([]any)
	var out []string
	for _, p := range list {
		switch v := p.(type) {
		case string:
			out = append(out, v)
		case []any:
			if len(v) > 0 {
				if id, ok := v[0].(string); ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// deliveryWait bounds how long a join waits for the federation sender (waitDelivered).
var deliveryWait = 3 * time.Second

// waitDelivered waits until the federation sender has queued the events before stream
// position pos and delivered to server what it had queued for it then, or deliveryWait
// passed (a server that is down gets its queue later; the caller goes on regardless).
func (m *Memberships) waitDelivered(ctx context.Context, server spec.ServerName, pos int64) {
	ctx, cancel := context.WithTimeout(ctx, deliveryWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last int64 = -1 // the newest item queued for server once pos was queued
	for {
		if last < 0 {
			queued, ok, err := storage.FederationSenderPosition(ctx, m.s.db, storage.FederationSenderEvents)
			if err != nil || !ok {
				return
			}
			if queued >= pos {
				if last, err = storage.LastFederationQueued(ctx, m.s.db, string(server)); err != nil {
					return
				}
			}
		}
		if last >= 0 {
			items, err := storage.PeekFederationQueue(ctx, m.s.db, string(server), 1)
			if err != nil || len(items) == 0 || items[0].ID > last {
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			logrus.WithFields(logrus.Fields{"server": server, "stream_pos": pos}).Info("join: the federation queue to the server did not drain in time")
			return
		}
	}
}

// remoteJoin joins through the first of servers that lets us (make_join, send_join).
// When this server is in the room already (inRoom) the join event enters our copy of
// the room like any other event; otherwise the room is stored from the send_join state.
func (m *Memberships) remoteJoin(ctx context.Context, req roomserver.MembershipRequest, servers []spec.ServerName, inRoom bool) (*roomserver.Event, error) {
	uid, err := spec.NewUserID(req.Sender, true)
	if err != nil {
		return nil, httputil.InvalidParam("Bad user ID %q", req.Sender)
	}
	rid, err := spec.NewRoomID(req.RoomID)
	if err != nil {
		return nil, httputil.InvalidParam("Bad room ID %q", req.RoomID)
	}
	extra := map[string]any{}
	for k, v := range req.Content {
		extra[k] = v
	}
	if req.Reason != "" {
		extra["reason"] = req.Reason
	}
	content := m.s.members.MemberContent(ctx, req.Sender, spec.Join, extra)
	var lastErr error
	for _, server := range servers {
		start := time.Now()
		resp, ferr := gomatrixserverlib.PerformJoin(ctx, joinClient{m.s.client}, gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: server, Content: content,
			PrivateKey: m.s.key.Private, KeyID: m.s.key.ID, KeyRing: m.s.keys,
			EventProvider: m.eventProvider(ctx, server), UserIDQuerier: userIDForSender,
		})
		if ferr != nil {
			logrus.WithError(ferr).WithFields(logrus.Fields{"room_id": req.RoomID, "server": server}).Info("remote join failed")
			lastErr = remoteError(server, ferr)
			continue
		}
		joined := time.Since(start)
		ver := resp.JoinEvent.Version()
		if inRoom {
			res, err := m.s.inputWithState(ctx, server, ver, roomserver.InputNew, resp.JoinEvent)
			switch {
			case err != nil:
				return nil, fmt.Errorf("store join to room %s made through %s: %w", req.RoomID, server, err)
			case res.Err != nil:
				return nil, fmt.Errorf("store join to room %s made through %s: %w", req.RoomID, server, res.Err)
			case res.Rejected || res.SoftFailed || res.Event == nil:
				return nil, httputil.Forbidden("The join made through %s does not fit this server's copy of the room", server)
			}
			logrus.WithFields(logrus.Fields{"room_id": req.RoomID, "server": server, "user_id": req.Sender,
				"join_ms": joined.Milliseconds()}).Info("joined room through another server")
			return res.Event, nil
		}
		state := resp.StateSnapshot.GetStateEvents().UntrustedEvents(ver)
		chain := resp.StateSnapshot.GetAuthEvents().UntrustedEvents(ver)
		ev, err := m.s.members.JoinFromState(ctx, resp.JoinEvent, state, chain)
		if err != nil {
			return nil, fmt.Errorf("store room %s joined through %s: %w", req.RoomID, server, err)
		}
		logrus.WithFields(logrus.Fields{"room_id": req.RoomID, "server": server, "user_id": req.Sender,
			"state_events": len(state), "join_ms": joined.Milliseconds(), "store_ms": (time.Since(start) - joined).Milliseconds()}).Info("joined remote room")
		return ev, nil
	}
	return nil, lastErr
}

// eventProvider fetches events missing from a send_join answer from the server.
func (m *Memberships) eventProvider(ctx context.Context, server spec.ServerName) gomatrixserverlib.EventProvider {
	return func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		impl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			txn, err := m.s.client.GetEvent(ctx, m.us(), server, id)
			if err != nil {
				return nil, err
			}
			for _, raw := range txn.PDUs {
				ev, err := impl.NewEventFromUntrustedJSON(raw)
				if err != nil {
					return nil, err
				}
				if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, m.s.keys, userIDForSender); err != nil {
					return nil, err
				}
				out = append(out, ev)
			}
		}
		return out, nil
	}
}

// membershipServer returns the server of whoever sent the user's current membership
// event of a room (the inviter), "" when there is none.
func (m *Memberships) membershipServer(ctx context.Context, roomID, userID string) spec.ServerName {
	_, ev, err := m.s.members.Membership(ctx, roomID, userID)
	if err != nil || ev == nil {
		return ""
	}
	if u, err := spec.NewUserID(string(ev.SenderID()), true); err == nil {
		return u.Domain()
	}
	return ""
}

// Leave makes req.Sender leave the room, reject an invite or withdraw a knock. In a
// room this server is in, the leave is a local event, except when the user is our last
// joined member: then it goes through make_leave/send_leave to another server of the
// room, which will not hear of it otherwise once we are out. Invites and knocks of
// rooms we are not in are answered through the inviting (or the room's) server.
func (m *Memberships) Leave(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error) {
	cur, _, err := m.s.members.Membership(ctx, req.RoomID, req.Sender)
	if err != nil {
		return nil, err
	}
	in, err := m.s.members.ServerInRoom(ctx, req.RoomID, m.us())
	if err != nil {
		return nil, err
	}
	if in {
		if cur != spec.Join || !m.s.cfg.Federation.Enabled {
			return m.s.members.Leave(ctx, req)
		}
		servers, err := m.s.members.JoinedServers(ctx, req.RoomID)
		if err != nil {
			return nil, err
		}
		others := m.candidates("", nil, servers...)
		last, err := m.lastLocalMember(ctx, req.RoomID, req.Sender)
		if err != nil {
			return nil, err
		}
		if len(others) == 0 || !last {
			return m.s.members.Leave(ctx, req)
		}
		ev, err := m.remoteLeave(ctx, req, others)
		if err == nil {
			res, ierr := m.s.members.InputEvents(ctx, []roomserver.InputEvent{{Kind: roomserver.InputNew, Event: ev}})
			if ierr == nil && len(res) == 1 && res[0].Err == nil && !res[0].Rejected && !res[0].SoftFailed {
				return res[0].Event, nil
			}
		}
		// The other servers could not be reached or the leave does not fit our copy of
		// the room: leave locally (the sender delivers it later).
		return m.s.members.Leave(ctx, req)
	}
	if cur != spec.Invite && cur != spec.Knock && cur != spec.Join {
		return nil, httputil.Forbidden("You are not in the room")
	}
	if err := m.enabled(); err != nil {
		return nil, err
	}
	servers := m.candidates(req.RoomID, nil, m.membershipServer(ctx, req.RoomID, req.Sender))
	ev, err := m.remoteLeave(ctx, req, servers)
	if err != nil {
		if cur == spec.Join {
			return nil, err
		}
		// No server of the room takes the rejection (gone, or refusing): reject locally
		// so the user is not stuck with the invite or knock.
		logrus.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "user_id": req.Sender}).Info("rejecting locally")
		if ev, err = m.localRejection(ctx, req); err != nil {
			return nil, err
		}
	}
	return m.s.members.StoreOutOfBandMembership(ctx, ev)
}

// localRejection builds a leave of req.Sender that follows their current (invite or
// knock) membership event, for this server only: the room's servers never see it.
func (m *Memberships) localRejection(ctx context.Context, req roomserver.MembershipRequest) (gomatrixserverlib.PDU, error) {
	_, cur, err := m.s.members.Membership(ctx, req.RoomID, req.Sender)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, httputil.Forbidden("You are not in the room")
	}
	content := map[string]any{"membership": spec.Leave}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	sk := req.Sender
	proto := gomatrixserverlib.ProtoEvent{SenderID: req.Sender, RoomID: req.RoomID, Type: spec.MRoomMember, StateKey: &sk,
		PrevEvents: []string{cur.EventID()}, AuthEvents: []string{cur.EventID()}, Depth: cur.Depth() + 1}
	if err := proto.SetContent(content); err != nil {
		return nil, err
	}
	impl, err := gomatrixserverlib.GetRoomVersion(cur.Version())
	if err != nil {
		return nil, err
	}
	return impl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), m.us(), m.s.key.ID, m.s.key.Private)
}

// lastLocalMember reports whether userID is this server's only joined member of the room.
func (m *Memberships) lastLocalMember(ctx context.Context, roomID, userID string) (bool, error) {
	// ServerInRoom is true; see whether anyone else of ours is joined.
	members, err := m.s.members.CurrentState(ctx, roomID)
	if err != nil {
		return false, err
	}
	for _, ev := range members {
		if ev.Type() != spec.MRoomMember || ev.Membership != spec.Join || ev.StateKeyEquals(userID) {
			continue
		}
		if u, err := spec.NewUserID(*ev.StateKey(), true); err == nil && u.Domain() == m.us() {
			return false, nil
		}
	}
	return true, nil
}

// remoteLeave builds the user's leave from a make_leave template of one of servers,
// signs it and sends it with send_leave.
func (m *Memberships) remoteLeave(ctx context.Context, req roomserver.MembershipRequest, servers []spec.ServerName) (gomatrixserverlib.PDU, error) {
	if len(servers) == 0 {
		return nil, httputil.NotFound("No known server of room %s to leave it through", req.RoomID)
	}
	var lastErr error
	for _, server := range servers {
		res, err := m.s.client.MakeLeave(ctx, m.us(), server, req.RoomID, req.Sender)
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		content := map[string]any{"membership": spec.Leave}
		if req.Reason != "" {
			content["reason"] = req.Reason
		}
		ev, err := m.buildFromTemplate(res.LeaveEvent, res.RoomVersion, req.RoomID, req.Sender, content)
		if err != nil {
			lastErr = err
			continue
		}
		if err := m.s.client.SendLeave(ctx, m.us(), server, ev); err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		return ev, nil
	}
	return nil, lastErr
}

// buildFromTemplate builds and signs a membership event of userID from a make_*
// template, after checking the template is about that user and room.
func (m *Memberships) buildFromTemplate(proto gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.RoomVersion, roomID, userID string, content map[string]any) (gomatrixserverlib.PDU, error) {
	if ver == "" {
		ver = gomatrixserverlib.RoomVersionV1
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, httputil.NewError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %s is not supported", ver)
	}
	if proto.Type != spec.MRoomMember || proto.RoomID != roomID || proto.SenderID != userID || proto.StateKey == nil || *proto.StateKey != userID {
		return nil, httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "The other server's event template is not about %s in %s", userID, roomID)
	}
	proto.Redacts = ""
	proto.Unsigned = nil
	if err := proto.SetContent(content); err != nil {
		return nil, err
	}
	return impl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), m.us(), m.s.key.ID, m.s.key.Private)
}

// Invite invites req.Target: a local user locally; a user of another server through
// PUT /v2/invite to their server, whose countersigned invite then enters the room.
func (m *Memberships) Invite(ctx context.Context, req roomserver.MembershipRequest) (*roomserver.Event, error) {
	target, err := spec.NewUserID(req.Target, true)
	if err != nil {
		return nil, httputil.InvalidParam("Bad user ID %q", req.Target)
	}
	if target.Domain() == m.us() {
		return m.s.members.Invite(ctx, req)
	}
	if !m.s.cfg.Federation.Enabled {
		return nil, httputil.Forbidden("Federation is off: users of other servers cannot be invited")
	}
	pdu, err := m.s.members.BuildInvite(ctx, req)
	if err != nil {
		return nil, err
	}
	stripped, err := m.s.strippedState(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	if inviter, err := m.s.members.CurrentStateEvent(ctx, req.RoomID, spec.MRoomMember, req.Sender); err == nil && inviter != nil {
		stripped = append(stripped, json.RawMessage(inviter.JSON()))
	}
	// The request is built here rather than with fclient.NewInviteV2Request, whose
	// invite_room_state can only hold stripped events: since v1.16 (MSC4311) it holds
	// the room's events in full (the create event at least), so that the invited
	// server can check them and its clients can identify the room.
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(req.RoomID) + "/" + url.PathEscape(pdu.EventID())
	body := map[string]any{"event": json.RawMessage(pdu.JSON()), "room_version": pdu.Version(), "invite_room_state": stripped}
	if err := m.s.client.DoSigned(ctx, http.MethodPut, target.Domain(), path, body, &resp); err != nil {
		return nil, remoteError(target.Domain(), err)
	}
	signed, err := gomatrixserverlib.MustGetRoomVersion(pdu.Version()).NewEventFromUntrustedJSON(resp.Event)
	if err != nil || signed.EventID() != pdu.EventID() {
		return nil, httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s answered the invite with another event", target.Domain())
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, m.s.keys, userIDForSender); err != nil {
		return nil, httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "The invite signed by %s does not verify: %v", target.Domain(), err)
	}
	res, err := m.s.members.InputEvents(ctx, []roomserver.InputEvent{{Kind: roomserver.InputNew, Event: signed}})
	if err != nil {
		return nil, err
	}
	switch {
	case len(res) != 1:
		return nil, httputil.Unknown("The invite was not stored")
	case res[0].Err != nil:
		return nil, fmt.Errorf("store invite %s: %w", signed.EventID(), res[0].Err)
	case res[0].Rejected || res[0].SoftFailed:
		return nil, httputil.Forbidden("The invite is no longer allowed by the room's state")
	}
	return res[0].Event, nil
}

// Knock knocks on a room: locally when this server is in the room, else through
// make_knock/send_knock with the first of via (then the room ID's server) that accepts.
func (m *Memberships) Knock(ctx context.Context, req roomserver.MembershipRequest, via []string) (*roomserver.Event, error) {
	in, err := m.s.members.ServerInRoom(ctx, req.RoomID, m.us())
	if err != nil {
		return nil, err
	}
	if in {
		return m.s.members.Knock(ctx, req)
	}
	if err := m.enabled(); err != nil {
		return nil, err
	}
	servers := m.candidates(req.RoomID, via)
	if len(servers) == 0 {
		return nil, httputil.NotFound("No known server to knock on room %s through", req.RoomID)
	}
	extra := map[string]any{}
	if req.Reason != "" {
		extra["reason"] = req.Reason
	}
	content := m.s.members.MemberContent(ctx, req.Sender, spec.Knock, extra)
	versions := make([]gomatrixserverlib.RoomVersion, 0)
	for v := range gomatrixserverlib.RoomVersions() {
		versions = append(versions, v)
	}
	var lastErr error
	for _, server := range servers {
		tmpl, err := m.s.client.MakeKnock(ctx, m.us(), server, req.RoomID, req.Sender, versions)
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		ev, err := m.buildFromTemplate(tmpl.KnockEvent, tmpl.RoomVersion, req.RoomID, req.Sender, content)
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := m.s.client.SendKnock(ctx, m.us(), server, ev)
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		stored := ev
		if withState, err := ev.SetUnsigned(map[string]any{"knock_room_state": resp.KnockRoomState}); err == nil {
			stored = withState
		}
		return m.s.members.StoreOutOfBandMembership(ctx, stored)
	}
	return nil, lastErr
}

// ResolveAlias asks the alias's server for the room ID and the servers to join it
// through (GET /_matrix/federation/v1/query/directory).
func (m *Memberships) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	i := strings.IndexByte(alias, ':')
	if i < 0 {
		return "", nil, httputil.InvalidParam("Bad room alias %q", alias)
	}
	if err := m.enabled(); err != nil {
		return "", nil, err
	}
	server := spec.ServerName(alias[i+1:])
	res, err := m.s.client.LookupRoomAlias(ctx, m.us(), server, alias)
	if err != nil {
		return "", nil, remoteError(server, err)
	}
	servers := make([]string, 0, len(res.Servers)+1)
	for _, s := range res.Servers {
		servers = append(servers, string(s))
	}
	servers = append(servers, string(server))
	return res.RoomID, servers, nil
}
