package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// overload: -users well-behaved users each send a message every -interval; first
// alone for -baseline, then for -duration while one abusive user floods sends from
// -concurrency connections without ever waiting. The server's rate limits should be on.
// The measured numbers (latency, errors, throughput) are the well-behaved users' during
// the flood; the baseline and the abuser's answers (how many were 429 M_LIMIT_EXCEEDED,
// with which retry_after_ms) go into the extras. Any error of a well-behaved user,
// a 429 included, counts as an error: the point is that they keep working.
func (e *env) overload() error {
	cfg := e.cfg
	if cfg.users < 1 || cfg.concurrency < 1 || cfg.rooms < 1 || cfg.interval <= 0 || cfg.duration <= 0 {
		return fmt.Errorf("-users, -concurrency and -rooms must be at least 1, -interval and -duration positive")
	}
	owners, err := e.registerUsers("o", 1)
	if err != nil {
		return err
	}
	normal, err := e.registerUsers("n", cfg.users)
	if err != nil {
		return err
	}
	abusers, err := e.registerUsers("a", 1)
	if err != nil {
		return err
	}
	rooms, err := e.createRooms(owners[0], cfg.rooms)
	if err != nil {
		return err
	}
	if err := e.joinAll(append(append([]*user{}, normal...), abusers...), rooms); err != nil {
		return err
	}
	// Let the setup's own requests (joins, registrations) fall out of the buckets.
	select {
	case <-e.ctx.Done():
		return nil
	case <-time.After(2 * time.Second):
	}

	var seq atomic.Int64
	// wellBehaved sends every interval (each user from a random phase) until ctx ends.
	wellBehaved := func(ctx context.Context, rec *recorder) {
		var wg sync.WaitGroup
		for i, u := range normal {
			wg.Add(1)
			go func() {
				defer wg.Done()
				phase := time.Duration(rand.Int63n(int64(cfg.interval)))
				t := time.NewTimer(phase)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
					t.Reset(cfg.interval)
					start := time.Now()
					err := e.c.sendOnce(ctx, u, rooms[i%len(rooms)], seq.Add(1))
					if ctx.Err() != nil {
						return // cut off by the end of the phase: not counted
					}
					rec.observe(start, err)
				}
			}()
		}
		wg.Wait()
	}

	if cfg.baseline > 0 {
		base := newRecorder()
		w, err := watchProc(cfg.pid)
		if err != nil {
			return fmt.Errorf("-pid %d: %w", cfg.pid, err)
		}
		ctx, cancel := context.WithTimeout(e.ctx, cfg.baseline)
		stop := e.prog.start(e.ctx, e.name, "baseline", 0, base.ok.Load, base.failed.Load)
		t0 := time.Now()
		wellBehaved(ctx, base)
		cancel()
		stop()
		lat, errs, _ := base.snapshot()
		secs := time.Since(t0).Seconds()
		e.extra("baseline", map[string]any{
			"seconds": round3(secs), "ok": base.ok.Load(), "errors": base.failed.Load(), "errors_by_kind": errs,
			"throughput_per_sec": round3(float64(base.ok.Load()) / secs), "latency": lat, "server": w.stop(),
		})
	}

	if err := e.measure(); err != nil {
		return err
	}
	var (
		requests, accepted, limited, noRetryAfter atomic.Int64
		amu                                       sync.Mutex
		retryAfter                                []float64
		other                                     = map[string]int64{}
	)
	ctx, cancel := context.WithTimeout(e.ctx, cfg.duration)
	defer cancel()
	stop := e.progress("flood", 0)
	var wg sync.WaitGroup
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := w; ctx.Err() == nil; r += cfg.concurrency {
				err := e.c.sendOnce(ctx, abusers[0], rooms[r%len(rooms)], seq.Add(1))
				if ctx.Err() != nil {
					return
				}
				requests.Add(1)
				var ae *apiError
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && ae.Body["errcode"] == "M_LIMIT_EXCEEDED":
					limited.Add(1)
					ms, ok := ae.Body["retry_after_ms"].(float64)
					amu.Lock()
					if ok && ms > 0 {
						retryAfter = append(retryAfter, ms)
					} else {
						noRetryAfter.Add(1)
					}
					amu.Unlock()
				default:
					amu.Lock()
					other[errKind(err)]++
					amu.Unlock()
				}
			}
		}()
	}
	wellBehaved(ctx, e.rec)
	wg.Wait()
	stop()
	e.measured()

	secs := e.res.DurationSeconds
	n := requests.Load()
	ab := map[string]any{
		"requests": n, "accepted": accepted.Load(), "limited_429": limited.Load(),
		"limited_without_retry_after_ms": noRetryAfter.Load(), "other_errors": other,
		"requests_per_sec": round3(float64(n) / secs), "accepted_per_sec": round3(float64(accepted.Load()) / secs),
	}
	if n > 0 {
		ab["limited_fraction"] = round3(float64(limited.Load()) / float64(n))
	}
	if len(retryAfter) > 0 {
		sort.Float64s(retryAfter)
		ab["retry_after_ms"] = map[string]float64{"min": retryAfter[0], "median": pct(retryAfter, 50), "max": retryAfter[len(retryAfter)-1]}
	}
	e.extra("abuser", ab)
	if ops := e.rec.ok.Load() + e.rec.failed.Load(); ops > 0 {
		e.extra("error_rate", round3(float64(e.rec.failed.Load())/float64(ops)))
	}
	if e.ctx.Err() == nil && limited.Load() == 0 {
		e.extra("warning", "the abuser was never rate limited: are the server's rate limits on?")
	}
	return nil
}
