package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// client talks the Matrix client-server API (v3) over plain net/http.
type client struct {
	hs           string
	http         *http.Client
	sharedSecret string
	timeout      time.Duration // per-request timeout (long-polls add their own timeout)
	txn          atomic.Int64
	runID        string
	rateLimited  atomic.Int64 // 429 answers that were retried
	escaped      sync.Map     // filter → its query-escaped form
}

func newClient(hs, sharedSecret string, conns int, timeout time.Duration) *client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &client{
		hs:           strings.TrimRight(hs, "/"),
		http:         &http.Client{Transport: tr},
		sharedSecret: sharedSecret,
		timeout:      timeout,
		runID:        randomID(6),
	}
}

// user is a logged-in account.
type user struct {
	ID    string
	Token string
}

// apiError is a failed request, classified for the error table.
type apiError struct {
	Kind   string // e.g. http_403_M_FORBIDDEN, timeout, conn_refused, net, bad_json
	Status int
	Msg    string
	Body   map[string]any
}

func (e *apiError) Error() string {
	if e.Msg != "" {
		return e.Kind + ": " + e.Msg
	}
	return e.Kind
}

// errKind classifies an error; "" for a cancelled context (not counted).
func errKind(err error) string {
	if err == nil {
		return ""
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Kind
	}
	if errors.Is(err, context.Canceled) {
		return ""
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "conn_refused"
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "conn_reset"
	}
	return "net"
}

// do sends one request and decodes a JSON object answer into out (may be nil).
// It returns the size of the answer body. 429 answers are retried a bounded number of times.
func (c *client) do(ctx context.Context, method, path, token string, body any, out any, extraTimeout time.Duration) (int, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return 0, err
		}
	}
	return c.retrying(ctx, func() (int, time.Duration, error) {
		return c.once(ctx, method, path, token, payload, out, extraTimeout)
	})
}

// retrying runs one request attempt after another while the server answers 429, at
// most 5 retries, waiting what it asks (at most 5 s).
func (c *client) retrying(ctx context.Context, attempt func() (int, time.Duration, error)) (int, error) {
	for i := 0; ; i++ {
		n, retryAfter, err := attempt()
		if retryAfter <= 0 || i >= 5 {
			return n, err
		}
		c.rateLimited.Add(1)
		if retryAfter > 5*time.Second {
			retryAfter = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(retryAfter):
		}
	}
}

func (c *client) once(ctx context.Context, method, path, token string, payload []byte, out any, extraTimeout time.Duration) (int, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, c.timeout+extraTimeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(rctx, method, c.hs+path, rd)
	if err != nil {
		return 0, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return len(raw), 0, err
	}
	return decodeAnswer(resp.StatusCode, raw, out)
}

// decodeAnswer turns an answer's status and body into out, or into an apiError (with
// the wait a 429 asks for).
func decodeAnswer(status int, raw []byte, out any) (int, time.Duration, error) {
	if status/100 != 2 {
		var eb map[string]any
		_ = json.Unmarshal(raw, &eb)
		code, _ := eb["errcode"].(string)
		msg, _ := eb["error"].(string)
		kind := "http_" + strconv.Itoa(status)
		if code != "" {
			kind += "_" + code
		}
		ae := &apiError{Kind: kind, Status: status, Msg: msg, Body: eb}
		if status == http.StatusTooManyRequests {
			ra := time.Second
			if ms, ok := eb["retry_after_ms"].(float64); ok && ms > 0 {
				ra = time.Duration(ms) * time.Millisecond
			}
			return len(raw), ra, ae
		}
		return len(raw), 0, ae
	}
	if a, ok := out.(arrivalRecorder); ok {
		a.arrivedAt(time.Now())
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return len(raw), 0, &apiError{Kind: "bad_json", Status: status, Msg: err.Error()}
		}
	}
	return len(raw), 0, nil
}

func (c *client) nextTxn() string {
	return fmt.Sprintf("ml%s-%d", c.runID, c.txn.Add(1))
}

// localpart names a user of this run: ml<run>-<role><index>.
func (c *client) localpart(role string, i int) string {
	return fmt.Sprintf("ml%s-%s%d", c.runID, role, i)
}

// register creates an account with open registration (m.login.dummy) or, when a
// shared secret is set, with Synapse-compatible /_synapse/admin/v1/register.
func (c *client) register(ctx context.Context, localpart string) (*user, error) {
	password := "pw-" + randomID(12)
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if c.sharedSecret != "" {
		var nonce struct {
			Nonce string `json:"nonce"`
		}
		if _, err := c.do(ctx, "GET", "/_synapse/admin/v1/register", "", nil, &nonce, 0); err != nil {
			return nil, err
		}
		mac := hmac.New(sha1.New, []byte(c.sharedSecret))
		mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
		body := map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": password,
			"admin": false, "mac": hex.EncodeToString(mac.Sum(nil))}
		if _, err := c.do(ctx, "POST", "/_synapse/admin/v1/register", "", body, &out, 0); err != nil {
			return nil, err
		}
	} else {
		body := map[string]any{"username": localpart, "password": password,
			"initial_device_display_name": "myelin-load", "auth": map[string]any{"type": "m.login.dummy"}}
		_, err := c.do(ctx, "POST", "/_matrix/client/v3/register", "", body, &out, 0)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			// Some servers want the UIA session from a first round trip.
			if session, _ := ae.Body["session"].(string); session != "" {
				body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
				_, err = c.do(ctx, "POST", "/_matrix/client/v3/register", "", body, &out, 0)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if out.AccessToken == "" || out.UserID == "" {
		return nil, &apiError{Kind: "no_token", Msg: "registration answered without user_id/access_token"}
	}
	return &user{ID: out.UserID, Token: out.AccessToken}, nil
}

func (c *client) createRoom(ctx context.Context, u *user, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "name": name, "visibility": "private"}
	if _, err := c.do(ctx, "POST", "/_matrix/client/v3/createRoom", u.Token, body, &out, 0); err != nil {
		return "", err
	}
	if out.RoomID == "" {
		return "", &apiError{Kind: "bad_json", Msg: "createRoom without room_id"}
	}
	return out.RoomID, nil
}

