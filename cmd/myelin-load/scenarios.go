package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// env is the state of one scenario run.
type env struct {
	ctx   context.Context
	c     *client
	cfg   config
	res   *Result
	rec   *recorder
	prog  *progress
	name  string
	t0    time.Time
	m0    time.Time
	cpu0  float64 // the tool's own CPU seconds at the start of the measured phase
	watch *procWatch
	// perListener is set by fanout for the JSON output.
	perListener []Latency
}

func runScenario(ctx context.Context, name string, cfg config, stderr io.Writer) *Result {
	conns := max(cfg.concurrency, cfg.listeners) + 4
	e := &env{
		ctx:  ctx,
		c:    newClient(cfg.hs, cfg.sharedSecret, conns, cfg.timeout),
		cfg:  cfg,
		rec:  newRecorder(),
		prog: &progress{w: stderr, quiet: cfg.quiet},
		name: name,
		t0:   time.Now(),
	}
	e.res = &Result{Scenario: name, Homeserver: cfg.hs, Started: e.t0.UTC(), Params: params(name, cfg), ErrorsByKind: map[string]int64{}}
	var err error
	switch name {
	case "register":
		err = e.register()
	case "send":
		err = e.send()
	case "fanout":
		err = e.fanout()
	case "initial-sync":
		err = e.initialSync()
	case "join-big-room":
		err = e.joinBigRoom()
	case "paginate":
		err = e.paginate()
	case "overload":
		err = e.overload()
	}
	r := e.res
	if e.m0.IsZero() {
		r.SetupSeconds = round3(time.Since(e.t0).Seconds())
	}
	lat, errs, samples := e.rec.snapshot()
	r.Latency, r.ErrorsByKind = lat, errs
	if len(samples) > 0 {
		r.ErrorSamples = samples
	}
	r.OK, r.Errors = e.rec.ok.Load(), e.rec.failed.Load()
	r.Ops = r.OK + r.Errors
	if r.DurationSeconds > 0 && r.ThroughputPerSec == 0 {
		r.ThroughputPerSec = round3(float64(r.OK) / r.DurationSeconds)
	}
	r.RateLimitedRetries = e.c.rateLimited.Load()
	if len(e.perListener) > 0 {
		if r.Extra == nil {
			r.Extra = map[string]any{}
		}
		r.Extra["per_listener"] = e.perListener
	}
	if ctx.Err() != nil {
		r.Interrupted = true
	} else if err != nil {
		r.Error = err.Error()
	}
	return r
}

func params(name string, cfg config) map[string]any {
	p := map[string]any{}
	for k := range scenarioDefaults[name] {
		switch k {
		case "users":
			p[k] = cfg.users
		case "concurrency":
			p[k] = cfg.concurrency
		case "rooms":
			p[k] = cfg.rooms
		case "messages":
			p[k] = cfg.messages
		case "duration":
			p[k] = cfg.duration.String()
		case "listeners":
			p[k] = cfg.listeners
		case "events":
			p[k] = cfg.events
		case "members":
			p[k] = cfg.members
		case "page":
			p[k] = cfg.page
		case "interval":
			p[k] = cfg.interval.String()
		case "repeat":
			p[k] = cfg.repeat
		case "baseline":
			p[k] = cfg.baseline.String()
		}
	}
	if cfg.sharedSecret != "" {
		p["registration"] = "shared-secret"
	} else {
		p["registration"] = "open"
	}
	return p
}

// measure ends the setup phase and starts the measured one.
func (e *env) measure() error {
	e.m0 = time.Now()
	e.cpu0 = selfCPU()
	e.res.SetupSeconds = round3(e.m0.Sub(e.t0).Seconds())
	w, err := watchProc(e.cfg.pid)
	if err != nil {
		return fmt.Errorf("-pid %d: %w", e.cfg.pid, err)
	}
	e.watch = w
	return nil
}

// measured ends the measured phase.
func (e *env) measured() {
	e.res.DurationSeconds = round3(time.Since(e.m0).Seconds())
	e.res.ClientCPUSeconds = round3(selfCPU() - e.cpu0)
	e.res.Server = e.watch.stop()
}

// selfCPU is this process's CPU time (user+system) in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func (e *env) extra(k string, v any) {
	if e.res.Extra == nil {
		e.res.Extra = map[string]any{}
	}
	e.res.Extra[k] = v
}

