package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
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
