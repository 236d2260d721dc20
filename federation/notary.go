package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// maxNotaryServers bounds how many servers one notary query may ask about.
const maxNotaryServers = 100

// getNotaryKeys is GET /_matrix/key/v2/query/{serverName}[/{keyID}].
func (s *Server) getNotaryKeys(w http.ResponseWriter, r *http.Request) {
	name, err := url.PathUnescape(mux.Vars(r)["serverName"])
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Bad server name"))
		return
	}
	var minValid int64
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		if minValid, err = strconv.ParseInt(v, 10, 64); err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("Bad minimum_valid_until_ts"))
			return
		}
	}
	s.answerNotary(w, r, map[string]int64{name: minValid})
}

// postNotaryKeys is POST /_matrix/key/v2/query.
func (s *Server) postNotaryKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(req.ServerKeys) > maxNotaryServers {
		httputil.WriteError(w, r, httputil.TooLarge("At most %d servers per query", maxNotaryServers))
		return
	}
	want := map[string]int64{}
	for name, ids := range req.ServerKeys {
		var m int64
		for _, c := range ids {
			if c.MinimumValidUntilTS > m {
				m = c.MinimumValidUntilTS
			}
		}
		want[name] = m
	}
	s.answerNotary(w, r, want)
}

func (s *Server) answerNotary(w http.ResponseWriter, r *http.Request, want map[string]int64) {
	out := []json.RawMessage{}
	for name, minValid := range want {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(name)); !ok {
			continue
		}
		raw, err := s.NotaryKeys(r.Context(), name, minValid)
		if err != nil {
			logrus.WithError(err).WithField("origin", name).Info("notary: no keys")
			continue
		}
		out = append(out, raw)
	}
	httputil.WriteResult(w, map[string]any{"server_keys": out})
}

// NotaryKeys returns serverName's key response co-signed by us: from our cache when it
// is valid until at least minValidMS (now when 0), else fetched directly from the
// server (falling back to a stale cached copy when the server cannot be reached).
func (s *Server) NotaryKeys(ctx context.Context, serverName string, minValidMS int64) (json.RawMessage, error) {
	if serverName == s.cfg.ServerName {
		return s.ServerKeys(ctx, time.Now())
	}
	if !ServerAllowed(s.cfg.Federation, serverName) {
		return nil, ErrDeniedServer
	}
	now := storage.NowMS()
	if minValidMS == 0 {
		minValidMS = now
	}
	cached, until, err := storage.ServerKeyResponse(ctx, s.db, serverName)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	raw := cached
	if cached == nil || until < minValidMS {
		fctx, cancel := withTimeout(ctx, 15*time.Second)
		keys, ferr := recordingKeyClient{KeyClient: s.client, db: s.db}.GetServerKeys(fctx, spec.ServerName(serverName))
		cancel()
		switch {
		case ferr == nil:
			if checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(serverName), time.Now(), keys); !checks.AllChecksOK {
				if cached == nil {
					return nil, errors.New("key response failed checks")
				}
			} else {
				raw = keys.Raw
				s.storeKeys(ctx, keys)
			}
		case cached == nil:
			return nil, ferr
		}
	}
	return gomatrixserverlib.SignJSON(s.cfg.ServerName, s.key.ID, s.key.Private, raw)
}

// storeKeys caches the verify keys of a checked key response in the key ring's store.
func (s *Server) storeKeys(ctx context.Context, keys gomatrixserverlib.ServerKeys) {
	res := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for id, k := range keys.VerifyKeys {
		res[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] =
			gomatrixserverlib.PublicKeyLookupResult{VerifyKey: k, ValidUntilTS: keys.ValidUntilTS}
	}
	for id, k := range keys.OldVerifyKeys {
		res[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] =
			gomatrixserverlib.PublicKeyLookupResult{VerifyKey: k.VerifyKey, ExpiredTS: k.ExpiredTS}
	}
	if err := s.store.StoreKeys(ctx, res); err != nil {
		logrus.WithError(err).WithField("origin", keys.ServerName).Warn("could not cache keys")
	}
}
