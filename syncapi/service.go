package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// UnreadCounts are a room's notification counts (syncapi/push computes them).
type UnreadCounts struct {
	Notifications int64
	Highlights    int64
	// Threads holds per-thread counts (thread root event ID → counts) when asked for.
	Threads map[string]UnreadCounts
}

// UnreadCounter gives /sync the notification counts of a room; nil leaves them out.
type UnreadCounter interface {
	UnreadCounts(ctx context.Context, userID, roomID string, threads bool) (UnreadCounts, error)
}

// ReadMarker is told when a user reads up to an event (m.read / m.read.private
// receipts), so notification counts can be reset; nil ignores it.
type ReadMarker interface {
	MarkRead(ctx context.Context, userID, roomID, eventID, threadID string) error
}

// Config is what the sync service needs.
type Config struct {
	DB    *storage.DB
	Rooms *roomserver.Roomserver
	// Notifier defaults to a LocalNotifier.
	Notifier Notifier
	Unread   UnreadCounter
	Reads    ReadMarker
	// ServerName decides which senders are local (for presence activity).
	ServerName spec.ServerName
	// EDUs hears of typing, receipt, presence and device list changes that other
	// servers must learn (the federation sender); nil ignores them.
	EDUs EDUOutput
}

// EDUOutput is told of ephemeral changes other servers must hear of. Implementations
// return quickly (queue the work) and ignore users of other servers.
type EDUOutput interface {
	OnTyping(roomID, userID string, typing bool, timeout time.Duration)
	OnReceipt(roomID, userID, receiptType, eventID, threadID string, ts int64)
	OnPresence(userID string)
	OnDeviceListChanged(userID string)
}

// Service is the sync component. It implements roomserver.Output.
type Service struct {
	db       *storage.DB
	rooms    *roomserver.Roomserver
	notifier Notifier
	unread   UnreadCounter
	reads    ReadMarker
	server   spec.ServerName
	edus     EDUOutput
	typing   *Typing
	presence *presenceTracker
	lazy     *lazyCache

	activity chan string
	stop     context.CancelFunc

	// latestMu guards latest (room → highest stream position seen, from new events or
	// from the database) and acked (device → to-device position already acknowledged).
	latestMu sync.Mutex
	latest   map[string]int64
	acked    map[string]int64

	// The fast path (fastpath.go): nil log when off.
	log       *eventLog
	members   memberCache
	gen       atomic.Int64 // raised by every wake-up other than new timeline events
	userGens  userGens     // per user: gen at the user's last WakeUsers
	positions memo[map[string]int64]
	// positionsMu makes one reader refresh positions at a time.
	positionsMu sync.Mutex
	ignored     memo[map[string]bool]
	keys        memo[keyCounts]
	counters    fastCounters
}