// pool runs fn for i in [0,n) on conc workers. The first error stops it and is returned.
func pool(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	if n <= 0 {
		return ctx.Err()
	}
	conc = min(max(conc, 1), n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// --- setup helpers (errors abort the scenario) ---

func (e *env) registerUsers(role string, n int) ([]*user, error) {
	users := make([]*user, n)
	var done atomic.Int64
	stop := e.prog.start(e.ctx, e.name, "setup: register "+role, int64(n), done.Load, func() int64 { return 0 })
	defer stop()
	err := pool(e.ctx, n, e.cfg.concurrency, func(ctx context.Context, i int) error {
		u, err := e.c.register(ctx, e.c.localpart(role, i))
		if err != nil {
			return fmt.Errorf("register %s: %w", e.c.localpart(role, i), err)
		}
		users[i] = u
		done.Add(1)
		return nil
	})
	return users, err
}

func (e *env) createRooms(owner *user, n int) ([]string, error) {
	rooms := make([]string, n)
	err := pool(e.ctx, n, min(e.cfg.concurrency, 4), func(ctx context.Context, i int) error {
		id, err := e.c.createRoom(ctx, owner, fmt.Sprintf("myelin-load %s %d", e.c.runID, i))
		if err != nil {
			return fmt.Errorf("createRoom: %w", err)
		}
		rooms[i] = id
		return nil
	})
	return rooms, err
}

func (e *env) joinAll(users []*user, rooms []string) error {
	n := len(users) * len(rooms)
	var done atomic.Int64
	stop := e.prog.start(e.ctx, e.name, "setup: join", int64(n), done.Load, func() int64 { return 0 })
	defer stop()
	return pool(e.ctx, n, e.cfg.concurrency, func(ctx context.Context, i int) error {
		u, room := users[i/len(rooms)], rooms[i%len(rooms)]
		if err := e.c.join(ctx, u, room); err != nil {
			return fmt.Errorf("join %s to %s: %w", u.ID, room, err)
		}
		done.Add(1)
		return nil
	})
}

// fill sends perRoom messages into each room (rooms in parallel, messages in order).
func (e *env) fill(u *user, rooms []string, perRoom int) error {
	var done atomic.Int64
	stop := e.prog.start(e.ctx, e.name, "setup: send events", int64(len(rooms)*perRoom), done.Load, func() int64 { return 0 })
	defer stop()
	return pool(e.ctx, len(rooms)*perRoom, e.cfg.concurrency, func(ctx context.Context, i int) error {
		if _, err := e.c.send(ctx, u, rooms[i%len(rooms)], int64(i/len(rooms))); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		done.Add(1)
		return nil
	})
}

func (e *env) progress(phase string, total int64) func() {
	return e.prog.start(e.ctx, e.name, phase, total, e.rec.ok.Load, e.rec.failed.Load)
}

// --- scenarios ---

// register: N users registered by C concurrent clients.
func (e *env) register() error {
	if e.cfg.users < 1 {
		return fmt.Errorf("-users must be at least 1")
	}
	if err := e.measure(); err != nil {
		return err
	}
	stop := e.progress("register", int64(e.cfg.users))
	_ = pool(e.ctx, e.cfg.users, e.cfg.concurrency, func(ctx context.Context, i int) error {
		start := time.Now()
		_, err := e.c.register(ctx, e.c.localpart("r", i))
		e.rec.observe(start, err)
		return nil
	})
	stop()
	e.measured()
	return nil
}

// send: C senders, each joined to R rooms, send M messages in total round-robin over the rooms, for at most D.
func (e *env) send() error {
	cfg := e.cfg
	if cfg.concurrency < 1 || cfg.rooms < 1 || cfg.messages < 1 {
		return fmt.Errorf("-concurrency, -rooms and -messages must be at least 1")
	}
	owners, err := e.registerUsers("o", 1)
	if err != nil {
		return err
	}
	senders, err := e.registerUsers("s", cfg.concurrency)
	if err != nil {
		return err
	}
	rooms, err := e.createRooms(owners[0], cfg.rooms)
	if err != nil {
		return err
	}
	if err := e.joinAll(senders, rooms); err != nil {
		return err
	}
	if err := e.measure(); err != nil {
		return err
	}
	deadline := time.Now().Add(cfg.duration)
	var next atomic.Int64
	stop := e.progress("send", int64(cfg.messages))
	_ = pool(e.ctx, len(senders), len(senders), func(ctx context.Context, s int) error {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			i := next.Add(1) - 1
			if i >= int64(cfg.messages) {
				return nil
			}
			start := time.Now()
			_, err := e.c.send(ctx, senders[s], rooms[int(i)%len(rooms)], i)
			e.rec.observe(start, err)
		}
		return nil
	})
	stop()
	e.measured()
	e.extra("messages_sent", e.rec.ok.Load())
	return nil
}

// fanoutFilter keeps /sync to the messages of one room.
func fanoutFilter(roomID string, limit int) string {
	f := map[string]any{
		"room": map[string]any{
			"rooms":     []string{roomID},
			"timeline":  map[string]any{"limit": limit, "types": []string{"m.room.message"}},
			"state":     map[string]any{"types": []string{}},
			"ephemeral": map[string]any{"types": []string{}},
		},
		"presence":     map[string]any{"types": []string{}},
		"account_data": map[string]any{"types": []string{}},
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// fanout: K listeners long-poll /sync in one room while one sender sends M messages;
// latency is from the start of the send to the arrival of the sync answer at each listener.
func (e *env) fanout() error {
	cfg := e.cfg
	if cfg.listeners < 1 || cfg.messages < 1 {
		return fmt.Errorf("-listeners and -messages must be at least 1")
	}
	owners, err := e.registerUsers("o", 1)
	if err != nil {
		return err
	}
	sender := owners[0]
	listeners, err := e.registerUsers("l", cfg.listeners)
	if err != nil {
		return err
	}
	rooms, err := e.createRooms(sender, 1)
	if err != nil {
		return err
	}
	room := rooms[0]
	if err := e.joinAll(listeners, rooms); err != nil {
		return err
	}
	filter := fanoutFilter(room, 100)
	since := make([]string, len(listeners))
	if err := pool(e.ctx, len(listeners), cfg.concurrency, func(ctx context.Context, i int) error {
		resp, _, err := e.c.sync(ctx, listeners[i], "", filter, 0)
		if err != nil {
			return fmt.Errorf("initial sync: %w", err)
		}
		since[i] = resp.NextBatch
		return nil
	}); err != nil {
		return err
	}

	M := cfg.messages
	var mu sync.Mutex
	starts := make([]time.Time, M)
	var sent atomic.Int64
	sendDone := make(chan struct{})
	lctx, lcancel := context.WithCancel(e.ctx)
	defer lcancel()
	perLat := make([][]float64, len(listeners))
	got := make([]int, len(listeners))
	var delivered atomic.Int64
	var limited atomic.Int64

	if err := e.measure(); err != nil {
		return err
	}
	stop := e.prog.start(e.ctx, e.name, "fanout", int64(M*len(listeners)), delivered.Load, e.rec.failed.Load)
	var wg sync.WaitGroup
	for li := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]bool, M)
			tok := since[li]
			pc := newPollConn(e.c.hs)
			defer func() {
				if pc != nil && pc.conn != nil {
					_ = pc.conn.Close()
				}
			}()
			// Bounded: stops on cancel, when every message arrived, or after this many polls.
			for polls := 0; polls < 10*M+100 && lctx.Err() == nil; polls++ {
				resp, _, err := e.c.pollSync(lctx, pc, listeners[li], tok, filter, 30*time.Second)
				if err != nil {
					if lctx.Err() != nil {
						return
					}
					e.rec.failN("sync_"+errKind(err), err.Error(), 1)
					select {
					case <-lctx.Done():
						return
					case <-time.After(200 * time.Millisecond):
					}
					continue
				}
				tok = resp.NextBatch
				if resp.Rooms.Join[room].Timeline.Limited {
					limited.Add(1) // a gap: raise the filter limit or -interval
				}
				for _, ev := range resp.Rooms.Join[room].Timeline.Events {
					seq, ok := e.c.loadSeq(ev)
					if !ok || seq < 0 || seq >= int64(M) || seen[seq] {
						continue
					}
					seen[seq] = true
					mu.Lock()
					st := starts[seq]
					mu.Unlock()
					d := resp.arrived.Sub(st)
					e.rec.latency(d)
					perLat[li] = append(perLat[li], float64(d.Microseconds())/1000)
					got[li]++
					delivered.Add(1)
				}
				if got[li] >= M {
					return
				}
				select {
				case <-sendDone:
					if int64(got[li]) >= sent.Load() {
						return
					}
				default:
				}
			}
		}()
	}
	// Give the listeners a moment to have their long-polls in flight.
	select {
	case <-e.ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
	sendRec := newRecorder()
	deadline := time.Now().Add(cfg.duration)
	for i := 0; i < M && e.ctx.Err() == nil && time.Now().Before(deadline); i++ {
		mu.Lock()
		starts[i] = time.Now()
		mu.Unlock()
		_, err := e.c.send(e.ctx, sender, room, int64(i))
		sendRec.observe(starts[i], err)
		if err != nil {
			e.rec.failN("send_"+errKind(err), err.Error(), 1)
		} else {
			sent.Add(1)
		}
		if cfg.interval > 0 && i < M-1 {
			select {
			case <-e.ctx.Done():
			case <-time.After(cfg.interval):
			}
		}
	}
	close(sendDone)
	// Wait for the deliveries (bounded by -drain), then stop the listeners.
	waitc := make(chan struct{})
	go func() { wg.Wait(); close(waitc) }()
	select {
	case <-waitc:
	case <-time.After(cfg.drain):
		lcancel()
		<-waitc
	case <-e.ctx.Done():
		<-waitc
	}
	stop()
	e.measured()
	expected := sent.Load() * int64(len(listeners))
	if e.ctx.Err() == nil {
		e.rec.failN("not_delivered", fmt.Sprintf("listeners did not see these messages within -drain %s", cfg.drain), expected-delivered.Load())
	}
	e.res.ThroughputPerSec = round3(float64(delivered.Load()) / e.res.DurationSeconds)
	sl, _, _ := sendRec.snapshot()
	e.extra("sent", sent.Load())
	e.extra("expected_deliveries", expected)
	e.extra("delivered", delivered.Load())
	e.extra("send_latency", sl)
	e.extra("limited_syncs", limited.Load())
	var p50s, p99s []float64
	for _, l := range perLat {
		s := summarize(l)
		e.perListener = append(e.perListener, s)
		p50s = append(p50s, s.P50)
		p99s = append(p99s, s.P99)
	}
	sort.Float64s(p50s)
	sort.Float64s(p99s)
	e.extra("listener_p50_ms", map[string]float64{"min": p50s[0], "median": pct(p50s, 50), "max": p50s[len(p50s)-1]})
	e.extra("listener_p99_ms", map[string]float64{"min": p99s[0], "median": pct(p99s, 50), "max": p99s[len(p99s)-1]})
	return nil
}

