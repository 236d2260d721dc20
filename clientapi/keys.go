package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/keys"
)

// e2ee returns the end-to-end encryption component (clientapi/keys); it is stateless.
func (s *Server) e2ee() *keys.Service {
	return keys.New(s.db, s.cfg.ServerName).WithRemote(s.remoteKeys)
}

// postKeysUpload is POST /keys/upload.
func (s *Server) postKeysUpload(r *http.Request) (any, error) {
	var req keys.UploadRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	resp, err := s.e2ee().Upload(r.Context(), d.UserID, d.DeviceID, req)
	if err == nil {
		s.sync.OnKeysChanged(d.UserID, len(req.DeviceKeys) > 0) // wakes /sync long-polls
	}
	return resp, err
}

// postKeysQuery is POST /keys/query.
func (s *Server) postKeysQuery(r *http.Request) (any, error) {
	var req keys.QueryRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	resp, err := s.e2ee().Query(r.Context(), requestDevice(r).UserID, req)
	if err != nil {
		return nil, err
	}
	return resp.Encode()
}

// postKeysClaim is POST /keys/claim.
func (s *Server) postKeysClaim(r *http.Request) (any, error) {
	var req keys.ClaimRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return s.e2ee().Claim(r.Context(), req)
}
