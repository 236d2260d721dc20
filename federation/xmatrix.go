package federation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// XMatrix is a parsed "Authorization: X-Matrix ..." header.
type XMatrix struct {
	Origin      string
	Destination string // may be empty (older senders)
	Key         string
	Sig         string
}

var errNotXMatrix = errors.New("not an X-Matrix authorization")

// ParseXMatrix parses an X-Matrix Authorization header value: the scheme, then
// comma-separated auth-params name=value where value is a token or a quoted string
// (RFC 9110 §11.2, backslash escapes allowed). Parameter names are case-insensitive,
// unknown ones are ignored; origin, key and sig are required and may not repeat.
func ParseXMatrix(header string) (XMatrix, error) {
	scheme, rest, _ := strings.Cut(strings.TrimLeft(header, " \t"), " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return XMatrix{}, errNotXMatrix
	}
	var x XMatrix
	seen := map[string]bool{}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] == ',' {
			s = s[1:]
			continue
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return XMatrix{}, fmt.Errorf("X-Matrix: parameter without value in %q", s)
		}
		name := strings.ToLower(strings.TrimRight(s[:eq], " \t"))
		if !isToken(name) {
			return XMatrix{}, fmt.Errorf("X-Matrix: bad parameter name %q", name)
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i, closed := 1, false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				if c < 0x20 && c != '\t' || c == 0x7f {
					return XMatrix{}, errors.New("X-Matrix: control character in quoted string")
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return XMatrix{}, errors.New("X-Matrix: unterminated quoted string")
			}
			value, s = b.String(), s[i:]
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
			if value == "" || !isToken68(value) {
				return XMatrix{}, fmt.Errorf("X-Matrix: bad value for %s", name)
			}
		}
		s = strings.TrimLeft(s, " \t")
		if s != "" && s[0] != ',' {
			return XMatrix{}, fmt.Errorf("X-Matrix: expected ',' after %s", name)
		}
		switch name {
		case "origin", "destination", "key", "sig":
			if seen[name] {
				return XMatrix{}, fmt.Errorf("X-Matrix: repeated %s", name)
			}
			seen[name] = true
		}
		switch name {
		case "origin":
			x.Origin = value
		case "destination":
			x.Destination = value
		case "key":
			x.Key = value
		case "sig":
			x.Sig = value
		}
	}
	if x.Origin == "" || x.Key == "" || x.Sig == "" {
		return XMatrix{}, errors.New("X-Matrix: origin, key and sig are required")
	}
	return x, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// isToken68 accepts unquoted values: tokens plus ':', '/', '=', '+', '[', ']' (server
// names, key IDs and base64 appear unquoted in the wild).
func isToken68(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),;<>?@\{}`, c) >= 0 {
			return false
		}
	}
	return true
}

type originKey struct{}

// Origin returns the authenticated origin server of a federation request.
func Origin(ctx context.Context) spec.ServerName {
	o, _ := ctx.Value(originKey{}).(spec.ServerName)
	return o
}

// maxRequestBody bounds federation request bodies read for signature checks.
const maxRequestBody = 20 << 20

// Authenticate is middleware checking the X-Matrix signature of every request: the
// origin must be allowed, the destination (when given) must be us, and the signature
// must verify with the origin's key valid now. Failures get 401 M_UNAUTHORIZED (403
// M_FORBIDDEN for a denied origin) before the handler runs.
func (s *Server) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin, err := s.authenticate(r)
		if err != nil {
			logrus.WithField("origin", origin).WithField("path", r.URL.Path).WithError(err).Info("refused federation request")
			httputil.WriteError(w, r, err)
			return
		}
		if s.peers != nil {
			s.peers.PeerSeen(origin)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
	})
}

func unauthorized(format string, args ...any) *httputil.Error {
	return httputil.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}

func (s *Server) authenticate(r *http.Request) (spec.ServerName, error) {
	var x XMatrix
	found := false
	for _, h := range r.Header.Values("Authorization") {
		px, err := ParseXMatrix(h)
		if errors.Is(err, errNotXMatrix) {
			continue
		}
		if err != nil {
			return "", unauthorized("%v", err)
		}
		if found && px.Origin != x.Origin {
			return "", unauthorized("X-Matrix headers name different origins")
		}
		x, found = px, true
	}
	if !found {
		return "", unauthorized("Missing X-Matrix Authorization header")
	}
	origin := spec.ServerName(x.Origin)
	if _, _, ok := spec.ParseAndValidateServerName(origin); !ok {
		return origin, unauthorized("Invalid origin server name")
	}
	if x.Destination != "" && x.Destination != s.cfg.ServerName {
		return origin, unauthorized("Request is for %q, not this server", x.Destination)
	}
	if !ServerAllowed(s.cfg.Federation, x.Origin) {
		return origin, httputil.Forbidden("Federation with %s is not allowed", x.Origin)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return origin, httputil.BadJSON("Could not read request body")
	}
	if len(body) > maxRequestBody {
		return origin, httputil.TooLarge("Request body too large")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	_, res := fclient.VerifyHTTPRequest(r, time.Now(), spec.ServerName(s.cfg.ServerName), nil, s.keys)
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch {
	case res.Code == http.StatusOK:
		return origin, nil
	case res.Code >= 500:
		return origin, httputil.NewError(http.StatusInternalServerError, "M_UNKNOWN", "Could not check the request signature")
	case res.Code == http.StatusBadRequest:
		return origin, httputil.NewError(http.StatusBadRequest, "M_NOT_JSON", "Request body must be JSON (application/json)")
	default:
		return origin, unauthorized("Invalid request signature")
	}
}
