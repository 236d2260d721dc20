package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/keys"
)

// postDeviceSigningUpload is POST /keys/device_signing/upload (user-interactive auth when
// replacing existing keys).
func (s *Server) postDeviceSigningUpload(r *http.Request) (any, error) {
	var req keys.CrossSigningUpload
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	userID := requestDevice(r).UserID
	uia := func(ctx context.Context) error {
		return s.accounts.CheckUIA(ctx, userID, r.URL.Path, req.Auth)
	}
	if err := s.e2ee().UploadCrossSigning(r.Context(), userID, req, uia); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// postSignaturesUpload is POST /keys/signatures/upload.
func (s *Server) postSignaturesUpload(r *http.Request) (any, error) {
	var body map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	return s.e2ee().UploadSignatures(r.Context(), requestDevice(r).UserID, body)
}
