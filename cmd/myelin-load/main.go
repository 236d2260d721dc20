// Command myelin-load drives any Matrix homeserver (Myelin, Synapse, Dendrite, ...)
// through the standard client-server API and reports throughput, latency
// percentiles, errors by kind and, with -pid, the server's CPU time and peak RSS.
//
//	myelin-load -hs http://127.0.0.1:8008 -scenario send -concurrency 10 -rooms 10 -messages 1000
//
// Scenarios: register, send, fanout, initial-sync, join-big-room, paginate, overload
// (a comma-separated list runs several against the same server). Users are created
// by open registration (m.login.dummy) or, with -shared-secret, by the
// Synapse-compatible /_synapse/admin/v1/register endpoint.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"
)

// config holds the flags.
type config struct {
	hs           string
	scenarios    []string
	sharedSecret string
	pid          int
	jsonOut      bool
	quiet        bool
	allowRemote  bool
	timeout      time.Duration

	users       int
	concurrency int
	rooms       int
	messages    int
	duration    time.Duration
	listeners   int
	events      int
	members     int
	page        int
	interval    time.Duration
	repeat      int
	drain       time.Duration
	baseline    time.Duration
}

// scenarioDefaults are the sizes used when a flag is not given, per scenario.
var scenarioDefaults = map[string]map[string]string{
	"register":      {"users": "100", "concurrency": "10"},
	"send":          {"concurrency": "10", "rooms": "10", "messages": "1000", "duration": "60s"},
	"fanout":        {"listeners": "50", "messages": "50", "interval": "200ms", "duration": "60s", "concurrency": "10"},
	"initial-sync":  {"rooms": "20", "events": "50", "concurrency": "4", "repeat": "3"},
	"join-big-room": {"members": "500", "users": "10", "concurrency": "10"},
	"paginate":      {"events": "1000", "page": "50", "concurrency": "4", "repeat": "1"},
	"overload":      {"users": "10", "interval": "1s", "concurrency": "16", "rooms": "1", "duration": "20s", "baseline": "10s"},
}

var allScenarios = []string{"register", "send", "fanout", "initial-sync", "join-big-room", "paginate", "overload"}

// benchScenarios are what "all" runs: the throughput scenarios, which want the server's
// rate limits off. overload wants them on, so it only runs when named.
var benchScenarios = allScenarios[:6]

// Result is one scenario's outcome; -json prints one per line.
type Result struct {
	Scenario   string         `json:"scenario"`
	Homeserver string         `json:"homeserver"`
	Started    time.Time      `json:"started"`
	Params     map[string]any `json:"params"`
	// SetupSeconds is the time spent creating users, rooms and events before the measured phase.
	SetupSeconds float64 `json:"setup_seconds"`
	// DurationSeconds is the wall time of the measured phase.
	DurationSeconds float64 `json:"duration_seconds"`
	// Ops counts measured operations (OK + Errors).
	Ops          int64             `json:"ops"`
	OK           int64             `json:"ok"`
	Errors       int64             `json:"errors"`
	ErrorsByKind map[string]int64  `json:"errors_by_kind"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// RateLimitedRetries counts 429 answers that were waited out and retried (setup included).
	RateLimitedRetries int64   `json:"rate_limited_retries"`
	ThroughputPerSec   float64 `json:"throughput_per_sec"`
	Latency            Latency `json:"latency"`
	Server             *Server `json:"server,omitempty"`
	// ClientCPUSeconds is this tool's own CPU time (user+system) over the measured
	// phase: on one machine it competes with the server for the cores.
	ClientCPUSeconds float64        `json:"client_cpu_seconds"`
	Extra            map[string]any `json:"extra,omitempty"`
	Interrupted      bool           `json:"interrupted,omitempty"`
	// Error is set when the scenario could not run (setup failed).
	Error string `json:"error,omitempty"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("myelin-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var scen string
	fs.StringVar(&cfg.hs, "hs", "http://127.0.0.1:8008", "homeserver client API base URL")
	fs.StringVar(&scen, "scenario", "", "scenario(s), comma-separated: "+strings.Join(allScenarios, ", ")+" or all (every one but overload)")
	fs.StringVar(&cfg.sharedSecret, "shared-secret", "", "register users through /_synapse/admin/v1/register with this secret instead of open registration")
	fs.IntVar(&cfg.pid, "pid", 0, "homeserver process id on this machine: report its CPU seconds and peak RSS")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print results as JSON, one object per scenario per line, on stdout")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no progress lines on stderr")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write this tool's own CPU profile to this file (it shares the cores with a local server)")
	fs.BoolVar(&cfg.allowRemote, "allow-remote", false, "allow a homeserver that is not on a loopback address")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "per-request timeout (long-polls add their own timeout)")
	fs.IntVar(&cfg.users, "users", 0, "register: users to register; join-big-room: users whose join is timed; overload: well-behaved users")
	fs.IntVar(&cfg.concurrency, "concurrency", 0, "concurrent clients (send: senders; overload: the abuser's parallel connections)")
	fs.IntVar(&cfg.rooms, "rooms", 0, "send, initial-sync, overload: rooms")
	fs.IntVar(&cfg.messages, "messages", 0, "send, fanout: messages to send in total")
	fs.DurationVar(&cfg.duration, "duration", 0, "send, fanout: stop sending after this long; overload: length of the flood")
	fs.IntVar(&cfg.listeners, "listeners", 0, "fanout: users long-polling /sync")
	fs.IntVar(&cfg.events, "events", 0, "initial-sync: events per room; paginate: events to page back through")
	fs.IntVar(&cfg.members, "members", 0, "join-big-room: members of the room before the timed joins")
	fs.IntVar(&cfg.page, "page", 0, "paginate: /messages page size")
	fs.DurationVar(&cfg.interval, "interval", 0, "fanout: pause between messages; overload: pause between a well-behaved user's messages")
	fs.IntVar(&cfg.repeat, "repeat", 0, "initial-sync, paginate: times to repeat the measured read")
	fs.DurationVar(&cfg.drain, "drain", 15*time.Second, "fanout: how long to wait for deliveries after the last send")
	fs.DurationVar(&cfg.baseline, "baseline", 0, "overload: how long the well-behaved users send alone before the flood (0: no baseline)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: myelin-load -hs URL -scenario NAME[,NAME...] [flags]\n\nDefaults per scenario when a size flag is not given:\n")
		for _, s := range allScenarios {
			keys := make([]string, 0, len(scenarioDefaults[s]))
			for k := range scenarioDefaults[s] {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, "-"+k+" "+scenarioDefaults[s][k])
			}
			fmt.Fprintf(stderr, "  %-14s %s\n", s, strings.Join(parts, " "))
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if scen == "" {
		fs.Usage()
		return 2
	}
	if scen == "all" {
		cfg.scenarios = benchScenarios
	} else {
		for _, s := range strings.Split(scen, ",") {
			s = strings.TrimSpace(s)
			if _, ok := scenarioDefaults[s]; !ok {
				fmt.Fprintf(stderr, "myelin-load: unknown scenario %q (want %s)\n", s, strings.Join(allScenarios, ", "))
				return 2
			}
			cfg.scenarios = append(cfg.scenarios, s)
		}
	}
	u, err := url.Parse(cfg.hs)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "myelin-load: -hs must be an http(s) URL, got %q\n", cfg.hs)
		return 2
	}
	if !cfg.allowRemote && !isLoopback(u.Hostname()) {
		fmt.Fprintf(stderr, "myelin-load: %s is not a loopback address; pass -allow-remote to load a remote server\n", u.Hostname())
		return 2
	}
	if cfg.pid != 0 {
		if _, err := procCPU(cfg.pid); err != nil {
			fmt.Fprintf(stderr, "myelin-load: -pid %d: %v\n", cfg.pid, err)
			return 2
		}
		if warn := checkListener(cfg.pid, u); warn != "" {
			fmt.Fprintf(stderr, "myelin-load: warning: %s\n", warn)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the process at once
	}()

	code := 0
	for _, s := range cfg.scenarios {
		if ctx.Err() != nil {
			break
		}
		applyDefaults(fs, set, s)
		res := runScenario(ctx, s, cfg, stderr)
		if cfg.jsonOut {
			line, _ := json.Marshal(res)
			fmt.Fprintln(stdout, string(line))
		} else {
			printText(stdout, res)
		}
		if res.Error != "" || res.Errors > 0 {
			code = 1
		}
	}
	if ctx.Err() != nil {
		return 130
	}
	return code
}

