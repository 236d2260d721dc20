package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Rooms is what the push service reads from the roomserver.
type Rooms interface {
	Members(ctx context.Context, req roomserver.MembersRequest) ([]*roomserver.Event, error)
	StateEventAt(ctx context.Context, eventID, eventType, stateKey string, after bool) (*roomserver.Event, error)
	RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error)
	Events(ctx context.Context, eventIDs []string) (map[string]*roomserver.Event, error)
	// StreamPosition and EventsInStream read the room event stream: the service catches
	// up from them at start (what was committed but not evaluated before a crash).
	StreamPosition() int64
	EventsInStream(ctx context.Context, from, to int64, limit int) ([]*roomserver.Event, int64, error)
}

// Service evaluates push rules for new events, keeps the notification records and
// unread counts, serves the push rules, pushers and notifications APIs, and sends
// notifications to push gateways.
type Service struct {
	db         *storage.DB
	rooms      Rooms
	serverName string
	cfg        config.Push
	log        *logrus.Entry

	rules rulesCache
	// accountData is told when a user's push rules change without a client request
	// (copied for an upgraded room; upgrade.go).
	accountData atomic.Pointer[func(userID string)]
	// roomCtx is the evaluation worker's cache of room contexts (used by run only).
	roomCtx *contextCache

	unread *unreadMemory

	mu      sync.Mutex
	queue   []roomserver.OutputEvent
	closed  bool
	wake    chan struct{}
	stopped chan struct{}
	// The writer's queue: evaluated events whose rows are to be written.
	wmu      sync.Mutex
	wqueue   []written
	wclosed  bool
	wwake    chan struct{}
	wstopped chan struct{}
	// evalPos is the stream position of the last evaluated event (its counts are in
	// memory), donePos of the last one whose notifications are committed.
	doneMu   sync.Mutex
	doneCond *sync.Cond
	evalPos  int64
	donePos  int64

	// writeDelay holds every notification write back (a test hook, see New).
	writeDelay time.Duration

	sender *Sender
}

// writeDelayEnv names a test hook: a duration by which the writer holds back every
// write of notifications, so that the end-to-end crash test can kill the process
// between evaluation and commit. Unset (or empty) in production.
const writeDelayEnv = "MYELIN_TEST_PUSH_WRITE_DELAY"

// New builds the service; Start runs it.
func New(db *storage.DB, rooms Rooms, cfg *config.Config) *Service {
	s := &Service{
		db:         db,
		rooms:      rooms,
		serverName: cfg.ServerName,
		cfg:        cfg.Push,
		log:        logrus.WithField("component", "push"),
		wake:       make(chan struct{}, 1),
		stopped:    make(chan struct{}),
		wwake:      make(chan struct{}, 1),
		wstopped:   make(chan struct{}),
		unread:     newUnreadMemory(),
	}
	s.doneCond = sync.NewCond(&s.doneMu)
	s.rules.entries = map[string]cachedRules{}
	s.roomCtx = newContextCache()
	s.sender = NewSender(db, cfg.Push)
	if d, err := time.ParseDuration(os.Getenv(writeDelayEnv)); err == nil && d > 0 {
		s.writeDelay = d
		s.log.WithField("delay", d).Warn("push notification writes are held back (test hook " + writeDelayEnv + ")")
	}
	return s
}

// Start runs the evaluation worker, the pruning of old notifications and the pusher
// sender until Close. The worker first catches up: it evaluates the events committed
// after the stored push position (those a crash left unevaluated or unwritten), then
// the live events from OnNewEvent that come after them. Call Start once the service
// receives the roomserver's output, so that no event falls between the two.
func (s *Service) Start(ctx context.Context) {
	// The position is read (on the first start: taken from the stream and stored) here,
	// so that the events committed after Start returns are evaluated; on an error the
	// worker retries.
	start, err := s.loadPosition(ctx)
	if err != nil {
		s.log.WithError(err).Error("cannot read the push position; retrying")
	}
	go s.run(context.WithoutCancel(ctx), start, err == nil)
	go s.write(context.WithoutCancel(ctx))
	go s.prune(ctx)
	s.sender.Start(ctx)
}

// Read notifications are kept this long for GET /notifications, then deleted.
const keepReadNotifications = 30 * 24 * time.Hour

