package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/roomserver"
)

// syncGet performs GET /sync and returns the body size and the decoded response.
func syncGet(b testing.TB, c *http.Client, base, token string, q url.Values) (int, *mautrix.RespSync) {
	req, _ := http.NewRequest("GET", base+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("sync: %d %v %s", resp.StatusCode, err, data)
	}
	var out mautrix.RespSync
	if err := json.Unmarshal(data, &out); err != nil {
		b.Fatal(err)
	}
	return len(data), &out
}

// syncGetLight performs GET /sync and returns next_batch and the raw body, decoding
// nothing else (the listeners of the latency benchmark share the CPU with the server).
func syncGetLight(b testing.TB, c *http.Client, base, token string, q url.Values) (string, []byte) {
	req, _ := http.NewRequest("GET", base+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("sync: %d %v %s", resp.StatusCode, err, data)
	}
	i := bytes.Index(data, []byte(`"next_batch":"`))
	if i < 0 {
		b.Fatalf("no next_batch in %s", data)
	}
	rest := data[i+len(`"next_batch":"`):]
	return string(rest[:bytes.IndexByte(rest, '"')]), data
}

// BenchmarkSyncInitial200Rooms: initial /sync of a user in 200 rooms of 50 messages each
// (default filter: 10 timeline events per room). Reports response bytes.
func BenchmarkSyncInitial200Rooms(b *testing.B) {
	e := startSyncEnv(b, "sqlite")
	alice := e.register("alice")
	for r := 0; r < 200; r++ {
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat", Name: fmt.Sprintf("room %d", r)})
		for i := 0; i < 50; i++ {
			e.send(alice, roomID, fmt.Sprintf("message %d in room %d", i, r))
		}
	}
	c := &http.Client{}
	var size int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, resp := syncGet(b, c, e.hs.URL, alice.AccessToken, url.Values{"set_presence": {"offline"}})
		if len(resp.Rooms.Join) != 200 {
			b.Fatalf("%d rooms", len(resp.Rooms.Join))
		}
		size = n
	}
	b.ReportMetric(float64(size), "resp_bytes")
}

// BenchmarkSyncIncrementalNoNews: incremental /sync (timeout 0) with nothing new, for a
// user in 200 rooms.
func BenchmarkSyncIncrementalNoNews(b *testing.B) {
	e := startSyncEnv(b, "sqlite")
	alice := e.register("alice")
	for r := 0; r < 200; r++ {
		roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "private_chat"})
		e.send(alice, roomID, "hello")
	}
	c := &http.Client{}
	_, first := syncGet(b, c, e.hs.URL, alice.AccessToken, url.Values{"set_presence": {"offline"}})
	q := url.Values{"since": {first.NextBatch}, "timeout": {"0"}, "set_presence": {"offline"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, resp := syncGet(b, c, e.hs.URL, alice.AccessToken, q)
		if len(resp.Rooms.Join) != 0 {
			b.Fatal("news in an idle sync")
		}
	}
}

// BenchmarkSyncDeliveryLatency: 500 users long-poll /sync in one room; each iteration
// sends a message and measures, per listener, the time from the send to the arrival of
// the response carrying it. Reports p50 and p99 over every delivery.
func BenchmarkSyncDeliveryLatency(b *testing.B) {
	const listeners = 500
	e := startSyncEnv(b, "sqlite")
	alice := e.register("sender")
	roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
	type listener struct {
		cli   *mautrix.Client
		since string
	}
	ls := make([]*listener, listeners)
	transport := &http.Transport{MaxIdleConnsPerHost: listeners * 2, MaxConnsPerHost: 0}
	hc := &http.Client{Transport: transport}
	for i := range ls {
		cli := e.register(fmt.Sprintf("listener%03d", i))
		cli.Client = hc
		e.membership("join", cli, nil, roomID)
		ls[i] = &listener{cli: cli}
	}
	for _, l := range ls {
		_, r := syncGet(b, hc, e.hs.URL, l.cli.AccessToken, url.Values{"set_presence": {"offline"}, "filter": {`{"room":{"timeline":{"limit":1}}}`}})
		l.since = r.NextBatch
	}
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ready, done sync.WaitGroup
		ready.Add(listeners)
		done.Add(listeners)
		var sent time.Time
		var sentMu sync.RWMutex
		sentMu.Lock()
		for _, l := range ls {
			go func(l *listener) {
				defer done.Done()
				q := url.Values{"since": {l.since}, "timeout": {"30000"}, "set_presence": {"offline"}}
				ready.Done()
				next, body := syncGetLight(b, hc, e.hs.URL, l.cli.AccessToken, q)
				at := time.Now()
				if !bytes.Contains(body, []byte(roomID)) {
					b.Errorf("listener woke without the message")
					return
				}
				l.since = next
				sentMu.RLock()
				d := at.Sub(sent)
				sentMu.RUnlock()
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}(l)
		}
		ready.Wait()
		time.Sleep(300 * time.Millisecond) // let every long-poll reach the server and park
		sent = time.Now()
		sentMu.Unlock()
		if _, err := e.srv.Rooms.SendEvent(context.Background(), roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID.String(),
			Type: event.EventMessage.Type, Content: map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)}}); err != nil {
			b.Fatal(err)
		}
		done.Wait()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

