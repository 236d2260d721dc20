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
	id, err := s.e2ee().PutDehydratedDevice(r.Context(), requestDevice(r).UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

func (s *Server) getDehydratedDevice(r *http.Request) (any, error) {
	return s.e2ee().GetDehydratedDevice(r.Context(), requestDevice(r).UserID)
}

func (s *Server) deleteDehydratedDevice(r *http.Request) (any, error) {
	id, err := s.e2ee().DeleteDehydratedDevice(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
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
