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
	s.sync.OnKeysChanged(userID, true) // device_lists.changed for the user and room-mates
	return struct{}{}, nil
}

// postSignaturesUpload is POST /keys/signatures/upload.
func (s *Server) postSignaturesUpload(r *http.Request) (any, error) {
	var body map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	userID := requestDevice(r).UserID
	resp, err := s.e2ee().UploadSignatures(r.Context(), userID, body)
	if err == nil {
		// Signatures of the user's own keys reach its room-mates' device_lists.changed;
		// those of other users' master keys only the uploader's.
		s.sync.OnKeysChanged(userID, true)
	}
	return resp, err
}
