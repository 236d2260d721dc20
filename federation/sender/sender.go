// Package sender is the outgoing half of federation: one ordered queue per destination
// server, persisted in the database, fed with the new events of local users (for every
// other server in the room) and with EDUs (typing, receipts, presence, device list and
// cross-signing key updates, to-device messages). One worker per destination sends
// transactions (PUT /_matrix/federation/v1/send/{txnId}, at most 50 PDUs and 100 EDUs),
// one at a time, and deletes queue rows only once the destination answered 200; failures
// back off exponentially up to a cap, and any request from the destination (it is back)
// makes its worker retry at once.
package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Limits of a transaction (spec: at most 50 PDUs and 100 EDUs).
const (
	MaxTxnPDUs = 50
	MaxTxnEDUs = 100
)

// Backoff after failed transactions: MinBackoff doubled per failure up to MaxBackoff.
var (
	MinBackoff = 2 * time.Second
	MaxBackoff = 10 * time.Minute
	// idleWorker is how long a destination worker with nothing to send lives on.
	idleWorker = 5 * time.Minute
	// typingTTL: typing notifications older than this are dropped rather than sent late.
	typingTTL = 30 * time.Second
	// sendTimeout bounds one transaction.
	sendTimeout = 60 * time.Second
)

// Rooms is what the sender needs of the roomserver.
type Rooms interface {
	StreamPosition() int64
	EventsInStream(ctx context.Context, from, to int64, limit int) ([]*roomserver.Event, int64, error)
	Events(ctx context.Context, eventIDs []string) (map[string]*roomserver.Event, error)
	StateAtEvent(ctx context.Context, eventID string, after bool) ([]*roomserver.Event, error)
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
	JoinedMembers(ctx context.Context, roomID string) ([]string, error)
	// SharesRoomWithServerSince: a user joined, since stream position pos without a
	// break, to a room where a user of server has been joined as long (pos < 0: now).
	SharesRoomWithServerSince(ctx context.Context, userID string, server spec.ServerName, pos int64) (bool, error)
	// ServerAllowed applies the room's m.room.server_acl: denied servers get neither its
	// events nor its EDUs.
	ServerAllowed(ctx context.Context, roomID string, server spec.ServerName) bool
}

// Config is what a Sender is built from.
type Config struct {
	DB         *storage.DB
	Client     *federation.Client
	Rooms      Rooms
	ServerName spec.ServerName
	// Federation holds the allow/deny lists: refused servers get nothing queued.
	Federation config.Federation
	// Keys reads local users' device and cross-signing keys for device list EDUs.
	Keys federation.LocalKeys
	// Wakeup defaults to a LocalWakeup.
	Wakeup Wakeup
}

// Sender queues and sends everything this server tells other servers. Its methods are
// safe for concurrent use. It implements roomserver.Output.
type Sender struct {
	db     *storage.DB
	client *federation.Client
	rooms  Rooms
	name   spec.ServerName
	fed    config.Federation
	keys   federation.LocalKeys
	wakeup Wakeup

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	dests map[spec.ServerName]*destination

	eventsSig  chan struct{}
	devicesSig chan struct{}

	eduMu   sync.Mutex
	eduJobs []func(ctx context.Context)
	eduSig  chan struct{}

	roomServers map[string]roomServers // events worker only
}

// roomServers caches the servers in a room after an event, so that the next event on
// top of it (not a state event) needs no state lookup.
type roomServers struct {
	eventID string
	servers []spec.ServerName
}

type destination struct {
	name     spec.ServerName
	wake     chan struct{}
	alive    chan struct{}
	failures int // guarded by Sender.mu
}

// New builds a Sender; Start runs it.
func New(cfg Config) *Sender {
	if cfg.Wakeup == nil {
		cfg.Wakeup = NewLocalWakeup()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{db: cfg.DB, client: cfg.Client, rooms: cfg.Rooms, name: cfg.ServerName, fed: cfg.Federation,
		keys: cfg.Keys, wakeup: cfg.Wakeup, ctx: ctx, cancel: cancel, dests: map[spec.ServerName]*destination{},
		eventsSig: make(chan struct{}, 1), devicesSig: make(chan struct{}, 1), eduSig: make(chan struct{}, 1),
		roomServers: map[string]roomServers{}}
	s.wakeup.Subscribe(s.wakeDestination)
	return s
}

// Start resumes the queues left by the last run and starts the background workers.
func (s *Sender) Start() {
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.runEvents(s.ctx) }()
	go func() { defer s.wg.Done(); s.runDeviceLists(s.ctx) }()
	go func() { defer s.wg.Done(); s.runEDUs(s.ctx) }()
	dests, err := storage.FederationQueueDestinations(s.ctx, s.db)
	if err != nil {
		logrus.WithError(err).Error("federation sender: cannot list queued destinations")
		return
	}
	for _, d := range dests {
		s.wakeDestination(spec.ServerName(d))
	}
}