// New builds the service and starts its background work (presence timeouts); Close stops it.
func New(cfg Config) *Service {
	s := &Service{db: cfg.DB, rooms: cfg.Rooms, notifier: cfg.Notifier, unread: cfg.Unread, reads: cfg.Reads,
		server: cfg.ServerName, edus: cfg.EDUs, lazy: newLazyCache(), activity: make(chan string, 1024),
		latest: map[string]int64{}, acked: map[string]int64{}, members: memberCache{users: map[string]*userRooms{}}}
	if s.notifier == nil {
		s.notifier = NewLocalNotifier()
	}
	if _, local := s.notifier.(*LocalNotifier); local && s.rooms != nil {
		s.log = newEventLog(eventLogSize)
	}
	// Typing lives in memory: it does not move the database streams (no gen raise).
	s.typing = newTyping(func(roomID string) { s.notifier.WakeRooms(roomID) })
	s.presence = newPresenceTracker(cfg.DB, func(ctx context.Context, userID string) {
		s.wakeRoomMates(ctx, userID)
		if s.edus != nil {
			s.edus.OnPresence(userID)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.presence.run(ctx)
	go s.runActivity(ctx)
	return s
}

// Close stops the background work.
func (s *Service) Close() {
	if s != nil && s.stop != nil {
		s.stop()
	}
}

// Notifier returns the notifier that wakes long-polls. Whoever writes to a stream
// /sync follows must wake through it after the write commits.
func (s *Service) Notifier() Notifier { return wakeTracker{s} }

// wakeTracker raises the service's wake generation before waking: cached stream
// positions and account data (fastpath.go) are re-read after any such wake-up.
type wakeTracker struct{ s *Service }

func (w wakeTracker) Listen(userID, deviceID string, roomIDs []string) *Listener {
	return w.s.notifier.Listen(userID, deviceID, roomIDs)
}

func (w wakeTracker) WakeRooms(roomIDs ...string) {
	w.s.gen.Add(1)
	w.s.notifier.WakeRooms(roomIDs...)
}

func (w wakeTracker) WakeUsers(userIDs ...string) {
	w.s.userGens.bump(userIDs, w.s.gen.Add(1))
	w.s.notifier.WakeUsers(userIDs...)
}

func (w wakeTracker) WakeRoomEvents(roomIDs ...string) { w.s.notifier.WakeRoomEvents(roomIDs...) }

// OnNewEvent implements roomserver.Output: it wakes the room's long-polls and, for
// membership events, the target's (invites, joins from elsewhere). It returns at once.
func (s *Service) OnNewEvent(ev roomserver.OutputEvent) {
	e := ev.Event
	roomID := e.RoomID().String()
	entry := &logEntry{pos: ev.StreamPos, room: roomID, ev: e, state: e.StateKey() != nil}
	if e.Type() == spec.MRoomMember && e.StateKey() != nil {
		entry.member = *e.StateKey()
		s.members.invalidate(entry.member)
	}
	if s.log != nil {
		s.log.add(entry)
	}
	s.raiseLatest(roomID, ev.StreamPos)
	if entry.state {
		s.notifier.WakeRooms(roomID)
	} else {
		s.notifier.WakeRoomEvents(roomID)
	}
	if entry.member != "" {
		s.notifier.WakeUsers(entry.member)
	}
	sender := string(e.SenderID())
	if s.server != "" && strings.HasSuffix(sender, ":"+string(s.server)) {
		select {
		case s.activity <- sender:
		default: // presence activity is best effort; never block the commit goroutine
		}
	}
}

func (s *Service) runActivity(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-s.activity:
			s.presence.active(ctx, u)
		}
	}
}

// OnAccountData wakes a user's long-polls after an account data write.
func (s *Service) OnAccountData(userID string) {
	if s != nil {
		s.Notifier().WakeUsers(userID)
	}
}

// OnToDevice wakes the long-polls of users who received send-to-device messages.
func (s *Service) OnToDevice(userIDs ...string) {
	if s != nil {
		s.Notifier().WakeUsers(userIDs...)
	}
}

// OnKeysChanged wakes a user's long-polls (one-time key counts) and, when its device
// list changed, those of everyone sharing a room with it.
func (s *Service) OnKeysChanged(userID string, deviceListChanged bool) {
	if s == nil {
		return
	}
	s.Notifier().WakeUsers(userID)
	if deviceListChanged {
		go s.wakeRoomMates(context.Background(), userID)
		if s.edus != nil {
			s.edus.OnDeviceListChanged(userID)
		}
	}
}

// wakeRoomMates wakes the long-polls of a user and of the rooms it is joined to.
func (s *Service) wakeRoomMates(ctx context.Context, userID string) {
	s.Notifier().WakeUsers(userID)
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Warn("cannot wake room-mates")
		return
	}
	s.Notifier().WakeRooms(rooms...)
}

// SetTyping handles PUT /rooms/{roomId}/typing/{userId}: userID must be joined.
func (s *Service) SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	s.typing.Set(roomID, userID, typing, timeout)
	if s.edus != nil {
		s.edus.OnTyping(roomID, userID, typing, timeout)
	}
	return nil
}

func (s *Service) requireJoined(ctx context.Context, roomID, userID string) error {
	m, _, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		if isNotFound(err) {
			return forbidden("You are not in this room")
		}
		return err
	}
	if m != spec.Join {
		return forbidden("You are not in this room")
	}
	return nil
}

