package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// createRoomBody is the body of POST /createRoom.
type createRoomBody struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           map[string]any    `json:"creation_content"`
	InitialState              []initialState    `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride map[string]any    `json:"power_level_content_override"`
}

type initialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// postCreateRoom is POST /createRoom.
func (s *Server) postCreateRoom(r *http.Request) (any, error) {
	var body createRoomBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	switch body.Visibility {
	case "", "public", "private":
	default:
		return nil, httputil.BadJSON("visibility must be \"public\" or \"private\"")
	}
	switch body.Preset {
	case "", spec.PresetPrivateChat, spec.PresetTrustedPrivateChat, spec.PresetPublicChat:
	default:
		return nil, httputil.BadJSON("Unknown preset %q", body.Preset)
	}
	if len(body.Invite3PID) > 0 {
		return nil, httputil.NewError(http.StatusBadRequest, "M_UNRECOGNIZED", "Third-party invites are not supported")
	}
	// Users of this server are invited as part of the room's creation; users of other
	// servers afterwards, through federation (PUT /invite to their server).
	var localInvites, remoteInvites []string
	for _, u := range body.Invite {
		uid, err := spec.NewUserID(u, true)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid user ID %q in invite", u)
		}
		if string(uid.Domain()) == s.cfg.ServerName {
			localInvites = append(localInvites, u)
		} else if !slices.Contains(remoteInvites, u) {
			remoteInvites = append(remoteInvites, u)
		}
	}
	req := roomserver.CreateRoomRequest{
		Creator:                   d.UserID,
		RoomVersion:               body.RoomVersion,
		Preset:                    body.Preset,
		Visibility:                body.Visibility,
		CreationContent:           body.CreationContent,
		PowerLevelContentOverride: body.PowerLevelContentOverride,
		Invite:                    localInvites,
		IsDirect:                  body.IsDirect,
	}
	if body.Name != nil {
		req.Name = *body.Name
	}
	if body.Topic != nil {
		req.Topic = *body.Topic
	}
	for i, st := range body.InitialState {
		if st.Type == "" {
			return nil, httputil.BadJSON("initial_state[%d]: type is required", i)
		}
		c := strings.TrimSpace(string(st.Content))
		if c == "" || c[0] != '{' {
			return nil, httputil.BadJSON("initial_state[%d]: content must be a JSON object", i)
		}
		req.InitialState = append(req.InitialState, roomserver.StateEvent{Type: st.Type, StateKey: st.StateKey, Content: st.Content})
	}
	if body.RoomAliasName != "" {
		alias, err := s.reserveRoomAlias(r.Context(), body.RoomAliasName)
		if err != nil {
			return nil, err
		}
		req.CanonicalAlias = alias
	}
	roomID, err := s.rooms.CreateRoom(r.Context(), req)
	if err != nil {
		return nil, err
	}
	if req.CanonicalAlias != "" {
		// Another request may have taken the alias since it was checked.
		if err := s.bindRoomAlias(r.Context(), req.CanonicalAlias, roomID, d.UserID); err != nil {
			return nil, err
		}
	}
	if body.Visibility == "public" {
		if err := s.publishRoom(r.Context(), roomID); err != nil {
			return nil, err
		}
	}
	for _, u := range remoteInvites {
		if _, err := s.members.Invite(r.Context(), roomserver.MembershipRequest{
			RoomID: roomID, Sender: d.UserID, Target: u, DeviceID: d.DeviceID, IsDirect: body.IsDirect,
		}); err != nil {
			// The room exists; the client learns why the invite failed.
			return nil, sendError(err)
		}
	}
	return map[string]string{"room_id": roomID}, nil
}

type deviceIdent struct{ userID, deviceID string }

func identOf(r *http.Request) deviceIdent {
	d := requestDevice(r)
	return deviceIdent{userID: d.UserID, deviceID: d.DeviceID}
}

// maxEventBytes is the spec's size limit of a whole event (PDU), so also of its content.
const maxEventBytes = 65536

// readContent reads a request body that must be a JSON object and returns it as is.
// Content that cannot fit in an event is 413 M_TOO_LARGE.
func readContent(r *http.Request) (json.RawMessage, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if len(body) > maxEventBytes {
		return nil, httputil.TooLarge("Event content is larger than %d bytes", maxEventBytes)
	}
	var m map[string]json.RawMessage
	if err := httputil.UnmarshalBody(body, &m); err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return json.RawMessage("{}"), nil
	}
	return json.RawMessage(body), nil
}

// putSend is PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (s *Server) putSend(r *http.Request) (any, error) {
	roomID, evType, txnID := pathVar(r, "roomId"), pathVar(r, "eventType"), pathVar(r, "txnId")
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	ts, err := appServiceTimestamp(r)
	if err != nil {
		return nil, err
	}
	if d, ok, err := requestedDelay(r); err != nil {
		return nil, err
	} else if ok {
		return s.scheduleDelayed(r.Context(), delayedRequest(r, roomID, evType, nil, content, d))
	}
	id := identOf(r)
	// The roomserver records the transaction ID with the event (one commit) and
	// answers a replay with the first event.
	ev, err := s.rooms.SendEvent(r.Context(), roomserver.SendRequest{
		RoomID: roomID, Sender: id.userID, Type: evType, Content: content,
		TxnID: txnID, DeviceID: id.deviceID, TxnScope: "send:" + roomID, Timestamp: ts,
	})
	if err != nil {
		return nil, sendError(err)
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

// sendError maps the roomserver's answer for an unknown room on write paths: the user
// is not in it, which the spec answers with 403.
func sendError(err error) error {
	var me spec.MatrixError
	if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
		return httputil.Forbidden("You are not in this room")
	}
	return err
}

// putRedact is PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (s *Server) putRedact(r *http.Request) (any, error) {
	roomID, eventID, txnID := pathVar(r, "roomId"), pathVar(r, "eventId"), pathVar(r, "txnId")
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	id := identOf(r)
	content := map[string]any{"redacts": eventID}
	if body.Reason != nil {
		content["reason"] = *body.Reason
	}
	ev, err := s.rooms.SendEvent(r.Context(), roomserver.SendRequest{
		RoomID: roomID, Sender: id.userID, Type: spec.MRoomRedaction, Content: content, Redacts: eventID,
		TxnID: txnID, DeviceID: id.deviceID, TxnScope: "redact:" + roomID,
	})
	if err != nil {
		return nil, sendError(err)
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

type reportBody struct {
	Reason string `json:"reason"`
	Score  *int64 `json:"score"`
}

// postReportEvent is POST /rooms/{roomId}/report/{eventId}: the reporter must be joined
// and able to see the event, otherwise 404.
func (s *Server) postReportEvent(r *http.Request) (any, error) {
	roomID, eventID := pathVar(r, "roomId"), pathVar(r, "eventId")
	var body reportBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	notFound := httputil.NotFound("Unable to report event: it does not exist or you aren't able to see it")
	m, _, err := s.rooms.Membership(r.Context(), roomID, d.UserID)
	if err != nil || m != spec.Join {
		return nil, notFound
	}
	if _, err := s.rooms.EventForUser(r.Context(), d.UserID, roomID, eventID); err != nil {
		return nil, notFound
	}
	if err := storage.InsertEventReport(r.Context(), s.db, storage.EventReport{
		RoomID: roomID, EventID: eventID, Reporter: d.UserID, Reason: body.Reason, Score: body.Score,
	}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// postReportRoom is POST /rooms/{roomId}/report.
func (s *Server) postReportRoom(r *http.Request) (any, error) {
	roomID := pathVar(r, "roomId")
	var body reportBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if _, err := s.rooms.RoomVersion(r.Context(), roomID); err != nil {
		return nil, httputil.NotFound("The room was not found")
	}
	if err := storage.InsertEventReport(r.Context(), s.db, storage.EventReport{
		RoomID: roomID, Reporter: requestDevice(r).UserID, Reason: body.Reason, Score: body.Score,
	}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