func (s *Service) prune(ctx context.Context) {
	t := time.NewTicker(6 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopped:
			return
		case <-t.C:
			n, err := storage.PruneNotifications(ctx, s.db, time.Now().Add(-keepReadNotifications).UnixMilli())
			if err != nil {
				s.log.WithError(err).Warn("pruning old notifications")
			} else if n > 0 {
				s.log.WithField("deleted", n).Info("pruned old read notifications")
			}
			if err := s.saveReadMarks(ctx); err != nil {
				s.log.WithError(err).Warn("storing the read marks of the loaded users")
			}
		}
	}
}

// Close stops accepting events, evaluates those already queued and writes their
// notifications (for up to 10 s), and stops the sender. Pending pushes stay in the
// database for the next start.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.signal()
	timeout := time.After(10 * time.Second)
	select {
	case <-s.stopped:
		select {
		case <-s.wstopped:
			// Everything evaluated is written: the next start loads its users' counts
			// from their marks.
			if err := s.saveReadMarks(context.Background()); err != nil {
				s.log.WithError(err).Warn("storing the read marks of the loaded users")
			}
		case <-timeout:
			s.log.Warn("push notification writes not drained at shutdown")
		}
	case <-timeout:
		s.log.Warn("push evaluation queue not drained at shutdown")
	}
	s.sender.Close()
}

// OnNewEvent implements roomserver.Output: it queues the event and returns.
func (s *Service) OnNewEvent(ev roomserver.OutputEvent) {
	if ev.Event == nil {
		return
	}
	s.noteLocalJoin(ev)
	s.mu.Lock()
	if !s.closed {
		s.queue = append(s.queue, ev)
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Service) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// maxEvalBatch caps the events the evaluator takes at once, and the evaluated events
// whose rows the writer commits in one transaction.
const maxEvalBatch = 256

// writeLinger is the shortest time between two writes while events keep coming: the
// writer lets evaluated events gather so that a busy server writes notifications a few
// times a second (each write is a commit that holds the database's single SQLite
// writer, which the roomserver's commits wait for) instead of once per few events. An
// event after a quiet spell is written at once. Evaluation does not wait: counts are in
// memory as soon as an event is evaluated.
const writeLinger = 50 * time.Millisecond

// written is what the evaluator hands the writer: the evaluations of a batch of events
// (those that notified someone) and the stream position of its last event.
type written struct {
	evals []*evaluation
	upTo  int64
}

// run is the evaluator: after catching up with the stream, it evaluates queued events
// at once, in stream order, counts their notifications in memory and hands them to the
// writer.
func (s *Service) run(ctx context.Context, start int64, loaded bool) {
	defer close(s.stopped)
	defer func() {
		s.wmu.Lock()
		s.wclosed = true
		s.wmu.Unlock()
		s.signalWriter()
	}()
	for !loaded {
		if !s.sleepUnlessClosed(time.Second) {
			return
		}
		var err error
		if start, err = s.loadPosition(ctx); err != nil {
			s.log.WithError(err).Error("cannot read the push position; retrying")
		} else {
			loaded = true
		}
	}
	pos, ok := s.catchUp(ctx, start)
	if !ok {
		return // closed meanwhile: the next start catches up from the stored position
	}
	for {
		s.mu.Lock()
		n, closed := min(len(s.queue), maxEvalBatch), s.closed
		batch := s.queue[:n:n]
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		s.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			<-s.wake
			continue
		}
		// Events queued while catching up were read from the stream already. Out-of-band
		// memberships (an invite from another server) are not in the stream: only those
		// from before this start were evaluated.
		batch = slices.DeleteFunc(batch, func(out roomserver.OutputEvent) bool {
			return out.StreamPos <= pos && !(out.OutOfBand && out.StreamPos > start)
		})
		if len(batch) == 0 {
			continue
		}
		pos = max(pos, batch[len(batch)-1].StreamPos)
		s.evaluateAndHandOver(ctx, batch, pos)
	}
}

// evaluateAndHandOver evaluates a batch of events and hands the evaluations to the
// writer, with upTo, the stream position the write reaches.
func (s *Service) evaluateAndHandOver(ctx context.Context, batch []roomserver.OutputEvent, upTo int64) {
	evals := s.evaluateBatch(ctx, batch)
	s.wmu.Lock()
	s.wqueue = append(s.wqueue, written{evals: evals, upTo: upTo})
	s.wmu.Unlock()
	s.signalWriter()
	s.doneMu.Lock()
	s.evalPos = max(s.evalPos, upTo)
	s.doneCond.Broadcast()
	s.doneMu.Unlock()
}

