package media

import (
	"context"
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

func (f *federationFetcher) FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (string, string, io.ReadCloser, error) {
	resp, err := f.d.DownloadMedia(ctx, f.origin, spec.ServerName(serverName), mediaID)
	if err != nil {
		return "", "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("remote answered %d", resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return "", "", nil, errors.New("remote answer is not multipart/mixed")
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
