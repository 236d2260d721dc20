package federation

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// slowFetcher answers for the keys it holds after release is closed, counting calls.
type slowFetcher struct {
	calls   atomic.Int32
	release chan struct{}
	has     map[gomatrixserverlib.PublicKeyLookupRequest]bool
}

func (f *slowFetcher) FetcherName() string { return "slow" }

func (f *slowFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	f.calls.Add(1)
	<-f.release
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for req := range reqs {
		if f.has[req] {
			out[req] = gomatrixserverlib.PublicKeyLookupResult{ValidUntilTS: spec.AsTimestamp(time.Now().Add(time.Hour))}
		}
	}
	return out, nil
}

// Events arriving together all need the sender's key: callers that come while the fetch
// is in flight must get its answer, not an empty one (which failed their verification).
func TestThrottledFetcherSharesFetchInFlight(t *testing.T) {
	good := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "c.test", KeyID: "ed25519:a"}
	inner := &slowFetcher{release: make(chan struct{}), has: map[gomatrixserverlib.PublicKeyLookupRequest]bool{good: true}}
	f := newThrottledFetcher(inner, time.Minute)
	var wg sync.WaitGroup
	var got atomic.Int32
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{good: 0})
			if err == nil && len(res) == 1 {
				got.Add(1)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them queue behind the first fetch
	close(inner.release)
	wg.Wait()
	if got.Load() != 5 {
		t.Fatalf("%d of 5 concurrent callers got the key", got.Load())
	}
	if n := inner.calls.Load(); n != 1 {
		t.Fatalf("server asked %d times, want once", n)
	}

	// A key the server does not have is asked for once per interval, not per request.
	bad := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "c.test", KeyID: "ed25519:made-up"}
	for range 3 {
		if res, _ := f.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{bad: 0}); len(res) != 0 {
			t.Fatalf("made-up key answered: %v", res)
		}
	}
	if n := inner.calls.Load(); n != 2 {
		t.Fatalf("server asked %d times in all, want 2", n)
	}
	// Another server is not held back by c.test's miss.
	other := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "d.test", KeyID: "ed25519:a"}
	inner.has[other] = true
	if res, _ := f.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{other: 0}); len(res) != 1 {
		t.Fatalf("d.test's key: %v", res)
	}
}
