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

// SafeContentType returns the Content-Type to serve and whether it may be shown inline:
// allowlisted types keep their type (text types gain charset if given), anything else
// becomes application/octet-stream.
func SafeContentType(ct string) (string, bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !inlineTypes[mt] {
		return "application/octet-stream", false
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
