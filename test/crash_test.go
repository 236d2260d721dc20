package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/test/harness"
)

// Crash safety (issue 8, item 5): several clients write over HTTP (messages, state
// events, to-device messages, account data, one-time keys) until the server is killed
// with SIGKILL at a random point; after the restart everything the server acknowledged
// with a 200 must be there, in order, exactly once, and the rooms must still be
// writable with a sane DAG. The kill points are counts of acknowledged requests, not
// times, so a slow machine changes how long a round takes, not what it checks.

const (
	crashClients = 4
	crashRooms   = 2
	crashRounds  = 3
)

// Operation kinds, sent in the order of crashPattern by every client.
const (
	opMessage     = "message"
	opState       = "state"
	opToDevice    = "to_device"
	opAccountData = "account_data"
	opKeys        = "keys"
)

var crashPattern = []string{opMessage, opMessage, opState, opMessage, opToDevice, opMessage, opAccountData, opMessage, opKeys, opMessage}

// crashOp is one write request and what became of it.
type crashOp struct {
	kind   string
	client int
	room   int // message, state
	round  int
	seq    int // per client, in send order
	marker string
	txn    string
	method string
	path   string
	body   any
	// acked: the server answered 200 (before the kill, or to a retry after it).
	acked   bool
	eventID string
	// retried: acknowledged only by a retry of the same transaction after the restart.
	retried bool
}

type crashClient struct {
	dev   *e2eDev
	since string // /sync token: everything before it was checked
	seq   int
	// toDevice counts, per marker, the to-device messages this device received.
	toDevice map[string]int
}

type crashTest struct {
	t       *testing.T
	s       *harness.Server
	hc      *http.Client
	db      *storage.DB
	rng     *rand.Rand
	clients []*crashClient
	rooms   []string

	mu  sync.Mutex
	ops []*crashOp
}

// TestCrashSafety kills the server with SIGKILL while clients write to it, several
// times per engine, and checks after every restart that nothing acknowledged was lost.
func TestCrashSafety(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		seed := time.Now().UnixNano()
		t.Logf("kill points from seed %d", seed)
		s := harness.Start(t, harness.Options{Engine: engine})
		ct := &crashTest{t: t, s: s, rng: rand.New(rand.NewSource(seed)),
			hc: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * crashClients}}}
		ct.setup()
		ct.db = e2eOpenDB(t, s)
		for round := 0; round < crashRounds; round++ {
			// Kill points spread from early (a few requests in) to later in the run.
			target := 5 + round*60 + ct.rng.Intn(40)
			ct.load(round, target)
			s.Restart()
			ct.verify(round)
		}
	})
}

// do sends one request; err is set when no HTTP answer arrived (e.g. the server died).
func (ct *crashTest) do(ctx context.Context, method, path, token string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, ct.s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := ct.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("status %d, body is not a JSON object: %q", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out, nil
}

// must is do for the checking phase: any failure ends the test.
func (ct *crashTest) must(t *testing.T, want int, method, path, token string, body any) map[string]any {
	t.Helper()
	status, out, err := ct.do(context.Background(), method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("%s %s: status %d %v, want %d", method, path, status, out, want)
	}
	return out
}

func (ct *crashTest) setup() {
	t := ct.t
	for i := 0; i < crashClients; i++ {
		d := e2eRegister(t, ct.s, fmt.Sprintf("crash%d", i))
		status, body := d.upload(t, ct.s, map[string]any{"device_keys": d.deviceKeys(t)})
		e2eExpect(t, "device keys", status, body, 200, "")
		ct.clients = append(ct.clients, &crashClient{dev: d, toDevice: map[string]int{}})
	}
	owner := ct.clients[0].dev
	for r := 0; r < crashRooms; r++ {
		out := ct.must(t, 200, "POST", "/_matrix/client/v3/createRoom", owner.token, map[string]any{
			"preset": "public_chat", "name": fmt.Sprintf("crash %d", r),
			// Every member may set the test's state events.
			"power_level_content_override": map[string]any{"state_default": 0},
		})
		ct.rooms = append(ct.rooms, out["room_id"].(string))
	}
	for _, c := range ct.clients[1:] {
		for _, room := range ct.rooms {
			ct.must(t, 200, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), c.dev.token, map[string]any{})
		}
	}
	for _, c := range ct.clients {
		c.since = ct.syncToDevice(t, c, "")
	}
}

