package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Thread subscriptions (MSC4306, unstable prefix io.element.msc4306): a user follows a
// thread by hand, or a client subscribes them automatically when they take part. A
// manual subscription is never downgraded to an automatic one, and an automatic one
// caused by an event older than the user's last unsubscription is refused, so that a
// slow client cannot undo the user's choice.

// threadRoot checks the thread root exists and the requester may see it (404 otherwise).
func (s *Server) threadRoot(r *http.Request) (userID, roomID, rootID string, err error) {
	userID, roomID, rootID = requestDevice(r).UserID, pathVar(r, "roomId"), pathVar(r, "threadRootId")
	if _, err := s.rooms.EventForUser(r.Context(), userID, roomID, rootID); err != nil {
		return "", "", "", httputil.NotFound("No such thread")
	}
	return userID, roomID, rootID, nil
}

// getThreadSubscription serves GET /rooms/{roomId}/thread/{threadRootId}/subscription.
func (s *Server) getThreadSubscription(r *http.Request) (any, error) {
	userID, roomID, rootID, err := s.threadRoot(r)
	if err != nil {
		return nil, err
	}
	sub, err := storage.GetThreadSubscription(r.Context(), s.db, userID, roomID, rootID)
	if err != nil {
		return nil, err
	}
	if !sub.Subscribed {
		return nil, httputil.NotFound("Not subscribed to this thread")
	}
	return map[string]bool{"automatic": sub.Automatic}, nil
}

// putThreadSubscription serves PUT /rooms/{roomId}/thread/{threadRootId}/subscription:
// {} subscribes by hand, {"automatic": eventId} because of an event in the thread.
func (s *Server) putThreadSubscription(r *http.Request) (any, error) {
	userID, roomID, rootID, err := s.threadRoot(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Automatic *string `json:"automatic"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	ctx := r.Context()
	sub, err := storage.GetThreadSubscription(ctx, s.db, userID, roomID, rootID)
	if err != nil {
		return nil, err
	}
	if body.Automatic == nil {
		sub.Subscribed, sub.Automatic = true, false
		return struct{}{}, storage.PutThreadSubscription(ctx, s.db, userID, roomID, rootID, sub)
	}
	cause, err := s.rooms.EventForUser(ctx, userID, roomID, *body.Automatic)
	if err != nil || cause.EventID() == rootID || threadOf(cause.Content()) != rootID {
		return nil, httputil.NewError(http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD", "The event is not in this thread")
	}
	if sub.Subscribed {
		return struct{}{}, nil // already subscribed; a manual subscription stays manual
	}
	if cause.StreamPos <= sub.UnsubscribedAt {
		return nil, httputil.NewError(http.StatusConflict, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION",
			"The user unsubscribed from this thread after that event")
	}
	sub.Subscribed, sub.Automatic = true, true
	return struct{}{}, storage.PutThreadSubscription(ctx, s.db, userID, roomID, rootID, sub)
}

// deleteThreadSubscription serves DELETE /rooms/{roomId}/thread/{threadRootId}/subscription.
func (s *Server) deleteThreadSubscription(r *http.Request) (any, error) {
	userID, roomID, rootID, err := s.threadRoot(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	pos, err := storage.LatestEventPosition(ctx, s.db)
	if err != nil {
		return nil, err
	}
	sub := storage.ThreadSubscription{UnsubscribedAt: pos}
	return struct{}{}, storage.PutThreadSubscription(ctx, s.db, userID, roomID, rootID, sub)
}

// threadOf returns the thread root an event's content points to ("" when not in a thread).
func threadOf(content []byte) string {
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo.RelType != "m.thread" {
		return ""
	}
	return c.RelatesTo.EventID
}
