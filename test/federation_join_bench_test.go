package test

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/test/harness"
)

// BenchmarkFederationJoinBigRoom measures how long a user of server B takes to join a
// public room of server A that has FED_JOIN_MEMBERS (default 2,000) members: make_join,
// send_join (A computes the state and auth chain), B's checks of every event and its
// import of the room. Run with -benchtime=1x; each iteration is one join on a fresh B.
func BenchmarkFederationJoinBigRoom(b *testing.B) {
	members := 2000
	if v, err := strconv.Atoi(os.Getenv("FED_JOIN_MEMBERS")); err == nil && v > 0 {
		members = v
	}
	a := harness.Start(b, harness.Options{Federation: true, NameFromFederationAddr: true})
	code, reg := a.Do(b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "owner", "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"}})
	if code != 200 {
		b.Fatalf("register: %d %v", code, reg)
	}
	owner := reg["access_token"].(string)
	code, created := a.Do(b, "POST", "/_matrix/client/v3/createRoom", owner, map[string]any{"preset": "public_chat"})
	if code != 200 {
		b.Fatalf("createRoom: %d %v", code, created)
	}
	roomID := created["room_id"].(string)
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				code, reg := a.Do(b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": fmt.Sprintf("m%d", i), "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"}})
				if code != 200 {
					errs <- fmt.Sprintf("register m%d: %d %v", i, code, reg)
					return
				}
				if code, body := a.Do(b, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", reg["access_token"].(string), map[string]any{}); code != 200 {
					errs <- fmt.Sprintf("join m%d: %d %v", i, code, body)
					return
				}
			}
		}()
	}
	for i := range members {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for e := range errs {
		b.Fatal(e)
	}
	b.ResetTimer()
	var total time.Duration
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		bs := harness.Start(b, harness.Options{Federation: true, NameFromFederationAddr: true})
		code, reg := bs.Do(b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "joiner", "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"}})
		if code != 200 {
			b.Fatalf("register on B: %d %v", code, reg)
		}
		token := reg["access_token"].(string)
		b.StartTimer()
		start := time.Now()
		code, body := bs.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(a.ServerName), token, map[string]any{})
		total += time.Since(start)
		b.StopTimer()
		if code != 200 {
			b.Fatalf("remote join: %d %v", code, body)
		}
		code, jm := bs.Do(b, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", token, nil)
		if joined, _ := jm["joined"].(map[string]any); code != 200 || len(joined) != members+2 {
			b.Fatalf("joined members on B: %d, %d members", code, len(joined))
		}
		// The servers' own breakdown (send_join on A; join and import on B).
		for _, line := range strings.Split(a.Logs()+bs.Logs(), "\n") {
			if strings.Contains(line, `"remote join"`) || strings.Contains(line, `"joined remote room"`) {
				b.Log(line)
			}
		}
		bs.Stop()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/join")
}
