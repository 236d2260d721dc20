package clientapi

import (
	"net/http"
	"time"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// putTyping serves PUT /rooms/{roomId}/typing/{userId}.
func (s *Server) putTyping(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if err := requireSelf(r, userID, "set the typing state"); err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, httputil.MissingParam("typing is required")
	}
	var timeout time.Duration
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, httputil.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(*body.Timeout) * time.Millisecond
	}
	if err := s.sync.SetTyping(r.Context(), pathVar(r, "roomId"), userID, *body.Typing, timeout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
