package media

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// fakeDownloader answers the authenticated and the legacy media downloads with canned
// responses and counts the legacy requests.
type fakeDownloader struct {
	auth   func() *http.Response
	legacy int
}

func (f *fakeDownloader) DownloadMedia(context.Context, spec.ServerName, spec.ServerName, string) (*http.Response, error) {
	return f.auth(), nil
}

func (f *fakeDownloader) DownloadMediaLegacy(context.Context, spec.ServerName, string) (*http.Response, error) {
	f.legacy++
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}},
		Body: io.NopCloser(strings.NewReader("legacy body"))}, nil
}

func response(status int, ct, body string) func() *http.Response {
	return func() *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}}, Body: io.NopCloser(strings.NewReader(body))}
	}
}

// A server that does not serve authenticated media (unknown endpoint, or a plain answer
// instead of multipart/mixed) is asked with the legacy endpoint; a real "not found"
// or a multipart answer is not.
func TestFederationFetchFallsBackToLegacy(t *testing.T) {
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	meta, _ := w.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	_, _ = meta.Write([]byte(`{}`))
	part, _ := w.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain"}})
	_, _ = part.Write([]byte("authenticated body"))
	_ = w.Close()
	multipartAnswer := response(200, "multipart/mixed; boundary="+w.Boundary(), mp.String())

	for _, c := range []struct {
		name     string
		auth     func() *http.Response
		wantBody string
		legacy   int
	}{
		{"multipart answer", multipartAnswer, "authenticated body", 0},
		{"plain 200 answer", response(200, "text/plain", "Hello"), "legacy body", 1},
		{"unrecognized endpoint", response(404, "application/json", `{"errcode":"M_UNRECOGNIZED"}`), "legacy body", 1},
		{"no Matrix error", response(404, "text/html", `<html>nope</html>`), "legacy body", 1},
		{"media not found", response(404, "application/json", `{"errcode":"M_NOT_FOUND"}`), "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &fakeDownloader{auth: c.auth}
			f := NewFederationFetcher(d, "us.example", false)
			_, _, body, err := f.FetchMedia(context.Background(), "them.example", "abc", 1<<20)
			if c.wantBody == "" {
				if err == nil {
					body.Close()
					t.Fatal("fetch succeeded, want an error")
				}
			} else {
				if err != nil {
					t.Fatalf("fetch: %v", err)
				}
				got, _ := io.ReadAll(body)
				body.Close()
				if string(got) != c.wantBody {
					t.Fatalf("body %q, want %q", got, c.wantBody)
				}
			}
			if d.legacy != c.legacy {
				t.Fatalf("%d legacy requests, want %d", d.legacy, c.legacy)
			}
		})
	}
}