// Close stops the workers; queued items stay for the next start.
func (s *Sender) Close() {
	s.cancel()
	s.wg.Wait()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// OnNewEvent implements roomserver.Output: the events worker reads the new events
// from the database, so nothing is lost if it is behind or the process restarts.
func (s *Sender) OnNewEvent(roomserver.OutputEvent) { signal(s.eventsSig) }

// PeerSeen is called for every authenticated request from another server: a server
// that talks to us is up again, so a backed-off queue for it is retried at once.
func (s *Sender) PeerSeen(origin spec.ServerName) {
	s.mu.Lock()
	d := s.dests[origin]
	backedOff := d != nil && d.failures > 0
	s.mu.Unlock()
	if backedOff {
		signal(d.alive)
	}
}

// allowed reports whether anything may be sent to a server.
func (s *Sender) allowed(server spec.ServerName) bool {
	return server != "" && server != s.name && federation.ServerAllowed(s.fed, string(server))
}

func domainOf(userID string) spec.ServerName {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return spec.ServerName(userID[i+1:])
	}
	return ""
}

func (s *Sender) isLocal(userID string) bool { return domainOf(userID) == s.name }

// wakeDestination makes sure a worker runs for d and tells it there is new work.
func (s *Sender) wakeDestination(name spec.ServerName) {
	if s.ctx.Err() != nil || !s.allowed(name) {
		return
	}
	s.mu.Lock()
	d := s.dests[name]
	if d == nil {
		d = &destination{name: name, wake: make(chan struct{}, 1), alive: make(chan struct{}, 1)}
		s.dests[name] = d
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.runDestination(s.ctx, d) }()
	}
	signal(d.wake)
	s.mu.Unlock()
}

// retire removes an idle worker unless work arrived meanwhile.
func (s *Sender) retire(d *destination) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-d.wake:
		signal(d.wake)
		return false
	default:
	}
	delete(s.dests, d.name)
	return true
}

func backoff(failures int) time.Duration {
	b := MinBackoff
	for i := 1; i < failures && b < MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, MaxBackoff)
	// Up to 20% jitter so that many queues do not retry in lockstep.
	return b + time.Duration(rand.Int64N(int64(b)/5+1))
}