var sizeFlags = []string{"users", "concurrency", "rooms", "messages", "duration", "listeners", "events", "members", "page", "interval", "repeat", "baseline"}

// applyDefaults sets every size flag not given on the command line to the
// scenario's default (or zero when the scenario does not use it).
func applyDefaults(fs *flag.FlagSet, set map[string]bool, scenario string) {
	for _, name := range sizeFlags {
		if set[name] {
			continue
		}
		v, ok := scenarioDefaults[scenario][name]
		if !ok {
			v = "0"
		}
		_ = fs.Set(name, v)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func printText(w io.Writer, r *Result) {
	fmt.Fprintf(w, "== %s  %s\n", r.Scenario, r.Homeserver)
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, r.Params[k]))
	}
	fmt.Fprintf(w, "   params      %s\n", strings.Join(parts, " "))
	if r.Error != "" {
		fmt.Fprintf(w, "   FAILED      %s\n", r.Error)
	}
	fmt.Fprintf(w, "   setup       %.2fs\n", r.SetupSeconds)
	fmt.Fprintf(w, "   measured    %.2fs  ops %d  ok %d  errors %d  throughput %.1f/s\n",
		r.DurationSeconds, r.Ops, r.OK, r.Errors, r.ThroughputPerSec)
	l := r.Latency
	fmt.Fprintf(w, "   latency ms  p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  mean %.1f  (n=%d)\n", l.P50, l.P95, l.P99, l.Max, l.Mean, l.Count)
	if len(r.ErrorsByKind) > 0 {
		kinds := make([]string, 0, len(r.ErrorsByKind))
		for k := range r.ErrorsByKind {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "   error       %-40s %d  (%s)\n", k, r.ErrorsByKind[k], r.ErrorSamples[k])
		}
	}
	if r.RateLimitedRetries > 0 {
		fmt.Fprintf(w, "   429 retries %d\n", r.RateLimitedRetries)
	}
	if s := r.Server; s != nil {
		peak := "peak RSS"
		if s.PeakRSSSinceStart {
			peak = "peak RSS (since process start)"
		}
		fmt.Fprintf(w, "   server pid %d  CPU %.2fs (%.0f%%)  %s %.1f MiB  RSS %.1f MiB\n", s.PID, s.CPUSeconds, s.CPUPercent,
			peak, float64(s.PeakRSSBytes)/(1<<20), float64(s.RSSBytes)/(1<<20))
	}
	fmt.Fprintf(w, "   load tool   CPU %.2fs\n", r.ClientCPUSeconds)
	if len(r.Extra) > 0 {
		keys := make([]string, 0, len(r.Extra))
		for k := range r.Extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "per_listener" {
				continue // JSON only
			}
			v, _ := json.Marshal(r.Extra[k])
			fmt.Fprintf(w, "   %-11s %s\n", k, v)
		}
	}
	if r.Interrupted {
		fmt.Fprintf(w, "   INTERRUPTED (partial results)\n")
	}
}
