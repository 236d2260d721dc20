// Package roomserver is Myelin's room DAG engine: it builds, signs, authorises and
// persists room events, keeps the state at every event and the current state of every
// room, resolves forks with state resolution, applies redactions and answers the
// queries of the client API, /sync and federation.
//
// Writes to one room are serialised by a RoomLocker and persisted by a group
// committer that writes the events of many rooms in one transaction. Every event gets
// a position in one global stream (for /sync); new events are published to an Output
// once committed, in stream order. See docs/roomserver.md.
package roomserver

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver/internal/lru"
	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage"
)

// ProfileSource gives the profile put into local users' membership events.
type ProfileSource interface {
	Profile(ctx context.Context, userID string) (displayName, avatarURL string, err error)
}

// Config configures a Roomserver.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// DefaultRoomVersion is used by CreateRoom when the request names none.
	DefaultRoomVersion gomatrixserverlib.RoomVersion
	// Locker serialises writers of a room; nil means an in-process LocalLocker.
	Locker RoomLocker
	// Output receives new events; nil discards them.
	Output Output
	// Profiles fills displayname/avatar_url of local users' joins; nil leaves them out.
	Profiles ProfileSource
	// EventCacheSize is the number of parsed events kept in memory (default 50,000).
	EventCacheSize int
	// StateCacheSize is the number of state blocks kept in memory (default 20,000).
	StateCacheSize int
	// CommitWorkers is the number of concurrent group-commit transactions (default 1
	// with SQLite, which has one writer anyway, and 2 with PostgreSQL).
	CommitWorkers int
	// MaxBatch caps the number of writes in one group commit (default 256).
	MaxBatch int
	// Now returns the time put in new events (default time.Now).
	Now func() time.Time
}

// ConfigFrom builds a Config from Myelin's configuration and signing key.
func ConfigFrom(cfg *config.Config, key config.SigningKey) Config {
	return Config{
		ServerName:         spec.ServerName(cfg.ServerName),
		KeyID:              key.ID,
		PrivateKey:         key.Private,
		DefaultRoomVersion: gomatrixserverlib.RoomVersion(cfg.Rooms.DefaultVersion),
	}
}

// Roomserver is the room DAG engine. Its methods are safe for concurrent use.
type Roomserver struct {
	cfg       Config
	db        *storage.DB
	locker    RoomLocker
	output    Output
	rooms     roomCache
	nids      *nidCache
	states    *state.Store
	tracker   *streamTracker
	committer *committer

	eventCache   *lru.Cache[int64, *Event]
	eventIDCache *lru.Cache[string, int64]
	// visibilities caches the history visibility of m.room.history_visibility events by
	// NID (their content never changes: redaction keeps history_visibility), read for
	// every event a /sync shows.
	visibilities *lru.Cache[int64, string]

	acls aclCache

	queuesMu sync.Mutex
	queues   map[string]*roomSendQueue
}

// New starts a Roomserver on db (already migrated).
func New(ctx context.Context, db *storage.DB, cfg Config) (*Roomserver, error) {
	if cfg.ServerName == "" || cfg.KeyID == "" || len(cfg.PrivateKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("roomserver: server name and signing key are required")
	}
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = gomatrixserverlib.RoomVersionV11
	}
	if !gomatrixserverlib.StableRoomVersion(cfg.DefaultRoomVersion) {
		return nil, fmt.Errorf("roomserver: default room version %q is not a supported stable version", cfg.DefaultRoomVersion)
	}
	if cfg.Locker == nil {
		cfg.Locker = NewLocalLocker()
	}
	if cfg.EventCacheSize <= 0 {
		cfg.EventCacheSize = 50_000
	}
	if cfg.StateCacheSize <= 0 {
		cfg.StateCacheSize = 20_000
	}
	if cfg.CommitWorkers <= 0 {
		cfg.CommitWorkers = 1
		if db.Dialect() == storage.Postgres {
			cfg.CommitWorkers = 2
		}
	}
	if db.Dialect() == storage.SQLite {
		cfg.CommitWorkers = 1
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	rs := &Roomserver{
		cfg:          cfg,
		db:           db,
		locker:       cfg.Locker,
		output:       cfg.Output,
		rooms:        roomCache{byID: map[string]*room{}, byNID: map[int64]*room{}},
		nids:         newNIDCache(100_000),
		states:       state.NewStore(db, cfg.StateCacheSize, 10_000),
		eventCache:   lru.New[int64, *Event](cfg.EventCacheSize),
		eventIDCache: lru.New[string, int64](cfg.EventCacheSize),
		visibilities: lru.New[int64, string](10_000),
		queues:       map[string]*roomSendQueue{},
	}
	tracker, err := newStreamTracker(ctx, db, rs.publish)
	if err != nil {
		return nil, err
	}
	rs.tracker = tracker
	rs.committer = newCommitter(db, tracker, cfg.CommitWorkers, cfg.MaxBatch)
	return rs, nil
}

// Close waits for queued writes and stops the committer. The database stays open.
func (rs *Roomserver) Close() error {
	rs.committer.close()
	return nil
}

func (rs *Roomserver) publish(ev OutputEvent) {
	if rs.output != nil {
		rs.output.OnNewEvent(ev)
	}
}

// StreamPosition returns the highest stream position below which every event has been
// committed: /sync may read up to it without ever missing an event that commits later.
func (rs *Roomserver) StreamPosition() int64 { return rs.tracker.Safe() }

// ServerName returns the server name events are signed for.
func (rs *Roomserver) ServerName() spec.ServerName { return rs.cfg.ServerName }

// userIDForSender maps sender IDs to user IDs (they are the same outside pseudo-ID rooms,
// which Myelin does not support).
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}
