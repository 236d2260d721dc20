package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// stateView says which state of a room a user may read: the current state (atEvent
// empty) for joined users and anyone in a world_readable room, or the state just after
// their leave/ban event for users who left. Anyone else (including for an unknown
// room) gets 403.
type stateView struct {
	atEvent    string
	membership string
	memberEv   *roomserver.Event
}

var errNotMember = httputil.Forbidden("You aren't a member of the room and weren't previously a member of the room")

func (s *Server) stateViewFor(ctx context.Context, roomID, userID string) (*stateView, error) {
	m, ev, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		var me spec.MatrixError
		if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
			return nil, errNotMember
		}
		return nil, err
	}
	v := &stateView{membership: m, memberEv: ev}
	switch m {
	case spec.Join:
		return v, nil
	case spec.Leave, spec.Ban:
		if ok, err := s.worldReadable(ctx, roomID); err != nil {
			return nil, err
		} else if ok {
			return v, nil
		}
		v.atEvent = ev.EventID()
		return v, nil
	}
	if ok, err := s.worldReadable(ctx, roomID); err != nil {
		return nil, err
	} else if ok {
		return v, nil
	}
	return nil, errNotMember
}

// worldReadable reports whether a room's current history visibility is world_readable.
func (s *Server) worldReadable(ctx context.Context, roomID string) (bool, error) {
	ev, err := s.rooms.CurrentStateEvent(ctx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil || ev == nil {
		return false, err
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.HistoryVisibility == roomserver.VisibilityWorldReadable, nil
}

// stateEvent returns one state event of the view (nil when absent).
func (s *Server) viewStateEvent(ctx context.Context, roomID string, v *stateView, evType, stateKey string) (*roomserver.Event, error) {
	if v.atEvent == "" {
		return s.rooms.CurrentStateEvent(ctx, roomID, evType, stateKey)
	}
	return s.rooms.StateEventAt(ctx, v.atEvent, evType, stateKey, true)
}

// viewState returns the whole state of the view.
func (s *Server) viewState(ctx context.Context, roomID string, v *stateView) ([]*roomserver.Event, error) {
	if v.atEvent == "" {
		return s.rooms.CurrentState(ctx, roomID)
	}
	return s.rooms.StateAtEvent(ctx, v.atEvent, true)
}

// getRoomState is GET /rooms/{roomId}/state.
func (s *Server) getRoomState(r *http.Request) (any, error) {
	roomID := pathVar(r, "roomId")
	d := requestDevice(r)
	v, err := s.stateViewFor(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	evs, err := s.viewState(r.Context(), roomID, v)
	if err != nil {
		return nil, err
	}
	return s.formatter(d.UserID, d.DeviceID, filter.FormatClient).events(r.Context(), evs)
}

// getRoomStateEvent is GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (s *Server) getRoomStateEvent(r *http.Request) (any, error) {
	roomID, evType, stateKey := pathVar(r, "roomId"), pathVar(r, "eventType"), pathVar(r, "stateKey")
	format := r.URL.Query().Get("format")
	if format != "" && format != "content" && format != "event" {
		return nil, httputil.InvalidParam("format must be \"content\" or \"event\"")
	}
	d := requestDevice(r)
	v, err := s.stateViewFor(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	ev, err := s.viewStateEvent(r.Context(), roomID, v, evType, stateKey)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, httputil.NotFound("The room has no state with the given type or key")
	}
	if format == "event" {
		return s.formatter(d.UserID, d.DeviceID, filter.FormatClient).one(r.Context(), ev)
	}
	return json.RawMessage(ev.Content()), nil
}

// putRoomStateEvent is PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (s *Server) putRoomStateEvent(r *http.Request) (any, error) {
	roomID, evType, stateKey := pathVar(r, "roomId"), pathVar(r, "eventType"), pathVar(r, "stateKey")
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	d := requestDevice(r)
	if evType == spec.MRoomCanonicalAlias {
		if err := s.validateCanonicalAliases(r.Context(), roomID, content); err != nil {
			return nil, err
		}
	}
	ts, err := appServiceTimestamp(r)
	if err != nil {
		return nil, err
	}
	sk := stateKey
	if delay, ok, err := requestedDelay(r); err != nil {
		return nil, err
	} else if ok {
		return s.scheduleDelayed(r.Context(), delayedRequest(r, roomID, evType, &sk, content, delay))
	}
	if id, ok := s.sameStateEvent(r.Context(), roomID, evType, stateKey, d.UserID, content); ok {
		return map[string]string{"event_id": id}, nil
	}
	ev, err := s.rooms.SendEvent(r.Context(), roomserver.SendRequest{
		RoomID: roomID, Sender: d.UserID, Type: evType, StateKey: &sk, Content: content, DeviceID: d.DeviceID,
		Timestamp: ts,
	})
	if err != nil {
		return nil, sendError(err)
	}
	if s.delayed != nil {
		// A delayed event for this state would overwrite the newer value (MSC4140).
		if err := s.delayed.StateSent(r.Context(), roomID, evType, stateKey); err != nil {
			return nil, err
		}
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

// sameStateEvent reports the current state event (type, state key) when the sender set it
// with the very same content: setting it again is a no-op that returns that event's ID,
// as Synapse does, instead of a new event that changes nothing. Membership is excluded (a
// repeated join or invite means something).
func (s *Server) sameStateEvent(ctx context.Context, roomID, evType, stateKey, sender string, content json.RawMessage) (string, bool) {
	if evType == spec.MRoomMember {
		return "", false
	}
	cur, err := s.rooms.CurrentStateEvent(ctx, roomID, evType, stateKey)
	if err != nil || cur == nil || cur.SenderID() != spec.SenderID(sender) {
		return "", false
	}
	a, err1 := gomatrixserverlib.CanonicalJSON(cur.Content())
	b, err2 := gomatrixserverlib.CanonicalJSON(content)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		return "", false
	}
	m, _, err := s.rooms.Membership(ctx, roomID, sender)
	if err != nil || m != spec.Join {
		return "", false
	}
	return cur.EventID(), true
}