// initialSync: a user in R rooms with E events each; time and bytes of an initial /sync.
func (e *env) initialSync() error {
	cfg := e.cfg
	if cfg.rooms < 1 || cfg.events < 0 || cfg.repeat < 1 {
		return fmt.Errorf("-rooms and -repeat must be at least 1")
	}
	us, err := e.registerUsers("u", 1)
	if err != nil {
		return err
	}
	u := us[0]
	rooms, err := e.createRooms(u, cfg.rooms)
	if err != nil {
		return err
	}
	if err := e.fill(u, rooms, cfg.events); err != nil {
		return err
	}
	if err := e.measure(); err != nil {
		return err
	}
	stop := e.progress("initial sync", int64(cfg.repeat))
	var sizes []int
	var first float64
	roomsSeen, timeline := 0, 0
	for i := 0; i < cfg.repeat && e.ctx.Err() == nil; i++ {
		start := time.Now()
		resp, n, err := e.c.sync(e.ctx, u, "", "", 0)
		e.rec.observe(start, err)
		if err != nil {
			continue
		}
		if i == 0 {
			first = round3(float64(time.Since(start).Microseconds()) / 1000)
		}
		sizes = append(sizes, n)
		roomsSeen, timeline = 0, 0
		for _, id := range rooms {
			if jr, ok := resp.Rooms.Join[id]; ok {
				roomsSeen++
				timeline += len(jr.Timeline.Events)
			}
		}
		if roomsSeen != len(rooms) {
			e.rec.failN("missing_rooms", fmt.Sprintf("initial sync listed %d of %d rooms", roomsSeen, len(rooms)), 1)
		}
	}
	stop()
	e.measured()
	if len(sizes) > 0 {
		e.extra("bytes", sizes[0])
		e.extra("first_sync_ms", first)
	}
	e.extra("rooms_in_sync", roomsSeen)
	e.extra("timeline_events", timeline)
	return nil
}

