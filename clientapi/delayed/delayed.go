// Package delayed holds delayed events (MSC4140): events a client schedules to be sent
// after a delay unless it cancels the schedule or restarts its timer first. Element Call
// uses them so that a call membership is ended even when the client dies.
//
// Schedules live in the database (table delayed_events) and survive a restart: on start
// every pending one gets a timer again, and one that came due while the server was down
// fires at once. A firing first claims its schedule (status sending), so a client never
// sees, cancels or restarts a schedule whose event is already on its way; one claimed
// when the server stopped is sent again at start. A firing sends the event through the
// roomserver with a transaction ID derived from the delay ID, so a crash between sending
// and recording it cannot send the event twice.
package delayed

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// MaxDelay is the longest delay a client may ask for.
const MaxDelay = 7 * 24 * time.Hour

// Statuses of a schedule.
const (
	statusPending   = "pending"
	statusSending   = "sending" // claimed by a firing: no longer listed, cancelled or restarted
	statusSent      = "sent"
	statusCancelled = "cancelled"
	statusFailed    = "failed"
)

// Actions a client can take on a pending schedule.
const (
	ActionCancel  = "cancel"
	ActionRestart = "restart"
	ActionSend    = "send"
)

// ErrNotFound is returned for an unknown delay ID or one no longer pending.
var ErrNotFound = errors.New("no such pending delayed event")

// Sender sends a local user's event (the roomserver).
type Sender interface {
	SendEvent(ctx context.Context, req roomserver.SendRequest) (*roomserver.Event, error)
}

// Event is a scheduled event.
type Event struct {
	DelayID  string          `json:"delay_id"`
	RoomID   string          `json:"room_id"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key,omitempty"`
	Content  json.RawMessage `json:"content"`
	// Delay is the delay in milliseconds; RunningSince when the timer (re)started, in
	// milliseconds since the epoch.
	Delay        int64 `json:"delay"`
	RunningSince int64 `json:"running_since"`

	userID, deviceID string
}

// Request asks for an event to be sent after Delay.
type Request struct {
	UserID, DeviceID, TxnID string
	RoomID, Type            string
	StateKey                *string
	Content                 json.RawMessage
	Delay                   time.Duration
}

// Service schedules and fires delayed events.
type Service struct {
	db    *storage.DB
	rooms Sender
	log   *logrus.Entry
	now   func() time.Time

	mu     sync.Mutex
	timers map[string]*time.Timer // pending delay ID → its timer
	closed bool
	wg     sync.WaitGroup
}

// New returns a Service; Start arms the schedules already in the database.
func New(db *storage.DB, rooms Sender) *Service {
	return &Service{db: db, rooms: rooms, log: logrus.WithField("component", "delayed_events"), now: time.Now, timers: map[string]*time.Timer{}}
}

