package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// FederationDownloader is the X-Matrix signed media download of the federation client
// (gomatrixserverlib's fclient.FederationClient.DownloadMedia).
type FederationDownloader interface {
	DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error)
	// DownloadMediaLegacy is the unauthenticated GET /_matrix/media/v3/download of
	// servers from before authenticated media.
	DownloadMediaLegacy(ctx context.Context, destination spec.ServerName, mediaID string) (*http.Response, error)
}

// NewFederationFetcher fetches remote media over GET /_matrix/federation/v1/media/download,
// signing as origin. Redirects in the answer (a Location part) are followed with a plain
// client that refuses private addresses unless allowPrivate.
func NewFederationFetcher(d FederationDownloader, origin string, allowPrivate bool) RemoteFetcher {
	dialer := &net.Dialer{Timeout: 30 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || (!allowPrivate && IsForbiddenAddress(ap.Addr())) {
			return errForbiddenAddress
		}
		return nil
	}}
	return &federationFetcher{d: d, origin: spec.ServerName(origin), plain: &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: 30 * time.Second},
	}}
}

type federationFetcher struct {
	d      FederationDownloader
	origin spec.ServerName
	plain  *http.Client
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// errNotAuthenticatedMedia marks an answer of the authenticated media endpoint that
// shows the server does not implement it (properly): the legacy endpoint is tried.
var errNotAuthenticatedMedia = errors.New("remote does not serve authenticated media")

func (f *federationFetcher) FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (string, string, io.ReadCloser, error) {
	ct, name, body, err := f.fetchAuthenticated(ctx, serverName, mediaID)
	if !errors.Is(err, errNotAuthenticatedMedia) {
		return ct, name, body, err
	}
	// Servers from before authenticated media (spec v1.11) only serve the old,
	// unauthenticated endpoint; the spec has servers fall back to it.
	resp, lerr := f.d.DownloadMediaLegacy(ctx, spec.ServerName(serverName), mediaID)
	if lerr != nil {
		return "", "", nil, lerr
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("remote answered %d (legacy download)", resp.StatusCode)
	}
	if _, dp, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		name = dp["filename"]
	}
	return resp.Header.Get("Content-Type"), name, resp.Body, nil
}

// fetchAuthenticated downloads with GET /_matrix/federation/v1/media/download; its
// error wraps errNotAuthenticatedMedia when the server does not implement it.
func (f *federationFetcher) fetchAuthenticated(ctx context.Context, serverName, mediaID string) (string, string, io.ReadCloser, error) {
	resp, err := f.d.DownloadMedia(ctx, f.origin, spec.ServerName(serverName), mediaID)
	if err != nil {
		return "", "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var me struct {
			Errcode string `json:"errcode"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&me)
		resp.Body.Close()
		// An unknown endpoint: 404/405 M_UNRECOGNIZED (or an answer that is no Matrix
		// error at all, as from a plain web server).
		if (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
			resp.StatusCode == http.StatusBadRequest) && (me.Errcode == "M_UNRECOGNIZED" || me.Errcode == "") {
			return "", "", nil, fmt.Errorf("%w: answered %d", errNotAuthenticatedMedia, resp.StatusCode)
		}
		return "", "", nil, fmt.Errorf("remote answered %d", resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: the answer is not multipart/mixed", errNotAuthenticatedMedia)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("read metadata part: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(meta, 64<<10))
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("read content part: %w", err)
	}
	name := ""
	if _, dp, err := mime.ParseMediaType(part.Header.Get("Content-Disposition")); err == nil {
		name = dp["filename"]
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
		if err != nil {
			return "", "", nil, err
		}
		if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
			return "", "", nil, errors.New("bad Location scheme")
		}
		r2, err := f.plain.Do(req)
		if err != nil {
			return "", "", nil, err
		}
		if r2.StatusCode != http.StatusOK {
			r2.Body.Close()
			return "", "", nil, fmt.Errorf("redirected download answered %d", r2.StatusCode)
		}
		return r2.Header.Get("Content-Type"), name, r2.Body, nil
	}
	return part.Header.Get("Content-Type"), name, readCloser{Reader: part, close: resp.Body.Close}, nil
}
