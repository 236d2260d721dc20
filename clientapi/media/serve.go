package media

import (
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// inlineTypes are the content types the spec lists as safe to serve inline
// ("Serving inline content", v1.12+). Everything else is served as an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// contentSecurityPolicy sandboxes whatever a browser makes of served media.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// activeType reports content types a browser may execute or render as a document (scripts,
// markup, plugins). Even as attachments they are served as application/octet-stream.
func activeType(mt string) bool {
	switch {
	case mt == "text/html", mt == "application/xhtml+xml", mt == "image/svg+xml",
		mt == "text/xml", mt == "application/xml", mt == "text/xsl", mt == "application/xslt+xml",
		mt == "application/x-shockwave-flash", mt == "application/pdf",
		strings.Contains(mt, "javascript"), strings.Contains(mt, "ecmascript"),
		strings.HasPrefix(mt, "multipart/"), strings.HasPrefix(mt, "message/"),
		strings.HasSuffix(mt, "+xml"):
		return true
	}
	return false
}

// SafeContentType returns the Content-Type to serve and whether it may be shown inline:
// allowlisted types keep their type (text types gain charset if given) and are inline.
// Other types keep their media type (clients rely on getting back what was uploaded) but
// are attachments, under a sandboxing CSP and nosniff; types a browser could run
// (activeType) and unparseable ones become application/octet-stream.
func SafeContentType(ct string) (string, bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || activeType(mt) {
		return "application/octet-stream", false
	}
	if !inlineTypes[mt] {
		return mt, false
	}
	if cs := params["charset"]; cs != "" && strings.HasPrefix(mt, "text/") {
		return mime.FormatMediaType(mt, map[string]string{"charset": cs}), true
	}
	return mt, true
}

// ContentDisposition builds an inline or attachment disposition with the file name
// escaped per RFC 6266 (quoted-string, or RFC 5987 filename* for non-ASCII names).
func ContentDisposition(inline bool, fileName string) string {
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	fileName = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			return -1
		}
		return r
	}, fileName)
	if fileName == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": fileName}); v != "" {
		return v
	}
	return disp
}

// SetSecurityHeaders sets the headers every media response carries.
func SetSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
}

// Serve writes media content with safe headers; Range and conditional requests are
// handled by http.ServeContent.
func Serve(w http.ResponseWriter, r *http.Request, contentType, fileName string, modTime time.Time, content io.ReadSeeker) {
	ct, inline := SafeContentType(contentType)
	h := w.Header()
	SetSecurityHeaders(h)
	h.Set("Content-Type", ct)
	h.Set("Content-Disposition", ContentDisposition(inline, fileName))
	// Content behind an mxc:// URI never changes.
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	http.ServeContent(w, r, "", modTime, content)
}