// newOp builds client ci's next request.
func (ct *crashTest) newOp(ci, round int) *crashOp {
	c := ct.clients[ci]
	seq := c.seq
	c.seq++
	op := &crashOp{kind: crashPattern[seq%len(crashPattern)], client: ci, room: (seq / 2) % crashRooms, round: round, seq: seq,
		marker: fmt.Sprintf("c%dr%ds%d", ci, round, seq)}
	op.txn = "crash-" + op.marker
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(ct.rooms[op.room])
	switch op.kind {
	case opMessage:
		op.method, op.path = "PUT", roomPath+"/send/m.room.message/"+op.txn
		op.body = map[string]any{"msgtype": "m.text", "body": "crash test " + op.marker, "crash_marker": op.marker, "seq": seq}
	case opState:
		op.method, op.path = "PUT", roomPath+"/state/m.crash.state/"+url.PathEscape(c.dev.userID)
		op.body = map[string]any{"crash_marker": op.marker, "seq": seq}
	case opToDevice:
		to := ct.clients[(ci+1)%len(ct.clients)].dev
		op.method, op.path = "PUT", "/_matrix/client/v3/sendToDevice/m.crash.todevice/"+op.txn
		op.body = map[string]any{"messages": map[string]any{to.userID: map[string]any{to.deviceID: map[string]any{"crash_marker": op.marker}}}}
	case opAccountData:
		op.method, op.path = "PUT", "/_matrix/client/v3/user/"+url.PathEscape(c.dev.userID)+"/account_data/m.crash.ad"
		op.body = map[string]any{"crash_marker": op.marker, "seq": seq}
	case opKeys:
		op.method, op.path = "POST", "/_matrix/client/v3/keys/upload"
		op.body = map[string]any{"one_time_keys": map[string]any{"signed_curve25519:" + op.marker: c.dev.otk(ct.t, false)}}
	}
	return op
}

// load runs every client's write loop until target requests were acknowledged, then
// kills the server with SIGKILL and waits for the clients to notice.
func (ct *crashTest) load(round, target int) {
	t := ct.t
	var acked atomic.Int64
	var wg sync.WaitGroup
	var unexpected []string
	var umu sync.Mutex
	stopped := make(chan struct{})
	ops := make([][]*crashOp, len(ct.clients))
	var active atomic.Int64
	for ci := range ct.clients {
		wg.Add(1)
		active.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			for {
				select {
				case <-stopped:
					return
				default:
				}
				op := ct.newOp(ci, round)
				ops[ci] = append(ops[ci], op)
				status, body, err := ct.do(context.Background(), op.method, op.path, ct.clients[ci].dev.token, op.body)
				if err != nil {
					return // the server died: the outcome of op is unknown
				}
				if status != http.StatusOK {
					umu.Lock()
					unexpected = append(unexpected, fmt.Sprintf("%s %s: %d %v", op.method, op.path, status, body))
					umu.Unlock()
					return
				}
				op.acked = true
				if op.kind == opMessage || op.kind == opState {
					op.eventID, _ = body["event_id"].(string)
				}
				acked.Add(1)
			}
		}()
	}
	// The kill point is a count of acknowledged requests plus a random few milliseconds,
	// so requests are in every stage of handling when the process dies.
	deadline := time.Now().Add(5 * time.Minute)
	for acked.Load() < int64(target) && active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(time.Duration(ct.rng.Intn(15)) * time.Millisecond)
	ct.s.Kill()
	close(stopped)
	wg.Wait()
	n := 0
	for _, list := range ops {
		for _, op := range list {
			if op.acked {
				n++
			}
		}
		ct.ops = append(ct.ops, list...)
	}
	t.Logf("round %d: killed after %d acknowledged requests (target %d)", round, n, target)
	if len(unexpected) > 0 {
		t.Fatalf("requests failed before the kill:\n%v", unexpected)
	}
	if n < target {
		t.Fatalf("only %d of %d requests acknowledged before the deadline", n, target)
	}
}

