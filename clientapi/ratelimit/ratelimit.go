// Package ratelimit limits request rates per client with token buckets.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter keeps one token bucket per key (user ID, or IP for anonymous requests).
type Limiter struct {
	perSecond rate.Limit
	burst     int
	exempt    map[string]bool

	mu      sync.Mutex
	buckets map[string]*bucket
	lastGC  time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter allowing perSecond requests sustained and burst at once per key.
// Keys in exempt are never limited.
func New(perSecond float64, burst int, exempt []string) *Limiter {
	ex := make(map[string]bool, len(exempt))
	for _, k := range exempt {
		ex[k] = true
	}
	return &Limiter{perSecond: rate.Limit(perSecond), burst: burst, exempt: ex, buckets: map[string]*bucket{}, lastGC: time.Now()}
}

// Allow takes one request from key's bucket. When the bucket is empty it returns
// false and how long the client should wait before retrying.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil || l.exempt[key] {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.perSecond, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	l.gcLocked(now)
	l.mu.Unlock()
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// gcLocked forgets buckets idle long enough to have refilled, so memory stays bounded.
func (l *Limiter) gcLocked(now time.Time) {
	if now.Sub(l.lastGC) < time.Minute {
		return
	}
	l.lastGC = now
	idle := time.Duration(float64(l.burst)/float64(l.perSecond)*float64(time.Second)) + time.Minute
	for k, b := range l.buckets {
		if now.Sub(b.seen) > idle {
			delete(l.buckets, k)
		}
	}
}