func (s *Service) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// sleepUnlessClosed waits d (after a database error), or less when Close is called; it
// reports whether the service is still open.
func (s *Service) sleepUnlessClosed(d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if s.isClosed() {
			return false
		}
	}
	return !s.isClosed()
}

// loadPosition returns the stored push position. On the first start it takes the
// stream's current position (history is not evaluated) and stores it at once, so that
// a crash before the first write does not move the start later.
func (s *Service) loadPosition(ctx context.Context) (int64, error) {
	pos, stored, err := storage.PushPosition(ctx, s.db)
	if err != nil || stored {
		return pos, err
	}
	pos = s.rooms.StreamPosition()
	if err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.SetPushPosition(ctx, tx, pos) }); err != nil {
		return 0, err
	}
	return pos, nil
}

// catchUp evaluates, in stream order, the room events committed after the stored push
// position start, up to the stream's position once done, which it returns. Their
// notifications are written like those of live events, with the position. It returns
// ok false when the service is closed meanwhile.
func (s *Service) catchUp(ctx context.Context, start int64) (pos int64, ok bool) {
	pos = start
	s.doneMu.Lock()
	s.evalPos, s.donePos = max(s.evalPos, pos), max(s.donePos, pos)
	s.doneCond.Broadcast()
	s.doneMu.Unlock()
	events := 0
	for {
		if s.isClosed() {
			return pos, false
		}
		target := s.rooms.StreamPosition()
		if pos >= target {
			break
		}
		evs, next, err := s.rooms.EventsInStream(ctx, pos, target, maxEvalBatch)
		if err != nil {
			s.log.WithError(err).Error("cannot read the events to evaluate after a restart; retrying")
			if !s.sleepUnlessClosed(time.Second) {
				return pos, false
			}
			continue
		}
		batch := make([]roomserver.OutputEvent, 0, len(evs))
		for _, ev := range evs {
			// Whether the room's state changed is not stored: a state event, or a merge
			// of forks (which may have resolved state), drops the cached room context.
			out := roomserver.OutputEvent{Event: ev, StreamPos: ev.StreamPos, StateChanged: ev.StateKey() != nil || len(ev.PrevEventIDs()) > 1}
			s.noteLocalJoin(out)
			batch = append(batch, out)
		}
		s.evaluateAndHandOver(ctx, batch, next)
		events += len(batch)
		pos = next
	}
	if events > 0 {
		s.log.WithFields(logrus.Fields{"events": events, "from": start, "to": pos}).Info("evaluated the events committed before the restart")
	}
	return pos, true
}

func (s *Service) signalWriter() {
	select {
	case s.wwake <- struct{}{}:
	default:
	}
}

// positionLinger is the longest the writer leaves the stored push position behind when
// the events evaluated since notified nobody (no rows to commit with it): after a
// crash, at most that much of such events is evaluated again, and a server whose
// events notify nobody does not commit for each of them.
const positionLinger = time.Second

// write is the writer: it commits the notification rows of evaluated events, many
// events per transaction, with their pushes and the push position.
func (s *Service) write(ctx context.Context) {
	defer close(s.wstopped)
	var last, lastSave time.Time
	// saved is the position last written; reached, the position of the last batch.
	var saved, reached int64
	pending := func() (evals int, items int, closed bool) {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		for _, w := range s.wqueue {
			evals += len(w.evals)
		}
		return evals, len(s.wqueue), s.wclosed
	}
	for {
		evals, items, closed := pending()
		if items == 0 {
			if reached > saved {
				// Batches without notifications left the position behind: store it
				// when it is due, or now when closing.
				if wait := positionLinger - time.Since(lastSave); closed || wait <= 0 {
					_ = s.writeEvaluations(ctx, nil, reached)
					saved, lastSave = reached, time.Now()
				} else {
					t := time.NewTimer(wait)
					select {
					case <-s.wwake:
					case <-t.C:
					}
					t.Stop()
				}
				continue
			}
			if closed {
				return
			}
			<-s.wwake
			continue
		}
		for deadline := last.Add(writeLinger); evals < maxEvalBatch && !closed && time.Now().Before(deadline); {
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-s.wwake:
			case <-t.C:
			}
			t.Stop()
			evals, _, closed = pending()
		}
		s.wmu.Lock()
		var batch []*evaluation
		var upTo int64
		taken := 0
		for _, w := range s.wqueue {
			if len(batch) > 0 && len(batch)+len(w.evals) > maxEvalBatch {
				break
			}
			batch = append(batch, w.evals...)
			upTo = max(upTo, w.upTo)
			taken++
		}
		s.wqueue = s.wqueue[taken:]
		if len(s.wqueue) == 0 {
			s.wqueue = nil
		}
		s.wmu.Unlock()
		last = time.Now()
		reached = max(reached, upTo)
		if len(batch) > 0 || closed || time.Since(lastSave) >= positionLinger {
			if len(batch) > 0 && s.writeDelay > 0 {
				time.Sleep(s.writeDelay)
			}
			// Errors are logged; the events are not evaluated again (as before a crash).
			_ = s.writeEvaluations(ctx, batch, upTo)
			saved, lastSave = reached, time.Now()
		}
		s.doneMu.Lock()
		s.donePos = max(s.donePos, upTo)
		s.doneCond.Broadcast()
		s.doneMu.Unlock()
	}
}