// nullWriter is an http.ResponseWriter that keeps only the status and the body size:
// the fanout benchmark measures the server's handler, not a client.
type nullWriter struct {
	h      http.Header
	status int
	body   []byte
}

func (w *nullWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}
func (w *nullWriter) WriteHeader(s int) { w.status = s }
func (w *nullWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// BenchmarkSyncFanoutWake: N users (SYNC_FANOUT_LISTENERS, default 200) long-poll
// /sync in one room with the load tool's fanout filter; each iteration parks every
// long-poll, sends one message and waits until every listener has its answer. The
// requests go straight to the client API handler (no sockets, no client decoding), so
// the numbers are the server's: cpu-µs/delivery (process CPU from getrusage over the
// iteration, the send and its push evaluation included) and allocs/delivery. A whole
// delivery is counted: request parsing, authentication, filter, the quiet check,
// waiting, the wake-up, the answer and its encoding.
func BenchmarkSyncFanoutWake(b *testing.B) {
	n := 200
	if v := os.Getenv("SYNC_FANOUT_LISTENERS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	e := startSyncEnv(b, "sqlite")
	alice := e.register("sender")
	roomID := e.createRoom(alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
	h := e.srv.Client.Handler()
	filter := inlineFilter(map[string]any{
		"room": map[string]any{"rooms": []string{roomID},
			"timeline":  map[string]any{"limit": 100, "types": []string{"m.room.message"}},
			"state":     map[string]any{"types": []string{}},
			"ephemeral": map[string]any{"types": []string{}}},
		"presence": map[string]any{"types": []string{}}, "account_data": map[string]any{"types": []string{}}})
	get := func(token, since string, timeout int) *nullWriter {
		q := url.Values{"filter": {filter}, "timeout": {strconv.Itoa(timeout)}}
		if since != "" {
			q.Set("since", since)
		}
		req := httptest.NewRequest("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		w := &nullWriter{}
		h.ServeHTTP(w, req)
		return w
	}
	nextBatch := func(w *nullWriter) string { // without decoding the body: only the server's CPU should count
		i := bytes.Index(w.body, []byte(`"next_batch":"`))
		if w.status != 200 || i < 0 {
			b.Fatalf("sync: %d %s", w.status, w.body)
		}
		rest := w.body[i+len(`"next_batch":"`):]
		return string(rest[:bytes.IndexByte(rest, '"')])
	}
	tokens := make([]string, n)
	since := make([]string, n)
	for i := range tokens {
		cli := e.register(fmt.Sprintf("listener%03d", i))
		e.membership("join", cli, nil, roomID)
		tokens[i] = cli.AccessToken
	}
	for i := range tokens {
		since[i] = nextBatch(get(tokens[i], "", 0))
	}
	var cpu time.Duration
	var allocs, bytesOut uint64
	var ms runtime.MemStats
	if f := os.Getenv("SYNC_FANOUT_CPUPROFILE"); f != "" { // the measured loop only, not the setup
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		_ = pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		runtime.ReadMemStats(&ms)
		a0 := ms.Mallocs
		c0 := processCPU()
		parked := e.srv.Sync.FastPathStats().Quiet
		var done sync.WaitGroup
		done.Add(n)
		for i := range tokens {
			go func() {
				defer done.Done()
				w := get(tokens[i], since[i], 30000)
				if !bytes.Contains(w.body, []byte(fmt.Sprintf(`"body":"m%d"`, it))) {
					b.Errorf("listener %d woke without message %d: %s", i, it, w.body)
					return
				}
				since[i] = nextBatch(w)
				atomic.AddUint64(&bytesOut, uint64(len(w.body)))
			}()
		}
		for e.srv.Sync.FastPathStats().Quiet < parked+int64(n) {
			time.Sleep(time.Millisecond)
		}
		if _, err := e.srv.Rooms.SendEvent(context.Background(), roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID.String(),
			Type: event.EventMessage.Type, Content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("m%d", it)}}); err != nil {
			b.Fatal(err)
		}
		done.Wait()
		cpu += processCPU() - c0
		runtime.ReadMemStats(&ms)
		allocs += ms.Mallocs - a0
	}
	b.StopTimer()
	b.Logf("fast path: %+v", e.srv.Sync.FastPathStats())
	d := float64(b.N * n)
	b.ReportMetric(float64(cpu.Microseconds())/d, "cpu-µs/delivery")
	b.ReportMetric(float64(allocs)/d, "allocs/delivery")
	b.ReportMetric(float64(bytesOut)/d, "B-body/delivery")
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
