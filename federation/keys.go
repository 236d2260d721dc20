package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// KeyStore is the key ring's database: our own keys (current and retired) answered
// from memory and the database, remote keys cached in the database.
type KeyStore struct {
	db         *storage.DB
	serverName spec.ServerName
	key        config.SigningKey
}

// NewKeyStore returns the key cache for the server named serverName signing with key.
func NewKeyStore(db *storage.DB, serverName spec.ServerName, key config.SigningKey) *KeyStore {
	return &KeyStore{db: db, serverName: serverName, key: key}
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (k *KeyStore) FetcherName() string { return "database" }

// FetchKeys implements gomatrixserverlib.KeyFetcher.
func (k *KeyStore) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	var old []storage.ServerKey
	oldLoaded := false
	for req := range reqs {
		if req.ServerName == k.serverName {
			if req.KeyID == k.key.ID {
				out[req] = gomatrixserverlib.PublicKeyLookupResult{
					VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.key.Public())},
					ValidUntilTS: spec.AsTimestamp(time.Now().Add(keyValidity)),
				}
				continue
			}
			if !oldLoaded {
				var err error
				if old, err = storage.OwnOldSigningKeys(ctx, k.db); err != nil {
					return nil, err
				}
				oldLoaded = true
			}
			for _, o := range old {
				if gomatrixserverlib.KeyID(o.KeyID) == req.KeyID {
					if pub, err := decodeKey(o.Public); err == nil {
						out[req] = gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: pub}, ExpiredTS: spec.Timestamp(o.ExpiredTS)}
					}
				}
			}
			continue
		}
		sk, err := storage.LookupServerKey(ctx, k.db, string(req.ServerName), string(req.KeyID))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		pub, err := decodeKey(sk.Public)
		if err != nil {
			continue
		}
		out[req] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: pub},
			ValidUntilTS: spec.Timestamp(sk.ValidUntilTS),
			ExpiredTS:    spec.Timestamp(sk.ExpiredTS),
		}
	}
	return out, nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase.
func (k *KeyStore) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	var keys []storage.ServerKey
	for req, res := range results {
		if req.ServerName == k.serverName {
			continue
		}
		keys = append(keys, storage.ServerKey{
			ServerName: string(req.ServerName), KeyID: string(req.KeyID), Public: res.Key.Encode(),
			ValidUntilTS: int64(res.ValidUntilTS), ExpiredTS: int64(res.ExpiredTS),
		})
	}
	if len(keys) == 0 {
		return nil
	}
	return storage.UpsertServerKeys(ctx, k.db, keys, storage.NowMS())
}

func decodeKey(s string) (spec.Base64Bytes, error) {
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("bad key length %d", len(b))
	}
	return b, nil
}

// recordingKeyClient fetches keys with the federation client and keeps each server's
// signed response (after checking it) for answering notary queries.
type recordingKeyClient struct {
	gomatrixserverlib.KeyClient
	db *storage.DB
}

func (c recordingKeyClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	keys, err := c.KeyClient.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Now(), keys); checks.AllChecksOK {
		if err := storage.StoreServerKeyResponse(ctx, c.db, string(server), keys.Raw, int64(keys.ValidUntilTS), storage.NowMS()); err != nil {
			logrus.WithError(err).WithField("origin", server).Warn("could not cache key response")
		}
	}
	return keys, nil
}

// notaryFetcher asks a trusted key server, whose own keys are fetched directly (over
// verified TLS) the first time they are needed.
type notaryFetcher struct {
	name   spec.ServerName
	client gomatrixserverlib.KeyClient

	mu      sync.Mutex
	fetcher *gomatrixserverlib.PerspectiveKeyFetcher
}

func (n *notaryFetcher) FetcherName() string { return "notary " + string(n.name) }

func (n *notaryFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	n.mu.Lock()
	f := n.fetcher
	n.mu.Unlock()
	if f == nil {
		keys, err := n.client.GetServerKeys(ctx, n.name)
		if err != nil {
			return nil, fmt.Errorf("keys of notary %s: %w", n.name, err)
		}
		if checks, _ := gomatrixserverlib.CheckKeys(n.name, time.Now(), keys); !checks.AllChecksOK {
			return nil, fmt.Errorf("keys of notary %s failed checks", n.name)
		}
		pk := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
		for id, vk := range keys.VerifyKeys {
			pk[id] = ed25519.PublicKey(vk.Key)
		}
		f = &gomatrixserverlib.PerspectiveKeyFetcher{PerspectiveServerName: n.name, PerspectiveServerKeys: pk, Client: n.client}
		n.mu.Lock()
		n.fetcher = f
		n.mu.Unlock()
	}
	return f.FetchKeys(ctx, reqs)
}