// verify checks, after a restart, everything acknowledged in all rounds so far.
func (ct *crashTest) verify(round int) {
	t := ct.t
	ctx := context.Background()

	// 1. Every acknowledged room event can be fetched by ID.
	for _, op := range ct.ops {
		if op.acked && (op.kind == opMessage || op.kind == opState) {
			ev := ct.must(t, 200, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(ct.rooms[op.room])+"/event/"+url.PathEscape(op.eventID),
				ct.clients[op.client].dev.token, nil)
			if content, _ := ev["content"].(map[string]any); content["crash_marker"] != op.marker {
				t.Fatalf("event %s of %s has content %v", op.eventID, op.marker, ev["content"])
			}
		}
	}

	// 2. Replaying an acknowledged transaction ID returns the same event and sends nothing.
	for _, op := range ct.ops {
		if op.round != round || !op.acked || (op.kind != opMessage && op.kind != opToDevice) {
			continue
		}
		out := ct.must(t, 200, op.method, op.path, ct.clients[op.client].dev.token, op.body)
		if op.kind == opMessage && out["event_id"] != op.eventID {
			t.Fatalf("replay of acknowledged %s after restart: event_id %v, first answer %s", op.txn, out["event_id"], op.eventID)
		}
	}

	// 3. A request in flight at the kill, retried with its transaction ID, is sent exactly once.
	t.Run(fmt.Sprintf("round%d_retry_in_flight", round), func(t *testing.T) { ct.retryInFlight(t, round) })

	// 4. Room history: every acknowledged event exactly once, each client's in its send order.
	for ri, room := range ct.rooms {
		ct.checkHistory(t, ri, room)
	}

	// 5. State and account data: the last acknowledged value, or the one in flight after it.
	for ci, c := range ct.clients {
		for ri, room := range ct.rooms {
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/m.crash.state/" + url.PathEscape(c.dev.userID)
			ct.checkLatest(t, "state", path, c.dev.token, func(op *crashOp) bool { return op.kind == opState && op.client == ci && op.room == ri })
		}
		ct.checkLatest(t, "account data", "/_matrix/client/v3/user/"+url.PathEscape(c.dev.userID)+"/account_data/m.crash.ad", c.dev.token,
			func(op *crashOp) bool { return op.kind == opAccountData && op.client == ci })
	}

	// 6. One-time keys: every acknowledged upload counted, at most the ones in flight more.
	for ci, c := range ct.clients {
		acked, unknown := 0, 0
		for _, op := range ct.ops {
			if op.kind == opKeys && op.client == ci {
				if op.acked {
					acked++
				} else {
					unknown++
				}
			}
		}
		out := ct.must(t, 200, "POST", "/_matrix/client/v3/keys/upload", c.dev.token, map[string]any{})
		counts, _ := out["one_time_key_counts"].(map[string]any)
		n, _ := counts["signed_curve25519"].(float64)
		if int(n) < acked || int(n) > acked+unknown {
			t.Fatalf("%s has %v one-time keys; %d uploads acknowledged, %d in flight", c.dev.userID, n, acked, unknown)
		}
	}

	// 7. /sync from the token before this round: every event acknowledged in the round,
	//    and every acknowledged to-device message delivered exactly once.
	for _, c := range ct.clients {
		ct.checkSync(t, c, round)
	}
	for ci, c := range ct.clients {
		from := (ci + len(ct.clients) - 1) % len(ct.clients)
		for _, op := range ct.ops {
			if op.kind != opToDevice || op.client != from {
				continue
			}
			got := c.toDevice[op.marker]
			if (op.acked && got != 1) || got > 1 {
				t.Fatalf("to-device %s (acknowledged %v) delivered %d times", op.marker, op.acked, got)
			}
		}
	}

	// 8. The rooms are writable and their DAG is sane: a new event is the only forward
	//    extremity and has every acknowledged event of the room as an ancestor.
	for ri, room := range ct.rooms {
		out := ct.must(t, 200, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/after-"+fmt.Sprint(round),
			ct.clients[0].dev.token, map[string]any{"msgtype": "m.text", "body": "after restart"})
		newID, _ := out["event_id"].(string)
		ct.checkDAG(t, ctx, ri, room, newID)
	}
}

