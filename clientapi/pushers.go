package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/syncapi/push"
)

// getPushers serves GET /pushers.
func (s *Server) getPushers(r *http.Request) (any, error) {
	ps, err := s.push.Pushers(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pushers": ps}, nil
}

// postPushersSet serves POST /pushers/set.
func (s *Server) postPushersSet(r *http.Request) (any, error) {
	var body push.PusherRequest
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.PushKey == "" || body.AppID == "" {
		return nil, httputil.MissingParam("pushkey and app_id are required")
	}
	d := requestDevice(r)
	if err := s.push.SetPusher(r.Context(), d.UserID, d.DeviceID, body); err != nil {
		return nil, pushError(err)
	}
	return struct{}{}, nil
}
