// Package clientapi serves the Matrix client-server API: routing, authentication,
// rate limits and the handlers, grouped by area in files of this package.
package clientapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/appservice"
	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/delayed"
	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/keys"
	"github.com/myelin-chat/myelin/clientapi/media"
	"github.com/myelin-chat/myelin/clientapi/ratelimit"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomserver/directory"
	"github.com/myelin-chat/myelin/searchapi"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi"
	"github.com/myelin-chat/myelin/syncapi/push"
)

// Deps is what the client API needs from the rest of the server; cmd wires it.
type Deps struct {
	Config        *config.Config
	DB            *storage.DB
	Authenticator *auth.Authenticator
	Accounts      *auth.Accounts
	Rooms         *roomserver.Roomserver
	// Sync is the sync component (/sync, typing, receipts, presence); writers of the
	// streams it follows call its On* methods to wake long-polls. Nil disables /sync.
	Sync *syncapi.Service
	// Push serves push rules, pushers, notifications and unread counts; nil disables them.
	Push *push.Service
	// Search answers POST /search; nil answers 404 M_UNRECOGNIZED.
	Search *searchapi.Service
	// RemoteMedia fetches media of other servers; nil answers 404 for remote media.
	RemoteMedia media.RemoteFetcher
	// Memberships changes memberships also in rooms of other servers (federation);
	// nil limits joins, leaves, invites and knocks to rooms this server is in.
	Memberships Memberships
	// Remote asks other servers over federation (profiles, directories, space
	// hierarchies, backfill); nil serves this server's data only.
	Remote Remote
	// RemoteKeys reaches other servers' users' keys and devices (E2EE over federation);
	// nil lists those servers in failures.
	RemoteKeys keys.Remote
	// Registry receives the API's metrics; nil disables them.
	Registry prometheus.Registerer
	// Version is the server version reported by /_matrix/federation/v1/version and logs.
	Version string
	// AppServices are the loaded application service registrations; nil means none.
	AppServices *appservice.Registry
	// Delayed schedules delayed events (MSC4140); nil refuses them.
	Delayed *delayed.Service
}

// Server is the client-server API.
type Server struct {
	cfg        *config.Config
	db         *storage.DB
	authn      *auth.Authenticator
	accounts   *auth.Accounts
	rooms      *roomserver.Roomserver
	sync       *syncapi.Service
	push       *push.Service
	search     *searchapi.Service
	noticeMu   sync.Mutex // serialises creating server notice rooms (servernotices.go)
	limiter    *ratelimit.Limiter
	appsvcs    *appservice.Registry
	metrics    *metrics
	version    string
	router     *pathRouter
	filters    filterCache // parsed /sync filters (sync.go)
	seen       deviceSeen  // throttled device last-seen writes (devices.go)
	media      *media.Service
	members    Memberships
	dir        *directory.Directory
	remote     Remote
	remoteKeys keys.Remote
	delayed    *delayed.Service
}

// NewServer builds the API and its route table.
func NewServer(d Deps) *Server {
	s := &Server{
		cfg:        d.Config,
		db:         d.DB,
		authn:      d.Authenticator,
		appsvcs:    d.AppServices,
		accounts:   d.Accounts,
		rooms:      d.Rooms,
		sync:       d.Sync,
		push:       d.Push,
		search:     d.Search,
		metrics:    newMetrics(d.Registry),
		version:    d.Version,
		dir:        directory.New(d.DB, d.Rooms, d.Config.ServerName),
		remote:     d.Remote,
		remoteKeys: d.RemoteKeys,
		delayed:    d.Delayed,
	}
	s.media = media.NewService(d.Config, d.DB, d.RemoteMedia)
	s.members = d.Memberships
	if s.members == nil {
		s.members = localMemberships{d.Rooms}
	}
	if d.Config.RateLimits.Enabled {
		s.limiter = ratelimit.New(d.Config.RateLimits.PerSecond, d.Config.RateLimits.Burst, d.Config.RateLimits.ExemptUsers)
	}
	s.router = s.buildRouter()
	return s
}

// Handler returns the HTTP handler of the whole API, CORS and request limits included.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, _ := httputil.WithRequestID(r.Context())
		r = r.WithContext(ctx)
		setCORS(w.Header())
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		s.router.ServeHTTP(w, r)
	})
}

// The CORS headers of every answer. Their value slices are shared by all responses
// (net/http only reads them; Set replaces a slice and Add copies a full one), which
// saves four allocations per request.
var (
	corsAllowOrigin   = []string{"*"}
	corsAllowMethods  = []string{"GET, HEAD, POST, PUT, DELETE, OPTIONS"}
	corsAllowHeaders  = []string{"Origin, X-Requested-With, Content-Type, Accept, Authorization"}
	corsExposeHeaders = []string{"ETag, Retry-After"}
)

func setCORS(h http.Header) {
	h["Access-Control-Allow-Origin"] = corsAllowOrigin
	h["Access-Control-Allow-Methods"] = corsAllowMethods
	h["Access-Control-Allow-Headers"] = corsAllowHeaders
	h["Access-Control-Expose-Headers"] = corsExposeHeaders
}

// authMode says whether a route needs an access token.
type authMode int

const (
	authNone     authMode = iota // no token looked at
	authRequired                 // 401 without a valid token
	authOptional                 // device set when a valid token is given
)

// handlerFunc is the shape of every JSON endpoint: parse, call a component, return the
// response body (or an httputil.Response) or an error rendered by httputil.WriteError.
type handlerFunc func(r *http.Request) (any, error)

