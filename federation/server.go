// Package federation serves the Matrix server-server API: signing keys and the notary,
// X-Matrix request checking on every other endpoint, and the outgoing federation client
// (server discovery, TLS, request signing) with the key ring that verifies other servers.
package federation

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver/directory"
	"github.com/myelin-chat/myelin/storage"
)

// keyValidity is how long other servers may cache our key response.
const keyValidity = 24 * time.Hour

// Server is the server-server API.
type Server struct {
	cfg      *config.Config
	key      config.SigningKey
	version  string
	db       *storage.DB
	rooms    Rooms
	members  MembershipRooms
	txns     *txnCache
	client   *Client
	store    *KeyStore
	keys     *gomatrixserverlib.KeyRing
	router   *mux.Router
	authed   *mux.Router
	dir      *directory.Directory
	openID   func(ctx context.Context, token string) (string, error)
	userKeys LocalKeys
	edus     EDUReceiver
	peers    PeerTracker
}

// Deps are what the federation API is built from.
type Deps struct {
	Config  *config.Config
	Key     config.SigningKey
	Version string
	DB      *storage.DB
	// Rooms answers the room endpoints; nil leaves them unregistered.
	Rooms Rooms
	// Resolver overrides server name resolution (tests); nil uses DNS and well-known.
	Resolver *Resolver
	// OpenIDUser returns the user an OpenID token was issued to (storage.ErrNotFound
	// when unknown or expired), for /openid/userinfo; nil refuses every token.
	OpenIDUser func(ctx context.Context, token string) (string, error)
	// Keys answers /user/keys/query, /user/keys/claim and /user/devices; nil leaves them unregistered.
	Keys LocalKeys
	// EDUs applies incoming EDUs; nil ignores them.
	EDUs EDUReceiver
	// Peers hears of every authenticated request; nil ignores them.
	Peers PeerTracker
}

// NewServer builds the federation API and the outgoing federation client.
func NewServer(d Deps) (*Server, error) {
	cfg := d.Config
	name := spec.ServerName(cfg.ServerName)
	client, err := NewClient(cfg.Federation, name, d.Key, ClientOptions{Resolver: d.Resolver, Version: d.Version})
	if err != nil {
		return nil, fmt.Errorf("federation client: %w", err)
	}
	store := NewKeyStore(d.DB, name, d.Key)
	s := &Server{cfg: cfg, key: d.Key, version: d.Version, db: d.DB, rooms: d.Rooms, txns: newTxnCache(time.Hour, 10000), client: client, store: store,
		openID: d.OpenIDUser, userKeys: d.Keys, edus: d.EDUs, peers: d.Peers}
	if d.Rooms != nil {
		s.dir = directory.New(d.DB, d.Rooms, cfg.ServerName)
	}
	s.keys = NewKeyRing(cfg, store, client, d.DB)
	// The membership endpoints (joins, leaves, invites, knocks) need more of the
	// roomserver than the room reads; the real roomserver provides it.
	if m, ok := d.Rooms.(MembershipRooms); ok {
		s.members = m
	}
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	// Unauthenticated: keys, notary and version.
	r.HandleFunc("/_matrix/key/v2/server", s.getServerKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/server/{keyID}", s.getServerKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/query/{serverName}", s.getNotaryKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/query/{serverName}/{keyID}", s.getNotaryKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/query", s.postNotaryKeys).Methods(http.MethodPost)
	r.HandleFunc("/_matrix/federation/v1/version", s.getVersion).Methods(http.MethodGet)
	// Other methods on version would fall into the signed subrouter below and 404; they
	// are a wrong method on a known endpoint (405).
	r.HandleFunc("/_matrix/federation/v1/version", methodNotAllowed)
	r.HandleFunc("/_matrix/federation/v1/openid/userinfo", s.getOpenIDUserInfo).Methods(http.MethodGet)
	// Everything else under /_matrix/federation and /_matrix/media is X-Matrix signed.
	fed := r.PathPrefix("/_matrix/federation").Subrouter()
	fed.Use(s.Authenticate)
	s.authed = fed
	s.routes(fed)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.Unrecognized("Unrecognized request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(methodNotAllowed)
	s.router = r
	return s, nil
}

// Handler returns the HTTP handler of the federation API.
func (s *Server) Handler() http.Handler { return s.router }

// AuthedRouter returns the router for /_matrix/federation/...: handlers registered on
// it run only for requests whose X-Matrix signature checked out; Origin(ctx) names
// the sending server.
func (s *Server) AuthedRouter() *mux.Router { return s.authed }

// Router returns the top-level router (for unauthenticated endpoints; wrap handlers
// with Authenticate to require X-Matrix).
func (s *Server) Router() *mux.Router { return s.router }

// Client returns the outgoing federation client (requests signed as us).
func (s *Server) Client() *Client { return s.client }

// KeyRing verifies JSON signed by other servers (events, requests) with their keys
// valid at the given time.
func (s *Server) KeyRing() gomatrixserverlib.JSONVerifier { return s.keys }

// TLSConfig loads the federation listener's certificate.
func TLSConfig(cfg *config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Listen.TLSCert, cfg.Listen.TLSKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// ServerKeys returns our signed key response (GET /_matrix/key/v2/server), with
// retired keys in old_verify_keys.
func (s *Server) ServerKeys(ctx context.Context, now time.Time) ([]byte, error) {
	var keys gomatrixserverlib.ServerKeys
	keys.ServerName = spec.ServerName(s.cfg.ServerName)
	keys.ValidUntilTS = spec.AsTimestamp(now.Add(keyValidity))
	keys.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		s.key.ID: {Key: spec.Base64Bytes(s.key.Public())},
	}
	keys.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	if s.db != nil {
		old, err := storage.OwnOldSigningKeys(ctx, s.db)
		if err != nil {
			return nil, err
		}
		for _, o := range old {
			if pub, err := decodeKey(o.Public); err == nil && gomatrixserverlib.KeyID(o.KeyID) != s.key.ID {
				keys.OldVerifyKeys[gomatrixserverlib.KeyID(o.KeyID)] = gomatrixserverlib.OldVerifyKey{
					VerifyKey: gomatrixserverlib.VerifyKey{Key: pub}, ExpiredTS: spec.Timestamp(o.ExpiredTS)}
			}
		}
	}
	unsigned, err := json.Marshal(keys.ServerKeyFields)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(s.cfg.ServerName, s.key.ID, s.key.Private, unsigned)
}

func (s *Server) getServerKeys(w http.ResponseWriter, r *http.Request) {
	body, err := s.ServerKeys(r.Context(), time.Now())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, json.RawMessage(body))
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Myelin", "version": s.version}})
}

// methodNotAllowed answers a known endpoint called with the wrong method.
func methodNotAllowed(w http.ResponseWriter, req *http.Request) {
	httputil.WriteError(w, req, httputil.NewError(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed"))
}
