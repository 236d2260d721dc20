package media

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// RegisterFederationRoutes serves GET /v1/media/download/{mediaId} and
// /v1/media/thumbnail/{mediaId} on r: the federation API's router for
// /_matrix/federation, whose handlers run only for requests with a valid X-Matrix signature.
func (s *Service) RegisterFederationRoutes(r *mux.Router) {
	mediaID := func(r *http.Request) string {
		v := mux.Vars(r)["mediaId"]
		if d, err := url.PathUnescape(v); err == nil {
			return d
		}
		return v
	}
	r.HandleFunc("/v1/media/download/{mediaId}", func(w http.ResponseWriter, r *http.Request) {
		s.FederationDownload(w, r, mediaID(r))
	}).Methods(http.MethodGet)
	r.HandleFunc("/v1/media/thumbnail/{mediaId}", func(w http.ResponseWriter, r *http.Request) {
		s.FederationThumbnail(w, r, mediaID(r))
	}).Methods(http.MethodGet)
}

// FederationDownload serves GET /_matrix/federation/v1/media/download/{mediaId}: a
// multipart/mixed body whose first part is the (empty) JSON metadata and whose second
// part is the content with its Content-Type and Content-Disposition.
func (s *Service) FederationDownload(w http.ResponseWriter, r *http.Request, mediaID string) {
	m, err := s.Lookup(r.Context(), s.cfg.ServerName, mediaID, timeoutParam(r))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	f, err := s.Open(m)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer f.Close()
	writeMultipart(w, m.ContentType, m.UploadName, f)
}

// FederationThumbnail serves GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (s *Service) FederationThumbnail(w http.ResponseWriter, r *http.Request, mediaID string) {
	m, err := s.Lookup(r.Context(), s.cfg.ServerName, mediaID, timeoutParam(r))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	width, height, method, err := ThumbnailParams(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	t, err := s.Thumbnail(r.Context(), m, width, height, method)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer t.File.Close()
	writeMultipart(w, t.ContentType, "thumbnail"+extFor(t.ContentType), t.File)
}

func writeMultipart(w http.ResponseWriter, contentType, fileName string, content *os.File) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	_, _ = meta.Write([]byte("{}"))
	ct, inline := SafeContentType(contentType)
	part, _ := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {ct},
		"Content-Disposition": {ContentDisposition(inline, fileName)},
	})
	_, _ = io.Copy(part, content)
	_ = mw.Close()
}

// ThumbnailParams parses width, height and method of a thumbnail request.
func ThumbnailParams(r *http.Request) (width, height int, method string, err error) {
	q := r.URL.Query()
	width, err1 := strconv.Atoi(q.Get("width"))
	height, err2 := strconv.Atoi(q.Get("height"))
	if q.Get("width") == "" || q.Get("height") == "" {
		return 0, 0, "", httputil.MissingParam("width and height are required")
	}
	if err1 != nil || err2 != nil || width <= 0 || height <= 0 {
		return 0, 0, "", httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "width and height must be positive integers")
	}
	method = q.Get("method")
	if method == "" {
		method = "scale"
	}
	if method != "scale" && method != "crop" {
		return 0, 0, "", httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "method must be crop or scale")
	}
	return width, height, method, nil
}

// timeoutParam is timeout_ms (default 20 s, at most 2 min) for not-yet-uploaded media.
func timeoutParam(r *http.Request) time.Duration {
	ms, err := strconv.ParseInt(r.URL.Query().Get("timeout_ms"), 10, 64)
	if err != nil || ms < 0 {
		ms = 20_000
	}
	return time.Duration(min(ms, 120_000)) * time.Millisecond
}

// TimeoutParam exposes timeoutParam to the client API.
func TimeoutParam(r *http.Request) time.Duration { return timeoutParam(r) }

func extFor(ct string) string {
	switch ct {
	case "image/jpeg":
		return ".jpg"
	case "image/png":
		return ".png"
	}
	return ""
}
