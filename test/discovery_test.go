package test

import (
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestDiscoveryAndErrors(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})

		status, body := s.Do(t, "GET", "/_matrix/client/versions", "", nil)
		if status != 200 {
			t.Fatalf("versions: %d %v", status, body)
		}
		versions, _ := body["versions"].([]any)
		found := false
		for _, v := range versions {
			found = found || v == "v1.11"
		}
		if !found {
			t.Fatalf("versions does not list v1.11: %v", body)
		}

		status, body = s.Do(t, "GET", "/.well-known/matrix/client", "", nil)
		hs, _ := body["m.homeserver"].(map[string]any)
		if status != 200 || hs["base_url"] == "" {
			t.Fatalf("well-known client: %d %v", status, body)
		}
		if status, body = s.Do(t, "GET", "/.well-known/matrix/server", "", nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("well-known server without config: %d %v", status, body)
		}

		if status, body = s.Do(t, "GET", "/_matrix/client/v3/no/such/endpoint", "", nil); status != 404 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("unknown endpoint: %d %v", status, body)
		}
		if status, body = s.Do(t, "DELETE", "/_matrix/client/v3/login", "", nil); status != 405 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("wrong method: %d %v", status, body)
		}
		// Unknown server-server and key endpoints are 404, known ones with a wrong method 405
		// (Complement's TestUnknownEndpoints asks the client port).
		for _, c := range []struct {
			method, path string
			status       int
		}{
			{"GET", "/_matrix/federation/unknown", 404}, {"GET", "/_matrix/federation/v1/unknown", 404},
			{"PUT", "/_matrix/federation/v1/version", 405}, {"GET", "/_matrix/key/unknown", 404},
			{"GET", "/_matrix/key/v2/unknown", 404}, {"PUT", "/_matrix/key/v2/query", 405},
		} {
			if status, body = s.Do(t, c.method, c.path, "", nil); status != c.status || body["errcode"] != "M_UNRECOGNIZED" {
				t.Fatalf("%s %s: %d %v", c.method, c.path, status, body)
			}
		}
		if status, body = s.Do(t, "GET", "/_matrix/client/v3/capabilities", "", nil); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
			t.Fatalf("no token: %d %v", status, body)
		}
		if status, body = s.Do(t, "GET", "/_matrix/client/r0/capabilities", "not-a-token", nil); status != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" || body["soft_logout"] != false {
			t.Fatalf("unknown token on r0: %d %v", status, body)
		}

		req, _ := http.NewRequest("OPTIONS", s.URL+"/_matrix/client/v3/login", nil)
		req.Header.Set("Origin", "https://app.element.io")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			resp.Header.Get("Access-Control-Allow-Headers") == "" {
			t.Fatalf("CORS preflight: %d %v", resp.StatusCode, resp.Header)
		}

		resp, err = http.Get(s.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("health: %d", resp.StatusCode)
		}
	})
}
