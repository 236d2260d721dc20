package clientapi

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/media"
)

// Media repository endpoints (authenticated /_matrix/client/v1/media/* and the legacy
// /_matrix/media/v3 ones); the logic lives in clientapi/media.

// Prefixes of the legacy media API. Its download, thumbnail, config and preview_url
// endpoints are deprecated since v1.11 (frozen) but still served unauthenticated for old clients.
var (
	mediaV3 = []string{"/_matrix/media/v3", "/_matrix/media/r0"}
	mediaV1 = []string{"/_matrix/media/v1"}
)

// Media returns the media repository, for the federation media endpoints (cmd wires them).
func (s *Server) Media() *media.Service { return s.media }

func (s *Server) getMediaConfig(r *http.Request) (any, error) {
	return s.media.Config(), nil
}

// uploadFileName is the filename query parameter (optional). It is stored in a text
// column and echoed in Content-Disposition, so it must be UTF-8 (PostgreSQL refuses
// anything else with an internal error).
func uploadFileName(r *http.Request) (string, error) {
	name := r.URL.Query().Get("filename")
	if !utf8.ValidString(name) {
		return "", httputil.InvalidParam("filename is not valid UTF-8")
	}
	return name, nil
}

func (s *Server) postUpload(r *http.Request) (any, error) {
	d := requestDevice(r)
	name, err := uploadFileName(r)
	if err != nil {
		return nil, err
	}
	uri, err := s.media.Upload(r.Context(), d.UserID, r.Header.Get("Content-Type"), name, r.Body, r.ContentLength)
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": uri}, nil
}

func (s *Server) postMediaCreate(r *http.Request) (any, error) {
	d := requestDevice(r)
	uri, exp, err := s.media.Create(r.Context(), d.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": uri, "unused_expires_at": exp}, nil
}

func (s *Server) putUpload(r *http.Request) (any, error) {
	d := requestDevice(r)
	name, err := uploadFileName(r)
	if err != nil {
		return nil, err
	}
	err = s.media.UploadTo(r.Context(), d.UserID, pathVar(r, "serverName"), pathVar(r, "mediaId"),
		r.Header.Get("Content-Type"), name, r.Body, r.ContentLength)
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) getMediaDownload(w http.ResponseWriter, r *http.Request) {
	m, err := s.media.Lookup(r.Context(), pathVar(r, "serverName"), pathVar(r, "mediaId"), media.TimeoutParam(r))
	if err != nil {
		writeMediaError(w, r, err)
		return
	}
	f, err := s.media.Open(m)
	if err != nil {
		writeMediaError(w, r, err)
		return
	}
	defer f.Close()
	name := m.UploadName
	if fn := pathVar(r, "fileName"); fn != "" {
		name = fn
	}
	media.Serve(w, r, m.ContentType, name, time.UnixMilli(m.UploadedTS), f)
}

func (s *Server) getMediaThumbnail(w http.ResponseWriter, r *http.Request) {
	width, height, method, err := media.ThumbnailParams(r)
	if err != nil {
		writeMediaError(w, r, err)
		return
	}
	m, err := s.media.Lookup(r.Context(), pathVar(r, "serverName"), pathVar(r, "mediaId"), media.TimeoutParam(r))
	if err != nil {
		writeMediaError(w, r, err)
		return
	}
	t, err := s.media.Thumbnail(r.Context(), m, width, height, method)
	if err != nil {
		writeMediaError(w, r, err)
		return
	}
	defer t.File.Close()
	name := "thumbnail.png"
	if t.ContentType == "image/jpeg" {
		name = "thumbnail.jpg"
	}
	media.Serve(w, r, t.ContentType, name, time.UnixMilli(t.Meta.CreatedTS), t.File)
}

func (s *Server) getPreviewURL(r *http.Request) (any, error) {
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return nil, httputil.MissingParam("url is required")
	}
	user := ""
	if d := requestDevice(r); d != nil {
		user = d.UserID
	}
	return s.media.Preview(r.Context(), user, strings.TrimSpace(raw))
}

// writeMediaError answers errors of media endpoints with the security headers too.
func writeMediaError(w http.ResponseWriter, r *http.Request, err error) {
	media.SetSecurityHeaders(w.Header())
	httputil.WriteError(w, r, err)
}