// NewKeyRing builds the key ring: the database cache, then the origin directly, then
// each trusted key server in order.
func NewKeyRing(cfg *config.Config, store *KeyStore, client gomatrixserverlib.KeyClient, db *storage.DB) *gomatrixserverlib.KeyRing {
	own := spec.ServerName(cfg.ServerName)
	direct := &gomatrixserverlib.DirectKeyFetcher{
		Client:            recordingKeyClient{KeyClient: client, db: db},
		IsLocalServerName: func(s spec.ServerName) bool { return s == own },
		LocalPublicKey:    spec.Base64Bytes(store.key.Public()),
	}
	fetchers := []gomatrixserverlib.KeyFetcher{newThrottledFetcher(direct, refetchInterval)}
	for _, n := range cfg.Federation.TrustedKeyServers {
		if n == cfg.ServerName {
			continue
		}
		fetchers = append(fetchers, newThrottledFetcher(&notaryFetcher{name: spec.ServerName(n), client: client}, refetchInterval))
	}
	return &gomatrixserverlib.KeyRing{KeyDatabase: store, KeyFetchers: fetchers}
}

// refetchInterval is how soon keys of one server may be asked for again when the last
// attempt did not give the wanted key: requests signed with made-up key IDs must not
// make us hammer the named server (or a notary).
const refetchInterval = 30 * time.Second

// throttledFetcher asks a server for its keys at most once per interval after an
// attempt that did not give a wanted key, so requests signed with made-up key IDs cannot
// make us hammer the named server (or a notary). Callers wanting keys of a server whose
// fetch is in flight wait for it and share its answer: dropping them instead would fail
// the verification of every event that arrives while the first fetch runs.
type throttledFetcher struct {
	inner    gomatrixserverlib.KeyFetcher
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	servers map[spec.ServerName]*serverKeyFetch
}

// serverKeyFetch is the fetch state of one server.
type serverKeyFetch struct {
	busy chan struct{} // holds a token while a fetch for the server is in flight
	// Guarded by busy:
	missed  time.Time // when a fetch last failed to give a wanted key
	fetched time.Time // when results were last filled
	results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

func newThrottledFetcher(inner gomatrixserverlib.KeyFetcher, interval time.Duration) *throttledFetcher {
	return &throttledFetcher{inner: inner, interval: interval, now: time.Now, servers: map[spec.ServerName]*serverKeyFetch{}}
}

func (f *throttledFetcher) FetcherName() string { return f.inner.FetcherName() }

func (f *throttledFetcher) server(name spec.ServerName) *serverKeyFetch {
	f.mu.Lock()
	defer f.mu.Unlock()
	sf := f.servers[name]
	if sf == nil {
		if len(f.servers) > 10000 { // forget idle entries so the map stays small
			now := f.now()
			for n, old := range f.servers {
				if now.Sub(old.missed) >= f.interval && now.Sub(old.fetched) >= f.interval && len(old.busy) == 0 {
					delete(f.servers, n)
				}
			}
		}
		sf = &serverKeyFetch{busy: make(chan struct{}, 1)}
		f.servers[name] = sf
	}
	return sf
}

func (f *throttledFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	byServer := map[spec.ServerName]map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for req, ts := range reqs {
		if byServer[req.ServerName] == nil {
			byServer[req.ServerName] = map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
		}
		byServer[req.ServerName][req] = ts
	}
	type answer struct {
		res map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
		err error
	}
	answers := make(chan answer, len(byServer))
	for name, want := range byServer {
		go func() {
			res, err := f.fetchServer(ctx, f.server(name), want)
			answers <- answer{res, err}
		}()
	}
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	var firstErr error
	for range byServer {
		a := <-answers
		if a.err != nil && firstErr == nil {
			firstErr = a.err
		}
		for k, v := range a.res {
			out[k] = v
		}
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// fetchServer fetches the wanted keys of one server, waiting for a fetch in flight and
// answering from its results when they hold every wanted key.
func (f *throttledFetcher) fetchServer(ctx context.Context, sf *serverKeyFetch, want map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	select {
	case sf.busy <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sf.busy }()
	now := f.now()
	if now.Sub(sf.fetched) < f.interval {
		out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
		for req := range want {
			if r, ok := sf.results[req]; ok {
				out[req] = r
			}
		}
		if len(out) == len(want) {
			return out, nil
		}
	}
	if now.Sub(sf.missed) < f.interval {
		return nil, nil
	}
	res, err := f.inner.FetchKeys(ctx, want)
	for req := range want {
		if _, ok := res[req]; !ok {
			sf.missed = now
			break
		}
	}
	if len(res) > 0 {
		sf.fetched, sf.results = now, res
	}
	return res, err
}
