package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// NotifyPath is the path every pusher URL must have.
const NotifyPath = "/_matrix/push/v1/notify"

// queuedPayload is what a push_queue row holds: the notification without its
// devices (added from the pusher at send time) and the tweaks of the matched rule.
type queuedPayload struct {
	Notification gatewayNotification        `json:"notification"`
	Tweaks       map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// gatewayNotification is the body's "notification" of POST /_matrix/push/v1/notify.
type gatewayNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            gatewayCounts   `json:"counts"`
	Devices           []gatewayDevice `json:"devices"`
}

type gatewayCounts struct {
	Unread      int `json:"unread"`
	MissedCalls int `json:"missed_calls,omitempty"`
}

type gatewayDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts,omitempty"`
	Data      map[string]any             `json:"data,omitempty"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// pendingPush is a push to queue: a push_queue row.
type pendingPush struct {
	pusherID int64
	payload  json.RawMessage
}

// pushesOf builds one push per pusher (of those given) of each user the evaluated event
// notifies who has not read it yet (readOf: notified user → read).
func (s *Service) pushesOf(ctx context.Context, e *evaluation, readOf map[string]bool, allPushers []storage.Pusher) ([]pendingPush, error) {
	ev, pev, rc, actionsOf := e.out.Event, e.pev, e.rc, e.actionsOf
	var pushers []storage.Pusher
	for _, p := range allPushers {
		if _, notified := readOf[p.UserID]; notified {
			pushers = append(pushers, p)
		}
	}
	if len(pushers) == 0 {
		return nil, nil
	}
	roomID := ev.RoomID().String()
	sender := string(ev.SenderID())
	base := gatewayNotification{
		EventID: ev.EventID(),
		RoomID:  roomID,
		Type:    ev.Type(),
		Sender:  sender,
		Content: ev.Content(),
	}
	if m := rc.members[sender]; m != nil {
		base.SenderDisplayName = displayNameOf(m)
	}
	if name, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomName, "", true); err == nil && name != nil {
		var c struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(name.Content(), &c)
		base.RoomName = c.Name
	}
	if alias, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomCanonicalAlias, "", true); err == nil && alias != nil {
		var c struct {
			Alias string `json:"alias"`
		}
		_ = json.Unmarshal(alias.Content(), &c)
		base.RoomAlias = c.Alias
	}
	unread := map[string]int{}
	var out []pendingPush
	for _, p := range pushers {
		if readOf[p.UserID] {
			continue
		}
		n, ok := unread[p.UserID]
		if !ok {
			var err error
			if n, err = s.totalUnread(ctx, p.UserID); err != nil {
				return nil, err
			}
			unread[p.UserID] = n
		}
		a := actionsOf[p.UserID]
		note := base
		note.Counts = gatewayCounts{Unread: n}
		note.Prio = "low"
		if a.Highlight || pev.MemberCount == 2 {
			note.Prio = "high"
		}
		if ev.StateKey() != nil && *ev.StateKey() == p.UserID {
			note.UserIsTarget = true
		}
		payload, err := json.Marshal(queuedPayload{Notification: note, Tweaks: a.Tweaks})
		if err != nil {
			return nil, err
		}
		out = append(out, pendingPush{pusherID: p.ID, payload: payload})
	}
	return out, nil
}

// enqueueBadge queues a counts-only notification to each of a user's pushers, so that
// devices update their badge after the user read something elsewhere.
func (s *Service) enqueueBadge(ctx context.Context, userID string) error {
	pushers, err := storage.PushersOfUser(ctx, s.db, userID)
	if err != nil || len(pushers) == 0 {
		return err
	}
	n, err := s.totalUnread(ctx, userID)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(queuedPayload{Notification: gatewayNotification{Prio: "low", Counts: gatewayCounts{Unread: n}}})
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, p := range pushers {
			if err := storage.EnqueuePush(ctx, tx, p.ID, payload); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.sender.Wake()
	}
	return err
}

// Sender delivers queued pushes to push gateways, retrying failures with capped
// exponential backoff. The queue lives in the database: pushes pending at shutdown
// are sent after the next start.
type Sender struct {
	db     *storage.DB
	cfg    config.Push
	client *http.Client
	log    *logrus.Entry
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	// now is the clock (tests move it).
	now func() time.Time
}

// NewSender builds a sender; Start runs it.
func NewSender(db *storage.DB, cfg config.Push) *Sender {
	return &Sender{
		db:     db,
		cfg:    cfg,
		client: newGatewayClient(cfg),
		log:    logrus.WithField("component", "pusher"),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		now:    time.Now,
	}
}

// Start runs the delivery loop until Close.
func (s *Sender) Start(ctx context.Context) {
	go s.run(ctx)
}

// Wake makes the sender look at the queue now.
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops the sender and waits for in-flight requests.
func (s *Sender) Close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Sender) run(ctx context.Context) {
	defer close(s.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		wait := s.deliverDue(ctx)
		if ctx.Err() != nil {
			return
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

const (
	sendBatch       = 100
	sendParallelism = 8
	idleWait        = time.Minute
)

// deliverDue sends every due push and returns how long to sleep before the next one.
func (s *Sender) deliverDue(ctx context.Context) time.Duration {
	for ctx.Err() == nil {
		due, err := storage.DuePushes(ctx, s.db, s.now().UnixMilli(), sendBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WithError(err).Error("reading the push queue")
			}
			return 5 * time.Second
		}
		if len(due) == 0 {
			break
		}
		sem := make(chan struct{}, sendParallelism)
		var wg sync.WaitGroup
		lease := s.now().Add(2*s.cfg.RequestTimeout.Std() + 10*time.Second).UnixMilli()
		for _, q := range due {
			if ok, err := storage.ClaimPush(ctx, s.db, q.ID, q.NextAttemptTS, lease); err != nil || !ok {
				continue // another process is sending it
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(q storage.QueuedPush) {
				defer func() { <-sem; wg.Done() }()
				s.deliver(ctx, q)
			}(q)
		}
		wg.Wait()
		if len(due) < sendBatch {
			break
		}
	}
	next, err := storage.NextPushDue(ctx, s.db)
	if err != nil || next == 0 {
		return idleWait
	}
	return max(time.Until(time.UnixMilli(next)), 10*time.Millisecond)
}

// backoff is the delay before retry number attempts (1, 2, ...): 1 s doubling, capped.
func backoff(attempts int, maxDelay time.Duration) time.Duration {
	d := time.Second
	for i := 1; i < attempts && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

func (s *Sender) deliver(ctx context.Context, q storage.QueuedPush) {
	p, err := storage.PusherByID(ctx, s.db, q.PusherID)
	if errors.Is(err, storage.ErrNotFound) {
		_ = storage.DeleteQueuedPush(ctx, s.db, q.ID)
		return
	}
	if err != nil {
		return
	}
	log := s.log.WithFields(logrus.Fields{"user_id": p.UserID, "app_id": p.AppID})
	rejected, err := s.post(ctx, p, q.Payload)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		attempts := q.Attempts + 1
		if s.now().Sub(time.UnixMilli(q.CreatedTS)) > s.cfg.GiveUpAfter.Std() {
			log.WithError(err).Warn("giving up on a push after repeated failures")
			_ = storage.DeleteQueuedPush(ctx, s.db, q.ID)
			return
		}
		delay := backoff(attempts, s.cfg.MaxBackoff.Std())
		log.WithError(err).WithField("retry_in", delay.String()).Info("push failed, will retry")
		_ = storage.ReschedulePush(ctx, s.db, q.ID, attempts, s.now().Add(delay).UnixMilli())
		return
	}
	if rejected {
		log.Info("push gateway rejected the pushkey, removing the pusher")
		if err := storage.DeletePusherByID(ctx, s.db, p.ID); err != nil {
			log.WithError(err).Error("removing a rejected pusher")
		}
		return
	}
	_ = storage.DeleteQueuedPush(ctx, s.db, q.ID)
}

// post sends one notification to the pusher's gateway and reports whether the
// gateway rejected the pushkey.
func (s *Sender) post(ctx context.Context, p *storage.Pusher, payload json.RawMessage) (bool, error) {
	var qp queuedPayload
	if err := json.Unmarshal(payload, &qp); err != nil {
		return false, nil // unreadable: nothing to retry
	}
	var data map[string]any
	_ = json.Unmarshal(p.Data, &data)
	gwURL, _ := data["url"].(string)
	delete(data, "url")
	n := qp.Notification
	if format, _ := data["format"].(string); format == "event_id_only" {
		n = gatewayNotification{EventID: n.EventID, RoomID: n.RoomID, Counts: n.Counts, Prio: n.Prio}
	}
	n.Devices = []gatewayDevice{{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.CreatedTS / 1000, Data: data, Tweaks: qp.Tweaks}}
	body, err := json.Marshal(map[string]any{"notification": n})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gwURL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("push gateway answered %s", resp.Status)
	}
	var r struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(respBody, &r)
	for _, k := range r.Rejected {
		if k == p.PushKey {
			return true, nil
		}
	}
	return false, nil
}

// errForbiddenAddress is returned when a gateway resolves to a non-public address.
var errForbiddenAddress = errors.New("push gateway address is not public (see push.allow_private_addresses)")

var extraPrivate = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// publicAddr reports whether ip is a public unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range extraPrivate {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

func newGatewayClient(cfg config.Push) *http.Client {
	dialer := &net.Dialer{Timeout: cfg.RequestTimeout.Std()}
	if !cfg.AllowPrivateAddresses {
		// Checked on the resolved address of every connection, so DNS cannot point a
		// public-looking name at an internal host.
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr()) {
				return errForbiddenAddress
			}
			return nil
		}
	}
	return &http.Client{
		Timeout: cfg.RequestTimeout.Std(),
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			TLSHandshakeTimeout: cfg.RequestTimeout.Std(),
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CheckGatewayURL validates a pusher's data.url: http(s), path /_matrix/push/v1/notify
// and, unless private addresses are allowed, not a literal non-public address.
func CheckGatewayURL(raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return invalid("data.url must be an absolute URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return invalid("data.url must be an https URL")
	}
	if u.Path != NotifyPath {
		return invalid("data.url must have the path %s", NotifyPath)
	}
	if u.User != nil {
		return invalid("data.url must not contain credentials")
	}
	if !allowPrivate {
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); err == nil && !publicAddr(ip) {
			return invalid("data.url points at a non-public address")
		}
		if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
			return invalid("data.url points at a non-public address")
		}
	}
	return nil
}
