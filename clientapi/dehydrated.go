package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/keys"
)

// Dehydrated devices (MSC3814), under /_matrix/client/unstable/org.matrix.msc3814.v1.

func (s *Server) putDehydratedDevice(r *http.Request) (any, error) {
	var req keys.DehydratedDevicePut
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	userID := requestDevice(r).UserID
	id, err := s.e2ee().PutDehydratedDevice(r.Context(), userID, req)
	if err != nil {
		return nil, err
	}
	s.sync.OnKeysChanged(userID, true) // room-mates' clients learn of the new device
	return map[string]string{"device_id": id}, nil
}

func (s *Server) getDehydratedDevice(r *http.Request) (any, error) {
	return s.e2ee().GetDehydratedDevice(r.Context(), requestDevice(r).UserID)
}

func (s *Server) deleteDehydratedDevice(r *http.Request) (any, error) {
	userID := requestDevice(r).UserID
	id, err := s.e2ee().DeleteDehydratedDevice(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	s.sync.OnKeysChanged(userID, true) // room-mates' clients forget the device
	return map[string]string{"device_id": id}, nil
}

func (s *Server) postDehydratedDeviceEvents(r *http.Request) (any, error) {
	var body struct {
		NextBatch string `json:"next_batch"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	return s.e2ee().DehydratedDeviceEvents(r.Context(), requestDevice(r).UserID, pathVar(r, "deviceId"), body.NextBatch)
}

// getDehydratedDeviceEvents is the GET form of the events endpoint that matrix-js-sdk
// (Rust crypto) uses: the position comes as ?from= and the client pages until the
// response has no next_batch, so an empty page carries none.
func (s *Server) getDehydratedDeviceEvents(r *http.Request) (any, error) {
	resp, err := s.e2ee().DehydratedDeviceEvents(r.Context(), requestDevice(r).UserID, pathVar(r, "deviceId"), r.URL.Query().Get("from"))
	if err != nil {
		return nil, err
	}
	if len(resp.Events) == 0 {
		return map[string]any{"events": resp.Events}, nil
	}
	return resp, nil
}
