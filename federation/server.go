// Package federation serves the Matrix server-server API. So far it publishes the
// server's signing keys and version; the rest of federation builds on this listener.
package federation

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
)

// keyValidity is how long other servers may cache our key response.
const keyValidity = 24 * time.Hour

// Server is the server-server API.
type Server struct {
	cfg     *config.Config
	key     config.SigningKey
	version string
	router  *mux.Router
}

// NewServer builds the federation API.
func NewServer(cfg *config.Config, key config.SigningKey, version string) *Server {
	s := &Server{cfg: cfg, key: key, version: version}
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	r.HandleFunc("/_matrix/key/v2/server", s.getServerKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/server/{keyID}", s.getServerKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/federation/v1/version", s.getVersion).Methods(http.MethodGet)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.Unrecognized("Unrecognized request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.NewError(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed"))
	})
	s.router = r
	return s
}

// Handler returns the HTTP handler of the federation API.
func (s *Server) Handler() http.Handler { return s.router }

// TLSConfig loads the federation listener's certificate.
func TLSConfig(cfg *config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Listen.TLSCert, cfg.Listen.TLSKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// ServerKeys returns our signed key response (GET /_matrix/key/v2/server).
func (s *Server) ServerKeys(now time.Time) ([]byte, error) {
	var keys gomatrixserverlib.ServerKeys
	keys.ServerName = spec.ServerName(s.cfg.ServerName)
	keys.ValidUntilTS = spec.AsTimestamp(now.Add(keyValidity))
	keys.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		s.key.ID: {Key: spec.Base64Bytes(s.key.Public())},
	}
	keys.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	unsigned, err := json.Marshal(keys.ServerKeyFields)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(s.cfg.ServerName, s.key.ID, s.key.Private, unsigned)
}

func (s *Server) getServerKeys(w http.ResponseWriter, r *http.Request) {
	body, err := s.ServerKeys(time.Now())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, json.RawMessage(body))
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Myelin", "version": s.version}})
}
