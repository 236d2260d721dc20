package test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

func TestRateLimitAnswersLimitExceeded(t *testing.T) {
	s := harness.Start(t, harness.Options{Configure: func(cfg *config.Config) {
		cfg.RateLimits.Enabled = true
		cfg.RateLimits.PerSecond = 0.5
		cfg.RateLimits.Burst = 3
	}})
	limited := 0
	for i := 0; i < 6; i++ {
		req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/login", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if !strings.Contains(string(body), `"errcode":"M_LIMIT_EXCEEDED"`) || !strings.Contains(string(body), `"retry_after_ms"`) {
				t.Fatalf("429 body: %s", body)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("Retry-After header %q", resp.Header.Get("Retry-After"))
			}
		}
	}
	if limited != 3 {
		t.Fatalf("%d of 6 requests limited with burst 3, want 3", limited)
	}
	// Unlimited endpoints (discovery) still answer.
	if status, _ := s.Do(t, "GET", "/_matrix/client/versions", "", nil); status != 200 {
		t.Fatalf("versions while limited: %d", status)
	}
}

func TestOversizedBodyIsTooLarge(t *testing.T) {
	s := harness.Start(t, harness.Options{Configure: func(cfg *config.Config) { cfg.Limits.MaxRequestBytes = 4096 }})
	big := `{"username":"` + strings.Repeat("a", 10000) + `"}`
	status, body := s.Do(t, "POST", "/_matrix/client/v3/register", "", big)
	if status != http.StatusRequestEntityTooLarge || body["errcode"] != "M_TOO_LARGE" {
		t.Fatalf("oversized body: %d %v", status, body)
	}
}

func TestMetricsCountRequests(t *testing.T) {
	s := harness.Start(t, harness.Options{Args: []string{"--metrics-listen", "127.0.0.1:0"}})
	for i := 0; i < 3; i++ {
		s.Do(t, "GET", "/_matrix/client/versions", "", nil)
	}
	addr := ""
	for _, line := range strings.Split(s.Logs(), "\n") {
		if strings.Contains(line, `"listener":"metrics"`) {
			i := strings.Index(line, `"addr":"`)
			addr = line[i+8:]
			addr = addr[:strings.IndexByte(addr, '"')]
		}
	}
	if addr == "" {
		t.Fatalf("metrics listener not logged:\n%s", s.Logs())
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `myelin_clientapi_requests_total{method="GET",route="GET /_matrix/client/versions",status="200"}`
	idx := strings.Index(string(body), want)
	if idx < 0 {
		t.Fatalf("metrics lack %s:\n%.2000s", want, body)
	}
	rest := strings.Fields(string(body)[idx+len(want):])
	if n, _ := strconv.Atoi(rest[0]); n < 3 {
		t.Fatalf("versions counted %s times, want >= 3", rest[0])
	}
}