// relatedToThread reports whether ev is the thread's root, in the thread (m.thread),
// or relates through a short chain of relations to one of those.
func (s *Service) relatedToThread(ctx context.Context, ev *roomserver.Event, threadID string) (bool, error) {
	const maxHops = 5
	for hop := 0; ev != nil && hop <= maxHops; hop++ {
		if ev.EventID() == threadID || ev.RelatesTo == threadID {
			return true, nil
		}
		if ev.RelatesTo == "" {
			return false, nil
		}
		evs, err := s.rooms.Events(ctx, []string{ev.RelatesTo})
		if err != nil {
			return false, err
		}
		next := evs[ev.RelatesTo]
		if next == nil || next.RoomID() != ev.RoomID() {
			return false, nil
		}
		ev = next
	}
	return false, nil
}

func isNotFound(err error) bool {
	var me spec.MatrixError
	if errors.As(err, &me) {
		return me.ErrCode == spec.ErrorNotFound
	}
	var mp *spec.MatrixError
	return errors.As(err, &mp) && mp.ErrCode == spec.ErrorNotFound
}

func forbidden(msg string) error { return spec.Forbidden(msg) }
func badParam(msg string) error  { return spec.InvalidParam(msg) }

// Receipt types.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
	FullyRead          = "m.fully_read"
)

// PostReceipt stores a receipt (m.read, m.read.private) or the read marker
// (m.fully_read) of userID on eventID, after checking the user is joined and the event
// belongs to the room. threadID is "" (unthreaded), "main" or a thread root event ID.
func (s *Service) PostReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string) error {
	switch receiptType {
	case ReceiptRead, ReceiptReadPrivate, FullyRead:
	default:
		return badParam("Unknown receipt type " + receiptType)
	}
	if receiptType == FullyRead && threadID != "" {
		return badParam("m.fully_read cannot have a thread_id")
	}
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	ev, err := s.rooms.EventForUser(ctx, userID, roomID, eventID)
	if err != nil {
		return err
	}
	if threadID != "" && threadID != "main" {
		if !strings.HasPrefix(threadID, "$") {
			return badParam("thread_id must be \"main\" or an event ID")
		}
		if _, err := s.rooms.EventForUser(ctx, userID, roomID, threadID); err != nil {
			return badParam("thread_id is not an event of this room")
		}
		// The event must be related to the thread: the root, an event in it, or an
		// event relating (a reaction, an edit, a reference...) to one of those.
		if ok, err := s.relatedToThread(ctx, ev, threadID); err != nil {
			return err
		} else if !ok {
			return badParam("The event is not related to thread " + threadID)
		}
	}
	if receiptType == FullyRead {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		if _, err := storage.SetAccountData(ctx, s.db, userID, roomID, FullyRead, content); err != nil {
			return err
		}
		s.Notifier().WakeUsers(userID)
		return nil
	}
	ts := storage.NowMS()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.PutReceipt(ctx, tx, storage.Receipt{RoomID: roomID, Type: receiptType, UserID: userID,
			ThreadID: threadID, EventID: eventID, TS: ts})
		return err
	})
	if err != nil {
		return err
	}
	if s.edus != nil && receiptType == ReceiptRead {
		s.edus.OnReceipt(roomID, userID, receiptType, eventID, threadID, ts)
	}
	if s.reads != nil {
		if err := s.reads.MarkRead(ctx, userID, roomID, eventID, threadID); err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Warn("mark read failed")
		}
	}
	if receiptType == ReceiptReadPrivate {
		s.Notifier().WakeUsers(userID)
	} else {
		s.Notifier().WakeRooms(roomID)
	}
	return nil
}

// PutRemoteReceipt stores the public read receipt of a user of another server (from
// federation), who must be joined to the room; the event need not be known here yet.
func (s *Service) PutRemoteReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error {
	if receiptType != ReceiptRead {
		return badParam("Unknown receipt type " + receiptType)
	}
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	if ts <= 0 {
		ts = storage.NowMS()
	}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.PutReceipt(ctx, tx, storage.Receipt{RoomID: roomID, Type: receiptType, UserID: userID,
			ThreadID: threadID, EventID: eventID, TS: ts})
		return err
	})
	if err != nil {
		return err
	}
	s.Notifier().WakeRooms(roomID)
	return nil
}

