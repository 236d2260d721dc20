package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/clientapi/delayed"
	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// delayParam is the query parameter that turns a send into a delayed event (MSC4140).
const delayParam = "org.matrix.msc4140.delay"

// requestedDelay reads the delay a send asks for; ok is false for an ordinary send.
func requestedDelay(r *http.Request) (d time.Duration, ok bool, err error) {
	if !strings.Contains(r.URL.RawQuery, "msc4140") { // the common case, without parsing the query
		return 0, false, nil
	}
	v := r.URL.Query().Get(delayParam)
	if v == "" {
		return 0, false, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, false, httputil.InvalidParam("%s must be a non-negative number of milliseconds", delayParam)
	}
	if ms > delayed.MaxDelay.Milliseconds() {
		return 0, false, httputil.NewError(http.StatusBadRequest, "M_MAX_DELAY_EXCEEDED", "The longest delay allowed is %d ms", delayed.MaxDelay.Milliseconds()).
			With("org.matrix.msc4140.max_delay", delayed.MaxDelay.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

// scheduleDelayed answers a send with a delay: the event is stored to be sent later.
func (s *Server) scheduleDelayed(ctx context.Context, req delayed.Request) (any, error) {
	if s.delayed == nil {
		return nil, httputil.NewError(http.StatusBadRequest, "M_UNRECOGNIZED", "Delayed events are not enabled")
	}
	// Sending is authorised when the event fires; a user outside the room is told now.
	if m, _, err := s.rooms.Membership(ctx, req.RoomID, req.UserID); err != nil {
		return nil, sendError(err)
	} else if m != "join" {
		return nil, httputil.Forbidden("You are not in this room")
	}
	id, err := s.delayed.Schedule(ctx, req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"delay_id": id}, nil
}

// getDelayedEvents serves GET /delayed_events: the requester's pending delayed events.
func (s *Server) getDelayedEvents(r *http.Request) (any, error) {
	if s.delayed == nil {
		return map[string]any{"delayed_events": []any{}}, nil
	}
	evs, err := s.delayed.List(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"delayed_events": evs}, nil
}

// postDelayedEventAction serves POST /delayed_events/{delayId}/{action}.
func (s *Server) postDelayedEventAction(r *http.Request) (any, error) {
	action := pathVar(r, "action")
	switch action {
	case delayed.ActionCancel, delayed.ActionRestart, delayed.ActionSend:
	default:
		return nil, httputil.NewError(http.StatusNotFound, "M_UNRECOGNIZED", "Unknown delayed event action %q", action)
	}
	return s.actOnDelayed(r.Context(), pathVar(r, "delayId"), action)
}

// postDelayedEvent serves POST /delayed_events/{delayId} with the action in the body
// (the MSC's first form, which clients still use).
func (s *Server) postDelayedEvent(r *http.Request) (any, error) {
	var body struct {
		Action *string `json:"action"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Action == nil {
		return nil, httputil.MissingParam("action is required")
	}
	switch *body.Action {
	case delayed.ActionCancel, delayed.ActionRestart, delayed.ActionSend:
	default:
		return nil, httputil.InvalidParam("Unknown delayed event action %q", *body.Action)
	}
	return s.actOnDelayed(r.Context(), pathVar(r, "delayId"), *body.Action)
}

func (s *Server) actOnDelayed(ctx context.Context, delayID, action string) (any, error) {
	if s.delayed == nil {
		return nil, httputil.NotFound("No such delayed event")
	}
	err := s.delayed.Act(ctx, delayID, action)
	if errors.Is(err, delayed.ErrNotFound) {
		return nil, httputil.NotFound("No such delayed event")
	}
	if err != nil {
		return nil, sendError(err)
	}
	return struct{}{}, nil
}

// delayedRequest builds the schedule of a send with a delay.
func delayedRequest(r *http.Request, roomID, evType string, stateKey *string, content json.RawMessage, d time.Duration) delayed.Request {
	id := identOf(r)
	return delayed.Request{UserID: id.userID, DeviceID: id.deviceID, TxnID: pathVar(r, "txnId"),
		RoomID: roomID, Type: evType, StateKey: stateKey, Content: content, Delay: d}
}