func (c *client) join(ctx context.Context, u *user, roomID string) error {
	_, err := c.do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), u.Token, map[string]any{}, nil, 0)
	return err
}

// send posts an m.room.message carrying the load sequence number (429 answers are waited out and retried).
func (c *client) send(ctx context.Context, u *user, roomID string, seq int64) (string, error) {
	var out struct {
		EventID string `json:"event_id"`
	}
	body := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("load message %d", seq), seqKey: seq, runKey: c.runID}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(c.nextTxn())
	_, err := c.do(ctx, "PUT", path, u.Token, body, &out, 0)
	return out.EventID, err
}

// sendOnce is send without retries: a 429 comes back as an *apiError whose Body
// holds the server's retry_after_ms.
func (c *client) sendOnce(ctx context.Context, u *user, roomID string, seq int64) error {
	body, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("load message %d", seq), seqKey: seq, runKey: c.runID})
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(c.nextTxn())
	_, _, err := c.once(ctx, "PUT", path, u.Token, body, nil, 0)
	return err
}

const (
	seqKey = "myelin_load_seq"
	runKey = "myelin_load_run"
)

// syncResponse holds the parts of /sync the scenarios read.
// arrivalRecorder is a response that keeps when its body was read, before decoding:
// latency is measured to the arrival of the answer, not to the end of the tool's own
// decoding (which waits for a core while hundreds of answers arrive at once).
type arrivalRecorder interface{ arrivedAt(time.Time) }

type syncResponse struct {
	arrived   time.Time
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events    []event `json:"events"`
				Limited   bool    `json:"limited"`
				PrevBatch string  `json:"prev_batch"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type event struct {
	Type    string      `json:"type"`
	EventID string      `json:"event_id"`
	Sender  string      `json:"sender"`
	Content loadContent `json:"content"`
}

// loadContent is the part of a message's content this tool reads: its run and
// sequence number (kept raw, so that any other content decodes without error and
// without building a map per event: fanout decodes every delivery on the cores the
// server uses).
type loadContent struct {
	Run json.RawMessage `json:"myelin_load_run"` // runKey
	Seq json.RawMessage `json:"myelin_load_seq"` // seqKey
}

// loadSeq returns the sequence number of a message sent by this run.
func (c *client) loadSeq(ev event) (int64, bool) {
	if ev.Type != "m.room.message" || len(ev.Content.Run) == 0 || len(ev.Content.Seq) == 0 {
		return 0, false
	}
	var run string
	if json.Unmarshal(ev.Content.Run, &run) != nil || run != c.runID {
		return 0, false
	}
	seq, err := strconv.ParseInt(string(ev.Content.Seq), 10, 64)
	return seq, err == nil
}

func (c *client) sync(ctx context.Context, u *user, since, filter string, timeout time.Duration) (*syncResponse, int, error) {
	return c.pollSync(ctx, nil, u, since, filter, timeout)
}

// pollSync is sync over pc, the caller's own connection (nil: net/http).
func (c *client) pollSync(ctx context.Context, pc *pollConn, u *user, since, filter string, timeout time.Duration) (*syncResponse, int, error) {
	path := "/_matrix/client/v3/sync?timeout=" + strconv.FormatInt(timeout.Milliseconds(), 10)
	if filter != "" {
		// Escaped once: fanout listeners send the same long filter with every poll.
		esc, ok := c.escaped.Load(filter)
		if !ok {
			esc, _ = c.escaped.LoadOrStore(filter, url.QueryEscape(filter))
		}
		path += "&filter=" + esc.(string)
	}
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	var out syncResponse
	var n int
	var err error
	if pc == nil {
		n, err = c.do(ctx, "GET", path, u.Token, nil, &out, timeout)
	} else {
		n, err = c.retrying(ctx, func() (int, time.Duration, error) {
			status, raw, err := pc.get(ctx, path, u.Token, c.timeout+timeout)
			if err != nil {
				return 0, 0, err
			}
			return decodeAnswer(status, raw, &out)
		})
	}
	if err != nil {
		return nil, n, err
	}
	return &out, n, nil
}

func (r *syncResponse) arrivedAt(t time.Time) { r.arrived = t }

type messagesResponse struct {
	Chunk []event `json:"chunk"`
	Start string  `json:"start"`
	End   string  `json:"end"`
}

func (c *client) messages(ctx context.Context, u *user, roomID, from string, limit int) (*messagesResponse, int, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	var out messagesResponse
	n, err := c.do(ctx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), u.Token, nil, &out, 0)
	if err != nil {
		return nil, n, err
	}
	return &out, n, nil
}

func randomID(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