// retry runs fn up to three times: transient database errors are retried; each try is
// a whole transaction (a failed one wrote nothing).
func retry(fn func() error) error {
	err := fn()
	for attempt := 1; err != nil && attempt < 3; attempt++ {
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		err = fn()
	}
	return err
}

// processBatch evaluates new events and writes their notifications (what the
// evaluator and the writer do, synchronously).
func (s *Service) processBatch(ctx context.Context, batch []roomserver.OutputEvent) {
	_ = s.writeEvaluations(ctx, s.evaluateBatch(ctx, batch), batch[len(batch)-1].StreamPos)
}

// evaluateBatch evaluates new events, in stream order, and counts their notifications
// in memory. A local user's leave reads the room up to it (a receipt, stored at once).
func (s *Service) evaluateBatch(ctx context.Context, batch []roomserver.OutputEvent) []*evaluation {
	var evals []*evaluation
	for _, out := range batch {
		if out.Event == nil {
			continue
		}
		if leaver := leavingLocalUser(s, out.Event); leaver != "" {
			if err := retry(func() error { return s.MarkRead(ctx, leaver, out.Event.RoomID().String(), "", out.StreamPos) }); err != nil {
				s.logEventError(err, out, "marking a leaver's notifications read failed")
			}
		}
		var e *evaluation
		if err := retry(func() (err error) { e, err = s.evaluate(ctx, s.roomCtx, out); return err }); err != nil {
			s.logEventError(err, out, "push rule evaluation failed")
		} else if e != nil {
			s.unread.evaluated(e)
			evals = append(evals, e)
		}
	}
	return evals
}

func (s *Service) logEventError(err error, out roomserver.OutputEvent, what string) {
	s.log.WithError(err).WithFields(logrus.Fields{"room_id": out.Event.RoomID().String(), "event_id": out.Event.EventID()}).Error(what)
}

// writeEvaluations commits the notification rows of evaluated events, their pushes
// and the push position upTo (the stream position of the last event evaluated, with
// or without notifications) in one transaction: after a crash, the events after the
// stored position are evaluated again and nothing before it is, so each event's
// notifications and pushes are stored once. Errors are logged and returned.
func (s *Service) writeEvaluations(ctx context.Context, evals []*evaluation, upTo int64) error {
	// Before the transaction and the store lock: building a push reads the user's
	// unread count, which may load it from the database.
	pushes, err := s.preparePushes(ctx, evals)
	if err != nil {
		// The notifications are kept all the same.
		s.logEventError(err, evals[0].out, fmt.Sprintf("building the pushes of %d events failed", len(evals)))
		pushes = nil
	}
	m := s.unread
	m.store.Lock()
	err = retry(func() error {
		return s.db.WithTx(ctx, func(tx *storage.Tx) error {
			if len(evals) > 0 {
				all := evals[0].notes
				if len(evals) > 1 {
					n := 0
					for _, e := range evals {
						n += len(e.notes)
					}
					all = make([]storage.Notification, 0, n)
					for _, e := range evals {
						all = append(all, e.notes...)
					}
				}
				if err := storage.InsertNotifications(ctx, tx, all); err != nil {
					return err
				}
				// An out-of-band membership may be evaluated after later events (run):
				// its set may start below its users' read marks.
				for _, e := range evals {
					if e.out.OutOfBand {
						users := make([]string, len(e.notes))
						for i, n := range e.notes {
							users[i] = n.UserID
						}
						if err := storage.ForgetUnreadFrom(ctx, tx, users); err != nil {
							return err
						}
					}
				}
			}
			for _, p := range pushes {
				if err := storage.EnqueuePush(ctx, tx, p.pusherID, p.payload); err != nil {
					return err
				}
			}
			return storage.SetPushPosition(ctx, tx, upTo)
		})
	})
	m.committed(evals)
	m.store.Unlock()
	if err != nil {
		if len(evals) > 0 {
			s.logEventError(err, evals[0].out, fmt.Sprintf("recording the notifications of %d events failed", len(evals)))
		} else {
			s.log.WithError(err).Error("storing the push position failed")
		}
		return err
	}
	if len(pushes) > 0 {
		s.sender.Wake()
	}
	return nil
}

