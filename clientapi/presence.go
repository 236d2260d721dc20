package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// getPresence serves GET /presence/{userId}/status.
func (s *Server) getPresence(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if _, err := spec.NewUserID(userID, true); err != nil {
		return nil, httputil.InvalidParam("%q is not a valid user ID", userID)
	}
	return s.sync.GetPresence(r.Context(), requestDevice(r).UserID, userID)
}

// putPresence serves PUT /presence/{userId}/status.
func (s *Server) putPresence(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if err := requireSelf(r, userID, "set the presence"); err != nil {
		return nil, err
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Presence == "" {
		return nil, httputil.MissingParam("presence is required")
	}
	if err := s.sync.SetPresence(r.Context(), userID, body.Presence, body.StatusMsg); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