// PutRemotePresence stores the presence of a user of another server (from federation)
// and wakes the long-polls of its room-mates.
func (s *Service) PutRemotePresence(ctx context.Context, userID, state, statusMsg string, lastActiveAgo int64) error {
	switch state {
	case PresenceOnline, PresenceUnavailable, PresenceOffline:
	default:
		return badParam("presence must be online, unavailable or offline")
	}
	lastActive := storage.NowMS() - max(lastActiveAgo, 0)
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.PutPresence(ctx, tx, storage.Presence{UserID: userID, State: state, StatusMsg: statusMsg, LastActiveTS: lastActive})
		return err
	})
	if err != nil {
		return err
	}
	s.wakeRoomMates(ctx, userID)
	return nil
}

// SetPresence handles PUT /presence/{userId}/status.
func (s *Service) SetPresence(ctx context.Context, userID, state string, statusMsg *string) error {
	switch state {
	case PresenceOnline, PresenceUnavailable, PresenceOffline:
	default:
		return badParam("presence must be online, unavailable or offline")
	}
	return s.presence.set(ctx, userID, state, statusMsg, state == PresenceOnline)
}

// GetPresence handles GET /presence/{userId}/status: requester sees its own presence
// and that of users it shares a room with.
func (s *Service) GetPresence(ctx context.Context, requester, userID string) (PresenceView, error) {
	if requester != userID {
		ok, err := s.shareRoom(ctx, requester, userID)
		if err != nil {
			return PresenceView{}, err
		}
		if !ok {
			return PresenceView{}, forbidden("You do not share a room with this user")
		}
	}
	return s.presence.get(ctx, userID)
}

func (s *Service) shareRoom(ctx context.Context, a, b string) (bool, error) {
	ra, err := s.rooms.JoinedRooms(ctx, a)
	if err != nil {
		return false, err
	}
	rb, err := s.rooms.JoinedRooms(ctx, b)
	if err != nil {
		return false, err
	}
	set := make(map[string]bool, len(ra))
	for _, r := range ra {
		set[r] = true
	}
	for _, r := range rb {
		if set[r] {
			return true, nil
		}
	}
	return false, nil
}

// SweepPresence applies the presence timeouts as of now (the background loop does this
// every few seconds; tests call it with a clock in the future).
func (s *Service) SweepPresence(ctx context.Context, now time.Time) { s.presence.sweep(ctx, now) }

func (s *Service) raiseLatest(roomID string, pos int64) {
	s.latestMu.Lock()
	if pos > s.latest[roomID] {
		s.latest[roomID] = pos
	}
	s.latestMu.Unlock()
}

// roomHasEventsAfter reports whether a room may have timeline events after position
// since. It answers from memory once the room's latest position is known, so an idle
// incremental /sync does not query every room.
func (s *Service) roomHasEventsAfter(ctx context.Context, roomID string, since int64) (bool, error) {
	s.latestMu.Lock()
	pos, ok := s.latest[roomID]
	s.latestMu.Unlock()
	if ok {
		return pos > since, nil
	}
	last, err := s.rooms.StreamEvents(ctx, roomID, 0, s.rooms.StreamPosition(), 1, true)
	if err != nil {
		return false, err
	}
	if len(last) > 0 {
		s.raiseLatest(roomID, last[0].StreamPos)
		return last[0].StreamPos > since, nil
	}
	s.raiseLatest(roomID, 0)
	return false, nil
}

// needsAck reports whether a device's to-device messages up to pos may still need
// deleting (ackedTo records a done deletion).
func (s *Service) needsAck(userID, deviceID string, pos int64) bool {
	s.latestMu.Lock()
	defer s.latestMu.Unlock()
	return s.acked[userID+"|"+deviceID] < pos
}

func (s *Service) ackedTo(userID, deviceID string, pos int64) {
	s.latestMu.Lock()
	defer s.latestMu.Unlock()
	if len(s.acked) > 100000 {
		s.acked = map[string]int64{}
	}
	s.acked[userID+"|"+deviceID] = max(s.acked[userID+"|"+deviceID], pos)
}