// joinBigRoom: a room with J members, then the time for N new users to join it.
func (e *env) joinBigRoom() error {
	cfg := e.cfg
	if cfg.members < 0 || cfg.users < 1 {
		return fmt.Errorf("-users must be at least 1")
	}
	owners, err := e.registerUsers("o", 1)
	if err != nil {
		return err
	}
	rooms, err := e.createRooms(owners[0], 1)
	if err != nil {
		return err
	}
	room := rooms[0]
	var done atomic.Int64
	stopSetup := e.prog.start(e.ctx, e.name, "setup: members", int64(cfg.members), done.Load, func() int64 { return 0 })
	err = pool(e.ctx, cfg.members, cfg.concurrency, func(ctx context.Context, i int) error {
		u, err := e.c.register(ctx, e.c.localpart("m", i))
		if err != nil {
			return fmt.Errorf("register member: %w", err)
		}
		if err := e.c.join(ctx, u, room); err != nil {
			return fmt.Errorf("join member: %w", err)
		}
		done.Add(1)
		return nil
	})
	stopSetup()
	if err != nil {
		return err
	}
	joiners, err := e.registerUsers("j", cfg.users)
	if err != nil {
		return err
	}
	if err := e.measure(); err != nil {
		return err
	}
	stop := e.progress("join", int64(cfg.users))
	_ = pool(e.ctx, len(joiners), cfg.concurrency, func(ctx context.Context, i int) error {
		start := time.Now()
		e.rec.observe(start, e.c.join(ctx, joiners[i], room))
		return nil
	})
	stop()
	e.measured()
	if e.ctx.Err() != nil {
		return nil
	}
	var jm struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	if _, err := e.c.do(e.ctx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", owners[0].Token, nil, &jm, 0); err != nil {
		return fmt.Errorf("joined_members: %w", err)
	}
	want := 1 + cfg.members + int(e.rec.ok.Load())
	e.extra("joined_members", len(jm.Joined))
	if len(jm.Joined) != want {
		e.rec.failN("member_count_mismatch", fmt.Sprintf("joined_members has %d, want %d", len(jm.Joined), want), 1)
	}
	return nil
}

