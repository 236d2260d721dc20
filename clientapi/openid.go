package clientapi

import (
	"net/http"
	"time"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// openIDTokenLifetime is how long an OpenID token can be exchanged for the user's identity.
const openIDTokenLifetime = time.Hour

// postOpenIDToken serves POST /user/{userId}/openid/request_token: a token an integration
// (widget, integration manager) exchanges at /_matrix/federation/v1/openid/userinfo to
// learn who the user is. Only its hash is stored; it is not an access token.
func (s *Server) postOpenIDToken(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if err := requireSelf(r, userID, "request OpenID tokens"); err != nil {
		return nil, err
	}
	var body struct{}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	token := auth.NewToken("myo_")
	now := time.Now()
	err := s.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		return storage.InsertOpenIDToken(r.Context(), tx, auth.HashToken(token), userID, now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli())
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": s.cfg.ServerName,
		"expires_in":         int(openIDTokenLifetime.Seconds()),
	}, nil
}