// runDestination sends the destination's queue, one transaction at a time, until it
// stays empty for idleWorker.
func (s *Sender) runDestination(ctx context.Context, d *destination) {
	log := logrus.WithField("destination", d.name)
	var pending []storage.QueuedItem
	for ctx.Err() == nil {
		s.mu.Lock()
		failures := d.failures
		s.mu.Unlock()
		if failures > 0 {
			t := time.NewTimer(backoff(failures))
			select {
			case <-t.C:
			case <-d.alive:
				t.Stop()
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		if pending == nil {
			select { // the read below sees everything announced so far
			case <-d.wake:
			default:
			}
			items, err := s.nextTransaction(ctx, d.name)
			if err != nil {
				if ctx.Err() == nil {
					log.WithError(err).Warn("federation sender: cannot read queue")
					s.failed(d)
				}
				continue
			}
			if len(items) == 0 {
				t := time.NewTimer(idleWorker)
				select {
				case <-d.wake:
				case <-d.alive:
				case <-t.C:
					if s.retire(d) {
						return
					}
				case <-ctx.Done():
				}
				t.Stop()
				continue
			}
			pending = items
		}
		if err := s.sendTransaction(ctx, d.name, pending); err != nil {
			if ctx.Err() != nil {
				return
			}
			n := s.failed(d)
			log.WithError(err).WithField("failures", n).Info("federation sender: transaction failed, will retry")
			continue
		}
		ids := make([]int64, len(pending))
		for i, it := range pending {
			ids[i] = it.ID
		}
		if err := storage.DeleteFederationQueued(ctx, s.db, ids); err != nil {
			// Sent but still queued: it is sent again (the destination ignores what it has).
			log.WithError(err).Warn("federation sender: cannot delete sent items")
		}
		pending = nil
		s.mu.Lock()
		if d.failures > 0 {
			log.Info("federation sender: destination reachable again")
		}
		d.failures = 0
		s.mu.Unlock()
	}
}

func (s *Sender) failed(d *destination) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d.failures++
	return d.failures
}

// nextTransaction returns the next items to send to a destination: a prefix of its
// queue within the transaction limits. Typing notifications too old to matter are
// dropped on the way.
func (s *Sender) nextTransaction(ctx context.Context, dest spec.ServerName) ([]storage.QueuedItem, error) {
	for {
		items, err := storage.PeekFederationQueue(ctx, s.db, string(dest), MaxTxnPDUs+MaxTxnEDUs)
		if err != nil {
			return nil, err
		}
		var out []storage.QueuedItem
		var stale []int64
		pdus, edus := 0, 0
		cutoff := time.Now().Add(-typingTTL).UnixMilli()
		for _, it := range items {
			if it.Kind == storage.QueueEDU && it.EDUType == spec.MTyping && it.CreatedTS < cutoff {
				stale = append(stale, it.ID)
				continue
			}
			if it.Kind == storage.QueuePDU {
				if pdus == MaxTxnPDUs {
					break
				}
				pdus++
			} else {
				if edus == MaxTxnEDUs {
					break
				}
				edus++
			}
			out = append(out, it)
		}
		if len(stale) > 0 {
			if err := storage.DeleteFederationQueued(ctx, s.db, stale); err != nil {
				return nil, err
			}
		}
		if len(out) > 0 || len(stale) == 0 {
			return out, nil
		}
	}
}

type txnEDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// sendTransaction sends items in one transaction. The transaction ID is made of the
// queue IDs it carries, so a retry of the same items is recognised by the destination.
func (s *Sender) sendTransaction(ctx context.Context, dest spec.ServerName, items []storage.QueuedItem) error {
	var ids []string
	for _, it := range items {
		if it.Kind == storage.QueuePDU {
			ids = append(ids, it.EventID)
		}
	}
	events := map[string]*roomserver.Event{}
	if len(ids) > 0 {
		var err error
		if events, err = s.rooms.Events(ctx, ids); err != nil {
			return fmt.Errorf("load queued events: %w", err)
		}
	}
	pdus := []json.RawMessage{}
	edus := []txnEDU{}
	for _, it := range items {
		if it.Kind == storage.QueuePDU {
			if ev := events[it.EventID]; ev != nil {
				pdus = append(pdus, ev.JSON())
			}
			continue
		}
		edus = append(edus, txnEDU{Type: it.EDUType, Content: json.RawMessage(it.Content)})
	}
	txnID := fmt.Sprintf("%d-%d", items[0].ID, items[len(items)-1].ID)
	body := map[string]any{"origin": s.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if err := s.client.DoSigned(sctx, "PUT", dest, "/_matrix/federation/v1/send/"+txnID, body, &resp); err != nil {
		return err
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			// Per the spec the transaction succeeded; the destination refused this event.
			logrus.WithFields(logrus.Fields{"destination": dest, "event_id": id, "error": r.Error}).Warn("federation sender: destination refused an event")
		}
	}
	return nil
}

// enqueue writes items (and, in the same transaction, extra) and wakes their destinations.
func (s *Sender) enqueue(ctx context.Context, items []storage.QueuedItem, extra func(tx *storage.Tx) error) error {
	if len(items) == 0 && extra == nil {
		return nil
	}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.EnqueueFederation(ctx, tx, items); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, it := range items {
		if !seen[it.Destination] {
			seen[it.Destination] = true
			s.wakeup.Wake(spec.ServerName(it.Destination))
		}
	}
	return nil
}

// serversOf returns the allowed other servers of users, sorted and without duplicates.
func (s *Sender) serversOf(users []string, into map[spec.ServerName]bool) {
	for _, u := range users {
		if d := domainOf(u); s.allowed(d) {
			into[d] = true
		}
	}
}

func sortedServers(m map[spec.ServerName]bool) []spec.ServerName {
	out := make([]spec.ServerName, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sortServers(out)
	return out
}

// errStopped is returned by waits when the sender is closing.
var errStopped = errors.New("federation sender stopped")

// sleep waits d or until ctx ends.
// follow runs one stream worker: it reads its stored position (on a first start, the
// stream's current position from start, as older entries were never meant for
// federation), then calls step until it stops advancing, waits for a signal on wake, and
// repeats until ctx ends. step stores the position it returns with the rows it writes,
// so a restart continues exactly where the worker stopped.
func (s *Sender) follow(ctx context.Context, name, what string, start func(context.Context) (int64, error),
	wake <-chan struct{}, step func(context.Context, int64) (int64, error)) {
	pos, ok, err := storage.FederationSenderPosition(ctx, s.db, name)
	for err != nil {
		logrus.WithError(err).Errorf("federation sender: cannot read its %s position", what)
		if sleep(ctx, time.Second) != nil {
			return
		}
		pos, ok, err = storage.FederationSenderPosition(ctx, s.db, name)
	}
	if !ok {
		if pos, err = start(ctx); err == nil {
			err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
				return storage.SetFederationSenderPosition(ctx, tx, name, pos)
			})
		}
		if err != nil {
			logrus.WithError(err).Errorf("federation sender: cannot store its %s position", what)
		}
	}
	for ctx.Err() == nil {
		next, err := step(ctx, pos)
		if err != nil {
			if ctx.Err() == nil {
				logrus.WithError(err).Warnf("federation sender: cannot queue new %s updates", what)
			}
			if sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		if next > pos {
			pos = next
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errStopped
	}
}