// paginate: /messages backwards through E events, timing each page.
func (e *env) paginate() error {
	cfg := e.cfg
	if cfg.events < 1 || cfg.page < 1 || cfg.repeat < 1 {
		return fmt.Errorf("-events, -page and -repeat must be at least 1")
	}
	us, err := e.registerUsers("u", 1)
	if err != nil {
		return err
	}
	u := us[0]
	rooms, err := e.createRooms(u, 1)
	if err != nil {
		return err
	}
	room := rooms[0]
	if err := e.fill(u, rooms, cfg.events); err != nil {
		return err
	}
	resp, _, err := e.c.sync(e.ctx, u, "", fanoutFilter(room, 1), 0)
	if err != nil {
		return fmt.Errorf("sync for prev_batch: %w", err)
	}
	jr := resp.Rooms.Join[room]
	if jr.Timeline.PrevBatch == "" {
		return fmt.Errorf("sync gave no prev_batch for the room")
	}
	inSync := 0
	for _, ev := range jr.Timeline.Events {
		if _, ok := e.c.loadSeq(ev); ok {
			inSync++
		}
	}
	if err := e.measure(); err != nil {
		return err
	}
	maxPages := (cfg.events+cfg.page-1)/cfg.page*2 + 20
	stop := e.progress("paginate", int64(cfg.repeat*((cfg.events+cfg.page-1)/cfg.page+1)))
	pages, seen := 0, 0
	for r := 0; r < cfg.repeat && e.ctx.Err() == nil; r++ {
		from := jr.Timeline.PrevBatch
		seen, pages = inSync, 0
		for p := 0; p < maxPages && e.ctx.Err() == nil; p++ {
			start := time.Now()
			m, _, err := e.c.messages(e.ctx, u, room, from, cfg.page)
			e.rec.observe(start, err)
			if err != nil {
				break
			}
			pages++
			for _, ev := range m.Chunk {
				if _, ok := e.c.loadSeq(ev); ok {
					seen++
				}
			}
			if len(m.Chunk) == 0 || m.End == "" || m.End == from {
				break
			}
			from = m.End
		}
		if e.ctx.Err() == nil && seen != cfg.events {
			e.rec.failN("count_mismatch", fmt.Sprintf("paginated through %d of %d events", seen, cfg.events), 1)
		}
	}
	stop()
	e.measured()
	e.extra("pages", pages)
	e.extra("events_seen", seen)
	if e.res.DurationSeconds > 0 {
		e.extra("events_per_sec", round3(float64(seen*cfg.repeat)/e.res.DurationSeconds))
	}
	return nil
}
