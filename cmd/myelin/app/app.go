package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi"
	"github.com/myelin-chat/myelin/clientapi/appservice"
	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/delayed"
	"github.com/myelin-chat/myelin/clientapi/keys"
	"github.com/myelin-chat/myelin/clientapi/media"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/federation/sender"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/searchapi"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi"
	"github.com/myelin-chat/myelin/syncapi/push"
)

// Server is a fully wired Myelin instance.
type Server struct {
	Config     *config.Config
	DB         *storage.DB
	SigningKey config.SigningKey
	Accounts   *auth.Accounts
	Rooms      *roomserver.Roomserver
	Sync       *syncapi.Service
	Push       *push.Service
	Search     *searchapi.Service
	Client     *clientapi.Server
	Federation *federation.Server
	// Sender is the outgoing federation queue; nil when federation is off.
	Sender *sender.Sender
	// Delayed fires clients' delayed events (MSC4140).
	Delayed  *delayed.Service
	registry *prometheus.Registry
}

// New opens the database and signing key and builds every component.
func New(ctx context.Context, cfg *config.Config, version string) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	// Application service registrations are read first: a bad one stops the start-up
	// before anything is opened.
	appServices, err := appservice.Load(cfg.AppServices.ConfigFiles)
	if err != nil {
		return nil, err
	}
	if n := appServices.Len(); n > 0 {
		logrus.WithField("count", n).Info("loaded application service registrations")
	}
	key, created, err := config.LoadOrCreateSigningKey(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	if created {
		logrus.WithField("path", cfg.Path(cfg.SigningKeyPath)).WithField("key_id", key.ID).Info("generated a new signing key")
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	authn := auth.NewAuthenticator(db)
	accounts := auth.NewAccounts(db, cfg, authn)
	rsCfg := roomserver.ConfigFrom(cfg, key)
	rsCfg.Profiles = profileSource{db}
	// The sync service hears of every new room event (to wake /sync long-polls); it
	// needs the roomserver for its queries, so it is given it once built.
	syncOut := &lateOutput{}
	pushOut := &lateOutput{}
	senderOut := &lateOutput{}
	searchOut := &lateOutput{}
	rsCfg.Output = roomserver.Outputs{syncOut, pushOut, senderOut, searchOut}
	rooms, err := roomserver.New(ctx, db, rsCfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("start roomserver: %w", err)
	}
	// Push rules are evaluated for every new event; the push service also gives /sync
	// its unread counts and hears of read receipts. It receives events before it starts:
	// it first catches up with the stream from its stored position, then goes on with
	// the events received (none may fall between the two).
	pushSvc := push.New(db, rooms, cfg)
	pushOut.set(pushSvc)
	pushSvc.Start(context.Background())
	// Full-text search follows the event stream in batches (woken, never blocking).
	searchSvc := searchapi.New(db, rooms)
	searchSvc.Start()
	searchOut.set(searchSvc)
	late := &lateSender{}
	syncSvc := syncapi.New(syncapi.Config{DB: db, Rooms: rooms, ServerName: spec.ServerName(cfg.ServerName),
		Unread: pushCounts{pushSvc}, Reads: pushCounts{pushSvc}, EDUs: late})
	syncOut.set(syncSvc)
	// Push rules copied for an upgraded room reach the user's /sync.
	pushSvc.SetAccountDataNotifier(syncSvc.OnAccountData)
	// closeStarted releases what is running so far when a later step fails.
	closeStarted := func() {
		rooms.Close()
		pushSvc.Close()
		searchSvc.Close()
		syncSvc.Close()
		db.Close()
	}
	e2ee := keys.New(db, cfg.ServerName)
	fed, err := federation.NewServer(federation.Deps{Config: cfg, Key: key, Version: version, DB: db, Rooms: rooms,
		OpenIDUser: func(ctx context.Context, token string) (string, error) {
			return storage.LookupOpenIDToken(ctx, db, auth.HashToken(token), time.Now().UnixMilli())
		},
		Keys: localKeys{e2ee}, EDUs: syncSvc, Peers: late})
	if err != nil {
		closeStarted()
		return nil, err
	}
	// The federation sender queues local events and EDUs for other servers.
	var snd *sender.Sender
	var remoteE2EE keys.Remote
	if cfg.Federation.Enabled {
		snd = sender.New(sender.Config{DB: db, Client: fed.Client(), Rooms: rooms, ServerName: spec.ServerName(cfg.ServerName),
			Federation: cfg.Federation, Keys: localKeys{e2ee}})
		senderOut.set(snd)
		late.set(snd)
		snd.Start()
		remoteE2EE = remoteKeys{snd}
	}
	var members clientapi.Memberships
	if m := fed.Memberships(); m != nil {
		members = m
	}
	// Other servers are asked (profiles, directories, backfill) only with federation on.
	var remote clientapi.Remote
	if cfg.Federation.Enabled {
		remote = fed.Remote()
	}
	delayedSvc := delayed.New(db, rooms)
	if err := delayedSvc.Start(ctx); err != nil {
		if snd != nil {
			snd.Close()
		}
		closeStarted()
		return nil, err
	}
	client := clientapi.NewServer(clientapi.Deps{
		Delayed:       delayedSvc,
		Config:        cfg,
		DB:            db,
		Authenticator: authn,
		Accounts:      accounts,
		Rooms:         rooms,
		Sync:          syncSvc,
		Push:          pushSvc,
		Search:        searchSvc,
		// Remote media is fetched over federation, signed as this server.
		RemoteMedia: media.NewFederationFetcher(fed.Client(), cfg.ServerName, cfg.Federation.AllowPrivateAddresses),
		// Joins, leaves, invites and knocks reach rooms of other servers through federation.
		Memberships: members,
		// Remote profiles, directories, hierarchies and backfill, over federation.
		Remote:     remote,
		RemoteKeys: remoteE2EE,
		Registry:   reg,
		Version:    version,
		// Application services authenticate with their as_token.
		AppServices: appServices,
	})
	// Federation media endpoints (X-Matrix authenticated) served from the media repository.
	client.Media().RegisterFederationRoutes(fed.AuthedRouter())
	return &Server{Config: cfg, DB: db, SigningKey: key, Accounts: accounts, Rooms: rooms, Sync: syncSvc, Push: pushSvc, Search: searchSvc, Client: client, Federation: fed, Sender: snd, Delayed: delayedSvc, registry: reg}, nil
}

// profileSource gives the roomserver the profile to put in local users' member events.
type profileSource struct{ db *storage.DB }

func (p profileSource) Profile(ctx context.Context, userID string) (string, string, error) {
	prof, err := storage.GetProfile(ctx, p.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", nil
	}
	return prof.DisplayName, prof.AvatarURL, err
}

// Close waits for queued room writes, then releases the database.
func (s *Server) Close() error {
	s.Delayed.Close() // its firings send through the roomserver
	rerr := s.Rooms.Close()
	if s.Sender != nil {
		s.Sender.Close()
	}
	s.Push.Close()
	s.Search.Close()
	s.Sync.Close()
	if err := s.DB.Close(); err != nil {
		return err
	}
	return rerr
}

// Serve runs the listeners until ctx is cancelled, then shuts down gracefully:
// in-flight requests get up to 10 s to finish, long-polls are woken to return at once.
func (s *Server) Serve(ctx context.Context) error {
	// Long-running handlers watch this context so shutdown is not held up by long-polls.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	type listener struct {
		name string
		ln   net.Listener
		h    http.Handler
	}
	var listeners []listener
	defer func() {
		for _, l := range listeners {
			l.ln.Close()
		}
	}()
	bind := func(name, addr string, h http.Handler, tlsCfg *tls.Config) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s on %s: %w", name, addr, err)
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		listeners = append(listeners, listener{name, ln, h})
		return nil
	}
	if err := bind("client", s.Config.Listen.Client, s.Client.Handler(), nil); err != nil {
		return err
	}
	if s.Config.Listen.Federation != "" {
		tlsCfg, err := federation.TLSConfig(s.Config)
		if err != nil {
			return fmt.Errorf("federation TLS: %w", err)
		}
		if err := bind("federation", s.Config.Listen.Federation, s.Federation.Handler(), tlsCfg); err != nil {
			return err
		}
	}
	if s.Config.Listen.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		// Go's profiler beside the metrics: the metrics listener is the operator's
		// private port, and profiles are how a slow server is diagnosed.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if err := bind("metrics", s.Config.Listen.Metrics, mux, nil); err != nil {
			return err
		}
	}
	// Serve only once every listener is bound: a server that answers on one port is up on all.
	var servers []*http.Server
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		srv := &http.Server{
			Handler:           l.h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			BaseContext:       func(net.Listener) context.Context { return base },
		}
		servers = append(servers, srv)
		logrus.WithFields(logrus.Fields{"listener": l.name, "addr": l.ln.Addr().String()}).Info("listening")
		go func(l listener) {
			if err := srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", l.name, err)
			}
		}(l)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	logrus.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		// Give ordinary requests a moment, then wake long-polls so they return promptly.
		time.Sleep(500 * time.Millisecond)
		cancelBase()
	}()
	for _, srv := range servers {
		if serr := srv.Shutdown(shutdownCtx); serr != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", serr)
		}
	}
	return err
}