// route is one row of the route table.
type route struct {
	method string
	// prefixes are full URL prefixes (e.g. clientV3 = /_matrix/client/v3 and r0).
	prefixes []string
	path     string
	auth     authMode
	// limited applies the per-client rate limit.
	limited bool
	// maxBody caps the request body (0: cfg.Limits.MaxRequestBytes); uploads set more.
	maxBody int64
	// raw handlers write their own response (media downloads, redirects).
	h   handlerFunc
	raw http.HandlerFunc
}

// Common prefix sets. Older clients and bots still call r0, so every v3 route is served there too.
var (
	clientV3 = []string{"/_matrix/client/v3", "/_matrix/client/r0"}
	clientV1 = []string{"/_matrix/client/v1"}
	unstable = []string{"/_matrix/client/unstable"}
)

func (s *Server) buildRouter() *pathRouter {
	r := newPathRouter()
	for _, rt := range s.routes() {
		for _, p := range rt.prefixes {
			name := rt.method + " " + p + rt.path
			r.handle(rt.method, p+rt.path, s.wrap(name, rt))
		}
	}
	// The unauthenticated server-server endpoints live on the federation listener, but a
	// client (or Complement) asking this port with the wrong method must still learn that
	// the endpoint exists (405), while the right method gets 404 here.
	for path, method := range map[string]string{
		"/_matrix/federation/v1/version": http.MethodGet,
		"/_matrix/key/v2/server":         http.MethodGet,
		"/_matrix/key/v2/query":          http.MethodPost,
	} {
		r.handle(method, path, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			httputil.WriteError(w, req, httputil.Unrecognized("Served on the federation listener"))
		}))
	}
	r.notFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.Unrecognized("Unrecognized request"))
	})
	r.methodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.NewError(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed for this endpoint"))
	})
	return r
}

type deviceKey struct{}

// requestDevice returns the authenticated device of a request (nil when anonymous).
func requestDevice(r *http.Request) *auth.Device {
	d, _ := r.Context().Value(deviceKey{}).(*auth.Device)
	return d
}

// pathVar returns a decoded path variable. The router matches on the encoded path so
// that IDs containing '/' or '%' survive; decoding happens exactly once, here.
func pathVar(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// roomIDVar returns the decoded {roomId} path variable, or M_INVALID_PARAM when it is not
// a room ID.
func roomIDVar(r *http.Request) (string, error) {
	roomID := pathVar(r, "roomId")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", httputil.InvalidParam("%q is not a valid room ID", roomID)
	}
	return roomID, nil
}

// wrap adds authentication, rate limiting, metrics and logging to a route's handler.
func (s *Server) wrap(name string, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		s.serve(sw, r, rt)
		elapsed := time.Since(start)
		s.metrics.observe(name, r.Method, sw.status, elapsed)
		if !logrus.IsLevelEnabled(logrus.DebugLevel) {
			// The access log is a debug log: skip building its fields on every request.
			return
		}
		fields := logrus.Fields{
			"request_id": httputil.RequestID(r.Context()),
			"method":     r.Method,
			// The route template, not the path or query: those may carry secrets
			// (access_token, registration tokens in admin paths).
			"route":  name,
			"status": sw.status,
			"ms":     elapsed.Milliseconds(),
		}
		if d := requestDevice(r); d != nil {
			fields["user_id"] = d.UserID
		}
		logrus.WithFields(fields).Debug("request")
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) {
	limit := s.cfg.Limits.MaxRequestBytes
	if rt.maxBody > 0 {
		limit = rt.maxBody
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if rt.auth != authNone {
		d, err := s.authenticate(r)
		if err != nil && (rt.auth == authRequired || !errors.Is(err, errNoToken)) {
			httputil.WriteError(w, r, err)
			return
		}
		if d != nil {
			r = r.WithContext(context.WithValue(r.Context(), deviceKey{}, d))
			s.touchDevice(r, d)
		}
	}
	if rt.limited && s.limiter != nil && !s.rateLimitExempt(requestDevice(r)) {
		key := clientIP(r)
		if d := requestDevice(r); d != nil {
			key = d.UserID
		}
		if ok, wait := s.limiter.Allow(key); !ok {
			httputil.WriteError(w, r, httputil.LimitExceeded(wait.Milliseconds()+1))
			return
		}
	}
	if rt.raw != nil {
		rt.raw(w, r)
		return
	}
	res, err := rt.h(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, res)
}

var errNoToken = httputil.MissingToken("Missing access token")

// accessToken returns the token from the Authorization header or the access_token query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func (s *Server) authenticate(r *http.Request) (*auth.Device, error) {
	tok := accessToken(r)
	if tok == "" {
		return nil, errNoToken
	}
	if reg := s.appsvcs.ByToken(tok); reg != nil {
		return s.appServiceDevice(r, reg)
	}
	d, err := s.authn.Authenticate(r.Context(), tok)
	switch {
	case errors.Is(err, auth.ErrExpiredToken):
		return nil, httputil.UnknownToken("Access token has expired").With("soft_logout", true)
	case errors.Is(err, auth.ErrUnknownToken):
		return nil, httputil.UnknownToken("Unknown access token").With("soft_logout", false)
	case err != nil:
		return nil, err
	}
	return d, nil
}

// clientIP is the peer address (without port). A reverse proxy's X-Forwarded-For is not
// trusted by default, since any client could set it to dodge rate limits.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