// Start arms a timer for every pending schedule and finishes the firings that a stop
// interrupted.
func (s *Service) Start(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT delay_id, delay_ms, running_since, status FROM delayed_events WHERE status IN ($1, $2)`,
		statusPending, statusSending)
	if err != nil {
		return fmt.Errorf("load delayed events: %w", err)
	}
	defer rows.Close()
	type due struct {
		id     string
		delay  int64
		since  int64
		status string
	}
	var all []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.delay, &d.since, &d.status); err != nil {
			return fmt.Errorf("load delayed events: %w", err)
		}
		all = append(all, d)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load delayed events: %w", err)
	}
	for _, d := range all {
		if d.status == statusSending {
			s.arm(d.id, time.Time{}, true)
			continue
		}
		s.arm(d.id, time.UnixMilli(d.since+d.delay), false)
	}
	return nil
}

// Close stops every timer and waits for firings in progress; schedules stay in the
// database for the next start.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Schedule stores a schedule and arms its timer. A retry of the same request (same
// user, device and transaction ID) returns the first delay ID.
func (s *Service) Schedule(ctx context.Context, req Request) (string, error) {
	if req.TxnID != "" {
		var id string
		err := s.db.QueryRowContext(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
			req.UserID, req.DeviceID, req.TxnID).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("look up delayed event txn %s: %w", req.TxnID, err)
		}
	}
	id := "syd_" + rand.Text()
	since := s.now()
	var sk any
	if req.StateKey != nil {
		sk = *req.StateKey
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO delayed_events (delay_id, user_id, device_id, txn_id, room_id, event_type,
		state_key, content, delay_ms, running_since, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		id, req.UserID, req.DeviceID, req.TxnID, req.RoomID, req.Type, sk, string(req.Content),
		req.Delay.Milliseconds(), since.UnixMilli(), statusPending)
	if err != nil {
		return "", fmt.Errorf("store delayed event: %w", err)
	}
	s.arm(id, since.Add(req.Delay), false)
	return id, nil
}

// List returns a user's pending schedules, oldest first.
func (s *Service) List(ctx context.Context, userID string) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT delay_id, room_id, event_type, state_key, content, delay_ms, running_since
		FROM delayed_events WHERE user_id = $1 AND status = $2 ORDER BY running_since, delay_id`, userID, statusPending)
	if err != nil {
		return nil, fmt.Errorf("list delayed events of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		var sk sql.NullString
		var content string
		if err := rows.Scan(&e.DelayID, &e.RoomID, &e.Type, &sk, &content, &e.Delay, &e.RunningSince); err != nil {
			return nil, fmt.Errorf("list delayed events of %s: %w", userID, err)
		}
		if sk.Valid {
			e.StateKey = &sk.String
		}
		e.Content = json.RawMessage(content)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Act cancels, restarts or sends now a pending schedule. The delay ID is the
// credential (MSC4140 lets a client act without its access token).
func (s *Service) Act(ctx context.Context, delayID, action string) error {
	switch action {
	case ActionCancel:
		return s.finish(ctx, delayID, statusCancelled)
	case ActionRestart:
		since := s.now()
		var delay int64
		err := s.db.QueryRowContext(ctx, `UPDATE delayed_events SET running_since = $1 WHERE delay_id = $2 AND status = $3 RETURNING delay_ms`,
			since.UnixMilli(), delayID, statusPending).Scan(&delay)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("restart delayed event %s: %w", delayID, err)
		}
		s.arm(delayID, since.Add(time.Duration(delay)*time.Millisecond), false)
		return nil
	case ActionSend:
		return s.fire(ctx, delayID, false, false)
	}
	return fmt.Errorf("unknown action %q", action)
}

// StateSent cancels the pending delayed state events of a room with this type and state
// key: a newer state event replaced what they would set (MSC4140).
func (s *Service) StateSent(ctx context.Context, roomID, eventType, stateKey string) error {
	ids, err := storage.QueryStrings(ctx, s.db, `SELECT delay_id FROM delayed_events
		WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND status = $4`, roomID, eventType, stateKey, statusPending)
	if err != nil {
		return fmt.Errorf("delayed events replaced in %s: %w", roomID, err)
	}
	for _, id := range ids {
		if err := s.finish(ctx, id, statusCancelled); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// finish moves a pending schedule to a final status and stops its timer.
func (s *Service) finish(ctx context.Context, delayID, status string) error {
	return s.finishFrom(ctx, delayID, statusPending, status)
}

// finishFrom moves a schedule from one status to a final one and stops its timer.
func (s *Service) finishFrom(ctx context.Context, delayID, from, status string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE delayed_events SET status = $1 WHERE delay_id = $2 AND status = $3`, status, delayID, from)
	if err != nil {
		return fmt.Errorf("mark delayed event %s %s: %w", delayID, status, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	s.disarm(delayID)
	return nil
}

// fire claims a pending schedule and sends its event; with onlyIfDue (a timer firing)
// only when it is due, since a restart may have moved it on after the timer started.
// With resume it takes over a schedule a stop left claimed instead.
func (s *Service) fire(ctx context.Context, delayID string, onlyIfDue, resume bool) error {
	var e Event
	var sk sql.NullString
	var content string
	dueBy := int64(math.MaxInt64)
	if onlyIfDue {
		dueBy = s.now().UnixMilli()
	}
	from := statusPending
	if resume {
		from = statusSending
	}
	err := s.db.QueryRowContext(ctx, `UPDATE delayed_events SET status = $1
		WHERE delay_id = $2 AND status = $3 AND running_since + delay_ms <= $4
		RETURNING user_id, device_id, room_id, event_type, state_key, content, delay_ms, running_since`,
		statusSending, delayID, from, dueBy).
		Scan(&e.userID, &e.deviceID, &e.RoomID, &e.Type, &sk, &content, &e.Delay, &e.RunningSince)
	if errors.Is(err, sql.ErrNoRows) {
		// Gone, finished, or (for a timer) restarted so that its new timer fires it.
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("claim delayed event %s: %w", delayID, err)
	}
	req := roomserver.SendRequest{
		RoomID: e.RoomID, Sender: e.userID, Type: e.Type, Content: json.RawMessage(content),
		DeviceID: e.deviceID, TxnID: delayID, TxnScope: "delayed",
	}
	if sk.Valid {
		req.StateKey = &sk.String
	}
	_, sendErr := s.rooms.SendEvent(ctx, req)
	status := statusSent
	if sendErr != nil {
		// The user may have left the room or lost the power to send it: the schedule
		// ends either way, as retrying would fail the same way.
		status = statusFailed
		s.log.WithError(sendErr).WithFields(logrus.Fields{"delay_id": delayID, "room_id": e.RoomID, "type": e.Type}).Warn("delayed event not sent")
	}
	if err := s.finishFrom(ctx, delayID, statusSending, status); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if sendErr == nil && sk.Valid {
		return s.StateSent(ctx, e.RoomID, e.Type, sk.String)
	}
	return sendErr
}

// arm (re)sets the timer of a schedule to fire at a time (at once when it is past);
// resume is for a schedule a stop left claimed.
func (s *Service) arm(delayID string, at time.Time, resume bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if t := s.timers[delayID]; t != nil {
		t.Stop()
	}
	s.timers[delayID] = time.AfterFunc(time.Until(at), func() {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.fire(ctx, delayID, !resume, resume); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.WithError(err).WithField("delay_id", delayID).Warn("delayed event")
		}
	})
}

func (s *Service) disarm(delayID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.timers[delayID]; t != nil {
		t.Stop()
		delete(s.timers, delayID)
	}
}
