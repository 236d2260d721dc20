package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// putSendToDevice is PUT /sendToDevice/{eventType}/{txnId}.
func (s *Server) putSendToDevice(r *http.Request) (any, error) {
	var body struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	if _, err := s.e2ee().SendToDevice(r.Context(), d.UserID, d.DeviceID, pathVar(r, "eventType"), pathVar(r, "txnId"), body.Messages); err != nil {
		return nil, err
	}
	for userID := range body.Messages {
		s.sync.OnToDevice(userID) // wakes the recipients' /sync long-polls
	}
	return struct{}{}, nil
}