// WaitFor blocks until the notifications of the event at stream position pos (and of
// every earlier one) are committed, or ctx ends.
func (s *Service) WaitFor(ctx context.Context, pos int64) error {
	return s.waitPos(ctx, pos, &s.donePos)
}

// WaitEvaluated blocks until the event at stream position pos (and every earlier one)
// is evaluated, so that the unread counts include it, or ctx ends.
func (s *Service) WaitEvaluated(ctx context.Context, pos int64) error {
	return s.waitPos(ctx, pos, &s.evalPos)
}

// Evaluated reports whether the event at stream position pos (and every earlier one)
// is evaluated.
func (s *Service) Evaluated(pos int64) bool {
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	return s.evalPos >= pos
}

func (s *Service) waitPos(ctx context.Context, pos int64, at *int64) error {
	s.doneMu.Lock()
	done := *at >= pos
	s.doneMu.Unlock()
	if done {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		s.doneMu.Lock()
		s.doneCond.Broadcast()
		s.doneMu.Unlock()
	})
	defer stop()
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	for *at < pos {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.doneCond.Wait()
	}
	return nil
}

// isLocal reports whether a user ID belongs to this server.
func (s *Service) isLocal(userID string) bool {
	_, domain, ok := strings.Cut(userID, ":")
	return ok && domain == s.serverName
}

// roomContext is what evaluation needs about the room at an event.
type roomContext struct {
	members      map[string]*roomserver.Event // joined members' member events
	displayNames map[string]string
	invitee      string
	plContent    []byte
	creators     []string
	built        time.Time
}

// contextCache keeps the room context of rooms for the events that follow: a message
// does not change the members or power levels, so consecutive messages in a room share
// one context. An event that changes the room's state drops the room's entry; entries
// also expire, in case the state changed without an event published to this service.
type contextCache struct {
	rooms map[string]*roomContext
}

const (
	contextTTL       = 10 * time.Second
	contextCacheSize = 10_000
)

func newContextCache() *contextCache { return &contextCache{rooms: map[string]*roomContext{}} }

