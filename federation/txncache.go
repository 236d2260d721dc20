package federation

import (
	"sync"
	"time"
)

// txnCache remembers the answers to recent transactions by (origin, txnId), so a
// retransmitted transaction gets the same answer without being processed again.
type txnCache struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[string]txnEntry
}

type txnEntry struct {
	answer  any
	expires time.Time
}

func newTxnCache(ttl time.Duration, max int) *txnCache {
	return &txnCache{ttl: ttl, max: max, m: map[string]txnEntry{}}
}

func txnKey(origin, txnID string) string { return origin + "\x00" + txnID }

func (c *txnCache) get(origin, txnID string, now time.Time) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[txnKey(origin, txnID)]
	if !ok || now.After(e.expires) {
		return nil, false
	}
	return e.answer, true
}

func (c *txnCache) put(origin, txnID string, answer any, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m { // still full: drop arbitrary entries
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[txnKey(origin, txnID)] = txnEntry{answer: answer, expires: now.Add(c.ttl)}
}