// retryInFlight retries, with the same transaction ID, every message and to-device
// request of the round whose answer the kill cut off.
func (ct *crashTest) retryInFlight(t *testing.T, round int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	n := 0
	for _, op := range ct.ops {
		if op.round != round || op.acked || (op.kind != opMessage && op.kind != opToDevice) {
			continue
		}
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, out, err := ct.do(context.Background(), op.method, op.path, ct.clients[op.client].dev.token, op.body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || status != http.StatusOK {
				failures = append(failures, fmt.Sprintf("retry of %s: %d %v %v", op.txn, status, out, err))
				return
			}
			op.acked, op.retried = true, true
			if op.kind == opMessage {
				op.eventID, _ = out["event_id"].(string)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests were in flight at the kill", n)
	if len(failures) > 0 {
		t.Fatalf("retrying in-flight transactions after the restart:\n%v", failures)
	}
	for ri, room := range ct.rooms {
		count := map[string]int{}
		for _, ev := range ct.history(t, room) {
			if m := markerOf(ev); m != "" {
				count[m]++
			}
		}
		for _, op := range ct.ops {
			if op.retried && op.round == round && op.kind == opMessage && op.room == ri && count[op.marker] != 1 {
				t.Errorf("in-flight message %s retried with its transaction ID after the restart: %d copies in the room", op.txn, count[op.marker])
			}
		}
	}
}

func markerOf(ev map[string]any) string {
	content, _ := ev["content"].(map[string]any)
	m, _ := content["crash_marker"].(string)
	return m
}

// history returns the whole room timeline, oldest first, through /messages.
func (ct *crashTest) history(t *testing.T, room string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	from := ""
	for page := 0; page < 1000; page++ {
		q := url.Values{"dir": {"b"}, "limit": {"500"}}
		if from != "" {
			q.Set("from", from)
		}
		out := ct.must(t, 200, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q.Encode(), ct.clients[0].dev.token, nil)
		chunk, _ := out["chunk"].([]any)
		for _, e := range chunk {
			if m, ok := e.(map[string]any); ok {
				evs = append(evs, m)
			}
		}
		end, _ := out["end"].(string)
		if len(chunk) == 0 || end == "" || end == from {
			break
		}
		from = end
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

func (ct *crashTest) checkHistory(t *testing.T, ri int, room string) {
	t.Helper()
	pos := map[string][]int{}
	ids := map[string]string{}
	for i, ev := range ct.history(t, room) {
		if m := markerOf(ev); m != "" {
			pos[m] = append(pos[m], i)
			ids[m], _ = ev["event_id"].(string)
		}
	}
	last := map[int]int{} // client -> position of its previous acknowledged event
	for _, op := range ct.ops {
		if op.room != ri || (op.kind != opMessage && op.kind != opState) {
			continue
		}
		p := pos[op.marker]
		switch {
		case !op.acked:
			if len(p) > 1 {
				t.Fatalf("request %s, in flight at a kill, is %d times in %s", op.marker, len(p), room)
			}
			continue
		case op.retried:
			// Counted by the retry sub-test; here it only has to be there.
			if len(p) == 0 {
				t.Fatalf("retried %s (%s) is missing from /messages of %s", op.marker, op.eventID, room)
			}
		case len(p) != 1 || ids[op.marker] != op.eventID:
			t.Fatalf("acknowledged %s (%s) is %d times in /messages of %s (event %s)", op.marker, op.eventID, len(p), room, ids[op.marker])
		}
		if prev, ok := last[op.client]; ok && p[0] <= prev {
			t.Fatalf("%s of client %d is at position %d in %s, before that client's earlier event at %d", op.marker, op.client, p[0], room, prev)
		}
		last[op.client] = p[0]
	}
}

// checkLatest checks a value overwritten by the matching operations: it must be the
// last acknowledged one, or a later one whose request was in flight at a kill.
func (ct *crashTest) checkLatest(t *testing.T, what, path, token string, match func(*crashOp) bool) {
	t.Helper()
	lastAcked := -1
	allowed := map[string]bool{}
	for _, op := range ct.ops {
		if match(op) && op.acked && op.seq > lastAcked {
			lastAcked = op.seq
		}
	}
	for _, op := range ct.ops {
		if match(op) && op.seq >= lastAcked && (op.seq == lastAcked || !op.acked) {
			allowed[op.marker] = true
		}
	}
	status, out, err := ct.do(context.Background(), "GET", path, token, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if status == http.StatusNotFound && lastAcked < 0 {
		return // never acknowledged, and nothing in flight arrived
	}
	if status != http.StatusOK {
		t.Fatalf("%s %s: %d %v (last acknowledged seq %d)", what, path, status, out, lastAcked)
	}
	if m, _ := out["crash_marker"].(string); !allowed[m] {
		t.Fatalf("%s %s is %v; want the last acknowledged value (seq %d) or a later one in flight", what, path, out, lastAcked)
	}
}

// syncToDevice syncs from since until no to-device messages are left, counting them,
// and returns the last token.
func (ct *crashTest) syncToDevice(t *testing.T, c *crashClient, since string) string {
	t.Helper()
	filter := `{"room":{"rooms":[]},"presence":{"types":[]},"account_data":{"types":[]}}`
	for i := 0; i < 100; i++ {
		q := url.Values{"timeout": {"0"}, "filter": {filter}}
		if since != "" {
			q.Set("since", since)
		}
		out := ct.must(t, 200, "GET", "/_matrix/client/v3/sync?"+q.Encode(), c.dev.token, nil)
		since, _ = out["next_batch"].(string)
		evs, _ := e2eGet(out, "to_device", "events").([]any)
		if len(evs) == 0 {
			return since
		}
		for _, e := range evs {
			if ev, ok := e.(map[string]any); ok && ev["type"] == "m.crash.todevice" {
				c.toDevice[markerOf(ev)]++
			}
		}
	}
	t.Fatalf("%s: to-device messages keep coming after 100 syncs", c.dev.userID)
	return ""
}

// checkSync checks an incremental /sync from the client's token before the round: both
// rooms, every event acknowledged in the round, then the to-device messages.
func (ct *crashTest) checkSync(t *testing.T, c *crashClient, round int) {
	t.Helper()
	filter := `{"room":{"timeline":{"limit":1000},"state":{"types":[]},"ephemeral":{"types":[]},"account_data":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}`
	q := url.Values{"timeout": {"0"}, "filter": {filter}, "since": {c.since}}
	out := ct.must(t, 200, "GET", "/_matrix/client/v3/sync?"+q.Encode(), c.dev.token, nil)
	for ri, room := range ct.rooms {
		tl, _ := e2eGet(out, "rooms", "join", room, "timeline").(map[string]any)
		if tl == nil {
			t.Fatalf("%s: /sync after the restart has no timeline for %s", c.dev.userID, room)
		}
		if tl["limited"] == true {
			t.Fatalf("%s: /sync timeline of %s is limited with a limit of 1000", c.dev.userID, room)
		}
		seen := map[string]bool{}
		evs, _ := tl["events"].([]any)
		for _, e := range evs {
			if ev, ok := e.(map[string]any); ok {
				seen[markerOf(ev)] = true
			}
		}
		for _, op := range ct.ops {
			if op.round == round && op.acked && op.room == ri && (op.kind == opMessage || op.kind == opState) && !seen[op.marker] {
				t.Fatalf("%s: /sync after the restart lacks acknowledged %s in %s", c.dev.userID, op.marker, room)
			}
		}
	}
	for _, e := range func() []any { evs, _ := e2eGet(out, "to_device", "events").([]any); return evs }() {
		if ev, ok := e.(map[string]any); ok && ev["type"] == "m.crash.todevice" {
			c.toDevice[markerOf(ev)]++
		}
	}
	next, _ := out["next_batch"].(string)
	c.since = ct.syncToDevice(t, c, next)
}

// checkDAG reads the room from the database: the new event must be the only forward
// extremity, and every acknowledged event of the room one of its ancestors.
func (ct *crashTest) checkDAG(t *testing.T, ctx context.Context, ri int, room, newID string) {
	t.Helper()
	var extremities string
	if err := ct.db.QueryRowContext(ctx, `SELECT extremities FROM rooms WHERE room_id = $1`, room).Scan(&extremities); err != nil {
		t.Fatalf("extremities of %s: %v", room, err)
	}
	var nids []int64
	if err := json.Unmarshal([]byte(extremities), &nids); err != nil {
		t.Fatalf("extremities of %s: %q: %v", room, extremities, err)
	}
	var extIDs []string
	for _, nid := range nids {
		var id string
		if err := ct.db.QueryRowContext(ctx, `SELECT event_id FROM room_events WHERE event_nid = $1`, nid).Scan(&id); err != nil {
			t.Fatalf("extremity %d of %s: %v", nid, room, err)
		}
		extIDs = append(extIDs, id)
	}
	if len(extIDs) != 1 || extIDs[0] != newID {
		t.Fatalf("forward extremities of %s after a new event %s: %v", room, newID, extIDs)
	}
	ancestors := map[string]bool{}
	queue := []string{newID}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		var raw string
		if err := ct.db.QueryRowContext(ctx, `SELECT json FROM room_events WHERE event_id = $1`, id).Scan(&raw); err != nil {
			t.Fatalf("event %s (an ancestor of %s): %v", id, newID, err)
		}
		var pdu struct {
			PrevEvents []string `json:"prev_events"`
		}
		if err := json.Unmarshal([]byte(raw), &pdu); err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		for _, p := range pdu.PrevEvents {
			if !ancestors[p] {
				ancestors[p] = true
				queue = append(queue, p)
			}
		}
	}
	var missing []string
	for _, op := range ct.ops {
		if op.acked && op.room == ri && (op.kind == opMessage || op.kind == opState) && !ancestors[op.eventID] {
			missing = append(missing, op.marker)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("acknowledged events of %s are not ancestors of the new event %s: %v", room, newID, missing)
	}
}
