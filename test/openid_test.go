package test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestOpenIDToken(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")

		tok, err := alice.RequestOpenIDToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.MatrixServerName != "hs1.test" || tok.ExpiresIn != 3600 {
			t.Fatalf("openid token: %+v", tok)
		}
		tok2, err := alice.RequestOpenIDToken(ctx)
		if err != nil || tok2.AccessToken == tok.AccessToken {
			t.Fatalf("second token: %+v %v", tok2, err)
		}
		// It is not an access token.
		status, body := s.Do(t, "GET", "/_matrix/client/v3/devices", tok.AccessToken, nil)
		udExpect(t, "openid token as access token", status, body, 401, "M_UNKNOWN_TOKEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/user/"+esc(alice.UserID.String())+"/openid/request_token", tok.AccessToken, `{}`)
		udExpect(t, "openid token requesting another", status, body, 401, "M_UNKNOWN_TOKEN")

		// Only for oneself.
		status, body = s.Do(t, "POST", "/_matrix/client/v3/user/"+esc(alice.UserID.String())+"/openid/request_token", bob.AccessToken, `{}`)
		udExpect(t, "bob requesting alice's token", status, body, 403, "M_FORBIDDEN")
		if _, ok := body["access_token"]; ok {
			t.Fatal("403 carried a token")
		}
		status, body = s.Do(t, "POST", "/_matrix/client/v3/user/"+esc(alice.UserID.String())+"/openid/request_token", alice.AccessToken, `[]`)
		udExpect(t, "array body", status, body, 400, "M_BAD_JSON")
		status, body = s.Do(t, "POST", "/_matrix/client/r0/user/"+esc(alice.UserID.String())+"/openid/request_token", alice.AccessToken, `{}`)
		if status != 200 || body["token_type"] != "Bearer" || body["access_token"] == "" {
			t.Fatalf("r0 request: %d %v", status, body)
		}
	})
}