// lateOutput forwards room events to an output set after the roomserver is built (the
// sync service needs the roomserver to answer queries). Events before set are dropped:
// nothing waits on /sync before the server serves.
type lateOutput struct {
	out atomic.Pointer[roomserver.Output]
}

func (l *lateOutput) set(o roomserver.Output) { l.out.Store(&o) }

// OnNewEvent implements roomserver.Output.
func (l *lateOutput) OnNewEvent(ev roomserver.OutputEvent) {
	if o := l.out.Load(); o != nil {
		(*o).OnNewEvent(ev)
	}
}

// pushCounts gives the sync service the push service's unread counts and tells the
// push service of read receipts.
type pushCounts struct {
	p *push.Service
}

// WaitCounted implements syncapi.RoomUnreadCounter.
func (a pushCounts) WaitCounted(ctx context.Context, pos int64, within time.Duration) error {
	if a.p.Evaluated(pos) {
		return nil // the usual case: no timer for the wait
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	return a.p.WaitEvaluated(ctx, pos)
}

// UnreadCounts implements syncapi.UnreadCounter. With threads, the room counts cover
// the main timeline only and each thread has its own.
func (a pushCounts) UnreadCounts(ctx context.Context, userID, roomID string, threads bool) (syncapi.UnreadCounts, error) {
	m, err := a.p.UnreadCounts(ctx, userID, []string{roomID})
	if err != nil {
		return syncapi.UnreadCounts{}, err
	}
	c := m[roomID]
	if !threads {
		return syncapi.UnreadCounts{Notifications: int64(c.Notifications), Highlights: int64(c.Highlights)}, nil
	}
	out := syncapi.UnreadCounts{Notifications: int64(c.Main.Notifications), Highlights: int64(c.Main.Highlights)}
	for id, tc := range c.Threads {
		if out.Threads == nil {
			out.Threads = map[string]syncapi.UnreadCounts{}
		}
		out.Threads[id] = syncapi.UnreadCounts{Notifications: int64(tc.Notifications), Highlights: int64(tc.Highlights)}
	}
	return out, nil
}

// MarkRead implements syncapi.ReadMarker.
func (a pushCounts) MarkRead(ctx context.Context, userID, roomID, eventID, threadID string) error {
	return a.p.MarkReadAt(ctx, userID, roomID, eventID, threadID)
}