func displayNameOf(ev *roomserver.Event) string {
	var c struct {
		DisplayName string `json:"displayname"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.DisplayName
}

// roomContextAt returns the room context of a new event: from the cache for an event
// that changes no state, loaded otherwise.
func (s *Service) roomContextAt(ctx context.Context, cache *contextCache, out roomserver.OutputEvent) (*roomContext, error) {
	ev := out.Event
	roomID := ev.RoomID().String()
	cacheable := !out.StateChanged && ev.StateKey() == nil
	if !cacheable {
		delete(cache.rooms, roomID)
	} else if rc := cache.rooms[roomID]; rc != nil && time.Since(rc.built) < contextTTL {
		return rc, nil
	}
	members, err := s.rooms.Members(ctx, roomserver.MembersRequest{RoomID: roomID, AtStream: out.StreamPos, Membership: spec.Join})
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	rc := &roomContext{members: make(map[string]*roomserver.Event, len(members)), displayNames: map[string]string{}, built: time.Now()}
	for _, m := range members {
		if sk := m.StateKey(); sk != nil {
			rc.members[*sk] = m
		}
	}
	if pl, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomPowerLevels, "", false); err == nil && pl != nil {
		rc.plContent = pl.Content()
	}
	if ver, err := s.rooms.RoomVersion(ctx, roomID); err == nil {
		if impl, err := gomatrixserverlib.GetRoomVersion(ver); err == nil && impl.PrivilegedCreators() {
			if create, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomCreate, "", false); err == nil && create != nil {
				rc.creators = gomatrixserverlib.CreatorsFromCreateEvent(create.PDU)
			} else if ev.Type() == spec.MRoomCreate {
				rc.creators = []string{string(ev.SenderID())}
			}
		}
	}
	if ev.Type() == spec.MRoomMember && ev.Membership == spec.Invite && ev.StateKey() != nil {
		rc.invitee = *ev.StateKey()
		rc.displayNames[rc.invitee] = displayNameOf(ev)
	}
	if cacheable {
		if len(cache.rooms) >= contextCacheSize {
			clear(cache.rooms)
		}
		cache.rooms[roomID] = rc
	}
	return rc, nil
}

// prepareEvent builds the evaluation Event and the room context of a new event.
func (s *Service) prepareEvent(ctx context.Context, cache *contextCache, out roomserver.OutputEvent) (*Event, *roomContext, error) {
	rc, err := s.roomContextAt(ctx, cache, out)
	if err != nil {
		return nil, nil, err
	}
	pev, err := NewEvent(out.Event.JSON())
	if err != nil {
		return nil, nil, fmt.Errorf("parse event: %w", err)
	}
	pev.MemberCount = len(rc.members)
	pev.DisplayName = func(userID string) string {
		if n, ok := rc.displayNames[userID]; ok {
			return n
		}
		n := ""
		if m := rc.members[userID]; m != nil {
			n = displayNameOf(m)
		}
		rc.displayNames[userID] = n
		return n
	}
	pev.SetPowerLevels(rc.plContent, rc.creators)
	return pev, rc, nil
}

// targets returns the local users an event is evaluated for: the joined local members
// and a local invitee, never the sender.
func (s *Service) targets(ev *roomserver.Event, rc *roomContext) []string {
	sender := string(ev.SenderID())
	out := make([]string, 0, len(rc.members)+1)
	for u := range rc.members {
		if u != sender && s.isLocal(u) {
			out = append(out, u)
		}
	}
	if rc.invitee != "" && rc.invitee != sender && s.isLocal(rc.invitee) {
		if _, joined := rc.members[rc.invitee]; !joined {
			out = append(out, rc.invitee)
		}
	}
	return out
}

// leavingLocalUser returns the local user whose leave (or ban, or kick) ev is: they
// have read the room, their notifications there stop counting towards their badge.
func leavingLocalUser(s *Service, ev *roomserver.Event) string {
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil && s.isLocal(*ev.StateKey()) &&
		(ev.Membership == spec.Leave || ev.Membership == spec.Ban) {
		return *ev.StateKey()
	}
	return ""
}

// evaluation is an evaluated event with the notifications it makes.
type evaluation struct {
	out       roomserver.OutputEvent
	pev       *Event
	rc        *roomContext
	notes     []storage.Notification
	actionsOf map[string]Actions
	threadID  string
}

// process evaluates one new event and records its notifications (processBatch of one
// event, returning the error).
func (s *Service) process(ctx context.Context, out roomserver.OutputEvent) error {
	if leaver := leavingLocalUser(s, out.Event); leaver != "" {
		if err := s.MarkRead(ctx, leaver, out.Event.RoomID().String(), "", out.StreamPos); err != nil {
			return err
		}
	}
	e, err := s.evaluate(ctx, newContextCache(), out)
	if err != nil {
		return err
	}
	var evals []*evaluation
	if e != nil {
		s.unread.evaluated(e)
		evals = append(evals, e)
	}
	return s.writeEvaluations(ctx, evals, out.StreamPos)
}

// evaluate runs every target user's push rules on a new event; nil when nobody is
// notified.
func (s *Service) evaluate(ctx context.Context, cache *contextCache, out roomserver.OutputEvent) (*evaluation, error) {
	ev := out.Event
	pev, rc, err := s.prepareEvent(ctx, cache, out)
	if err != nil {
		return nil, err
	}
	users := s.targets(ev, rc)
	if len(users) == 0 {
		return nil, nil
	}
	rulesets, err := s.rulesetsOf(ctx, users)
	if err != nil {
		return nil, err
	}
	e := &evaluation{out: out, pev: pev, rc: rc, actionsOf: map[string]Actions{}}
	if ev.RelType == "m.thread" {
		e.threadID = ev.RelatesTo
	}
	roomID := ev.RoomID().String()
	now := storage.NowMS()
	eventID := ev.EventID()
	// Most users share their rules (the defaults): their actions are encoded once.
	encoded := map[*Rule]json.RawMessage{}
	for _, u := range users {
		rule, a := rulesets[u].Evaluate(pev, User{UserID: u})
		if rule == nil || !a.Notify {
			continue
		}
		actions, ok := encoded[rule]
		if !ok {
			actions, _ = json.Marshal(rule.Actions)
			encoded[rule] = actions
		}
		e.notes = append(e.notes, storage.Notification{UserID: u, RoomID: roomID, EventID: eventID, StreamPos: out.StreamPos,
			ThreadID: e.threadID, Actions: actions, Highlight: a.Highlight, TS: now})
		e.actionsOf[u] = a
	}
	if len(e.notes) == 0 {
		return nil, nil
	}
	return e, nil
}

// preparePushes builds the pushes for the users notified by evaluated events who have
// pushers (the caller stores them with the notifications).
func (s *Service) preparePushes(ctx context.Context, evals []*evaluation) ([]pendingPush, error) {
	if len(evals) == 0 {
		return nil, nil
	}
	var users []string
	seen := map[string]bool{}
	for _, e := range evals {
		for _, n := range e.notes {
			if !seen[n.UserID] {
				seen[n.UserID] = true
				users = append(users, n.UserID)
			}
		}
	}
	pushers, err := storage.PushersOfUsers(ctx, s.db, users)
	if err != nil || len(pushers) == 0 {
		return nil, err
	}
	// Receipts that arrived before the evaluation already read the event: no push.
	from := map[string]int64{}
	for _, e := range evals {
		room := e.out.Event.RoomID().String()
		if p, ok := from[room]; !ok || e.out.StreamPos < p {
			from[room] = e.out.StreamPos
		}
	}
	receipts := map[string][]storage.ReadReceipt{}
	for room, pos := range from {
		if receipts[room], err = storage.ReceiptsAtOrAfter(ctx, s.db, room, pos); err != nil {
			return nil, err
		}
	}
	var out []pendingPush
	for _, e := range evals {
		// The notes are not changed: unread loads read them (pending) meanwhile.
		readOf := make(map[string]bool, len(e.notes))
		for _, n := range e.notes {
			read := false
			for _, r := range receipts[n.RoomID] {
				if r.UserID == n.UserID && r.StreamPos >= n.StreamPos &&
					(r.ThreadID == "" || (r.ThreadID == "main" && e.threadID == "") || (e.threadID != "" && r.ThreadID == e.threadID)) {
					read = true
					break
				}
			}
			readOf[n.UserID] = read
		}
		ps, err := s.pushesOf(ctx, e, readOf, pushers)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// rulesCache keeps compiled rulesets. Entries expire after rulesTTL so that changes
// made by another process are seen; changes made here invalidate at once.
type rulesCache struct {
	mu      sync.Mutex
	entries map[string]cachedRules
}

type cachedRules struct {
	rs      *Ruleset
	expires time.Time
}

const (
	rulesTTL       = 30 * time.Second
	rulesCacheSize = 100_000
)

func (c *rulesCache) get(userID string) *Ruleset {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[userID]
	if !ok || time.Now().After(e.expires) {
		return nil
	}
	return e.rs
}

func (c *rulesCache) put(userID string, rs *Ruleset) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= rulesCacheSize {
		c.entries = map[string]cachedRules{}
	}
	c.entries[userID] = cachedRules{rs: rs, expires: time.Now().Add(rulesTTL)}
}

func (c *rulesCache) forget(userID string) {
	c.mu.Lock()
	delete(c.entries, userID)
	c.mu.Unlock()
}

// rulesetsOf returns the compiled rulesets of users, from the cache or the database.
func (s *Service) rulesetsOf(ctx context.Context, users []string) (map[string]*Ruleset, error) {
	out := make(map[string]*Ruleset, len(users))
	var missing []string
	for _, u := range users {
		if rs := s.rules.get(u); rs != nil {
			out[u] = rs
		} else {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	stored, err := storage.GetPushRulesOf(ctx, s.db, missing)
	if err != nil {
		return nil, err
	}
	for _, u := range missing {
		var ur *UserRules
		if doc, ok := stored[u]; ok {
			ur = &UserRules{}
			if err := json.Unmarshal([]byte(doc), ur); err != nil {
				s.log.WithError(err).WithField("user_id", u).Warn("unreadable push rules, using the defaults")
				ur = nil
			}
		}
		rs := Build(u, ur)
		s.rules.put(u, rs)
		out[u] = rs
	}
	return out, nil
}

// Count is a number of unread notifications and highlights.
type Count struct {
	Notifications int
	Highlights    int
}

// Counts are a user's unread counts in a room: Notifications and Highlights over the
// whole room (main timeline and threads), Main for the main timeline only, and
// Threads per thread root (only threads with unread notifications).
type Counts struct {
	Notifications int
	Highlights    int
	Main          Count
	Threads       map[string]Count
}

// UnreadCounts returns a user's unread notification counts for rooms (rooms without
// unread notifications are absent from the map), all rooms when roomIDs is nil. They
// include every evaluated event, committed or not.
func (s *Service) UnreadCounts(ctx context.Context, userID string, roomIDs []string) (map[string]Counts, error) {
	if roomIDs != nil && len(roomIDs) == 0 {
		return map[string]Counts{}, nil
	}
	if err := s.loadUnread(ctx, userID); err != nil {
		return nil, err
	}
	m := s.unread
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[userID]
	out := map[string]Counts{}
	copyOf := func(c Counts) Counts {
		if c.Threads != nil {
			c.Threads = maps.Clone(c.Threads)
		}
		return c
	}
	if roomIDs == nil {
		for room, r := range u {
			if r.counts.Notifications > 0 {
				out[room] = copyOf(r.counts)
			}
		}
		return out, nil
	}
	for _, room := range roomIDs {
		if r := u[room]; r != nil && r.counts.Notifications > 0 {
			out[room] = copyOf(r.counts)
		}
	}
	return out, nil
}

// MarkRead applies a read receipt (m.read or m.read.private) at an event's stream
// position: threadID "" is an unthreaded receipt (everything up to the event is
// read), "main" the main timeline, otherwise a thread root.
// When notifications became read, the user's pushers get a badge update (counts only).
func (s *Service) MarkRead(ctx context.Context, userID, roomID, threadID string, streamPos int64) error {
	// The counts in memory tell what the receipt reads (including events not committed yet).
	if err := s.loadUnread(ctx, userID); err != nil {
		return err
	}
	m := s.unread
	m.store.Lock()
	m.mu.Lock()
	u := m.users[userID]
	m.mu.Unlock()
	var changed int64
	var err error
	if u == nil { // dropped from memory meanwhile: count in the database
		err = s.db.WithTx(ctx, func(tx *storage.Tx) (err error) {
			changed, err = storage.MarkNotificationsRead(ctx, tx, userID, roomID, threadID, streamPos)
			return err
		})
	} else if err = storage.StoreReadReceipt(ctx, s.db, userID, roomID, threadID, streamPos); err == nil {
		m.mu.Lock()
		changed = int64(u.room(roomID).read(threadID, streamPos))
		m.mu.Unlock()
	}
	m.store.Unlock()
	if err != nil || changed == 0 {
		return err
	}
	return s.enqueueBadge(ctx, userID)
}

// NotificationsPage is a page of GET /notifications.
type NotificationsPage struct {
	Notifications []storage.Notification
	Events        map[string]*roomserver.Event
	// Next is the from token of the next page ("" at the end).
	Next string
}

// ErrBadToken is returned for a malformed from token.
var ErrBadToken = errors.New("invalid pagination token")

// Notifications returns a user's notifications, newest first.
func (s *Service) Notifications(ctx context.Context, userID, from string, limit int, onlyHighlight bool) (*NotificationsPage, error) {
	var before int64
	if from != "" {
		if _, err := fmt.Sscan(from, &before); err != nil || before <= 0 {
			return nil, ErrBadToken
		}
	}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	ns, err := storage.NotificationsPage(ctx, s.db, userID, before, limit+1, onlyHighlight)
	if err != nil {
		return nil, err
	}
	page := &NotificationsPage{}
	if len(ns) > limit {
		ns = ns[:limit]
		page.Next = fmt.Sprint(ns[len(ns)-1].ID)
	}
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.EventID
	}
	page.Events, err = s.rooms.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if page.Events[n.EventID] != nil {
			page.Notifications = append(page.Notifications, n)
		}
	}
	return page, nil
}

// MarkReadAt is MarkRead for a receipt on an event (its stream position is looked up);
// receipts on unknown or non-timeline events are ignored.
func (s *Service) MarkReadAt(ctx context.Context, userID, roomID, eventID, threadID string) error {
	evs, err := s.rooms.Events(ctx, []string{eventID})
	if err != nil {
		return err
	}
	ev := evs[eventID]
	if ev == nil || ev.StreamPos == 0 || ev.RoomID().String() != roomID {
		return nil
	}
	return s.MarkRead(ctx, userID, roomID, threadID, ev.StreamPos)
}
