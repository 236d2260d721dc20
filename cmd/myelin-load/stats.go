package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// recorder collects latencies and errors of one measured phase.
type recorder struct {
	mu      sync.Mutex
	lat     []float64 // milliseconds
	errs    map[string]int64
	samples map[string]string // one error message per kind
	ok      atomic.Int64
	failed  atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{errs: map[string]int64{}, samples: map[string]string{}}
}

// observe records one operation that started at start; err nil means success.
// A cancelled context (Ctrl-C) is not counted at all.
func (r *recorder) observe(start time.Time, err error) {
	if err != nil {
		r.fail(err)
		return
	}
	r.latency(time.Since(start))
}

func (r *recorder) latency(d time.Duration) {
	r.ok.Add(1)
	r.mu.Lock()
	r.lat = append(r.lat, float64(d.Microseconds())/1000)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	kind := errKind(err)
	if kind == "" {
		return
	}
	r.failN(kind, err.Error(), 1)
}

func (r *recorder) failN(kind, msg string, n int64) {
	if n <= 0 {
		return
	}
	r.failed.Add(n)
	r.mu.Lock()
	r.errs[kind] += n
	if _, ok := r.samples[kind]; !ok {
		r.samples[kind] = msg
	}
	r.mu.Unlock()
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(vals []float64) Latency {
	if len(vals) == 0 {
		return Latency{}
	}
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Latency{Count: len(s), Mean: round3(sum / float64(len(s))), P50: round3(pct(s, 50)),
		P95: round3(pct(s, 95)), P99: round3(pct(s, 99)), Max: round3(s[len(s)-1])}
}

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func (r *recorder) snapshot() (Latency, map[string]int64, map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := map[string]int64{}
	for k, v := range r.errs {
		errs[k] = v
	}
	samples := map[string]string{}
	for k, v := range r.samples {
		samples[k] = v
	}
	return summarize(r.lat), errs, samples
}

// progress prints one line a second to stderr while a phase runs.
type progress struct {
	w     io.Writer
	quiet bool
}

// start reports phase progress: done() returns operations finished, errs() failures, total the goal (0 = unknown).
func (p *progress) start(ctx context.Context, scenario, phase string, total int64, done, errs func() int64) func() {
	if p.quiet {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	began := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d := done()
				goal := ""
				if total > 0 {
					goal = fmt.Sprintf("/%d", total)
				}
				fmt.Fprintf(p.w, "[%s %s] %s  done %d%s  errors %d  %d/s\n", scenario, phase,
					time.Since(began).Truncate(time.Second), d, goal, errs(), d-last)
				last = d
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// Server is what -pid reports about the homeserver process during the measured phase.
type Server struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is CPU seconds over wall seconds (100 = one core busy).
	CPUPercent   float64 `json:"cpu_percent"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	// PeakRSSSinceStart is true when VmHWM could not be reset, so the peak covers the whole process life.
	PeakRSSSinceStart bool  `json:"peak_rss_since_process_start"`
	RSSBytes          int64 `json:"rss_bytes"`
}

// procWatch measures a process through /proc: CPU (utime+stime) and VmHWM.
type procWatch struct {
	pid      int
	cpu0     float64
	t0       time.Time
	hwmReset bool
}

// clkTck is USER_HZ; 100 on every Linux architecture Go supports.
const clkTck = 100

func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(3) ... utime is field 14, stime field 15 (1-based over the whole line).
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return (ut + st) / clkTck, nil
}

func procMem(pid int) (hwm, rss int64, err error) {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		for _, want := range []string{"VmHWM:", "VmRSS:"} {
			if strings.HasPrefix(line, want) {
				f := strings.Fields(line[len(want):])
				if len(f) >= 1 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					if want == "VmHWM:" {
						hwm = kb * 1024
					} else {
						rss = kb * 1024
					}
				}
			}
		}
	}
	return hwm, rss, sc.Err()
}

// watchProc starts measuring pid (0 = no measurement). It tries to reset the
// peak RSS (writing 5 to clear_refs needs to own the process) so the peak covers the phase.
func watchProc(pid int) (*procWatch, error) {
	if pid <= 0 {
		return nil, nil
	}
	cpu, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	w := &procWatch{pid: pid, cpu0: cpu, t0: time.Now()}
	if os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil {
		w.hwmReset = true
	}
	return w, nil
}

func (w *procWatch) stop() *Server {
	if w == nil {
		return nil
	}
	wall := time.Since(w.t0).Seconds()
	cpu, err := procCPU(w.pid)
	if err != nil {
		return &Server{PID: w.pid}
	}
	hwm, rss, _ := procMem(w.pid)
	s := &Server{PID: w.pid, CPUSeconds: round3(cpu - w.cpu0), PeakRSSBytes: hwm, RSSBytes: rss, PeakRSSSinceStart: !w.hwmReset}
	if wall > 0 {
		s.CPUPercent = math.Round((cpu-w.cpu0)/wall*1000) / 10
	}
	return s
}

// checkListener warns when pid does not hold the listening socket of the
// homeserver URL's port (a pid for the wrong process measures the wrong thing).
// It stays silent when it cannot tell (another user's process, a proxy in front).
func checkListener(pid int, u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return ""
	}
	want := fmt.Sprintf("%04X", p)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is fields[1] (addr:port), st is fields[3] (0A = LISTEN), inode is fields[9].
			if len(fields) < 10 || fields[3] != "0A" {
				continue
			}
			if i := strings.LastIndexByte(fields[1], ':'); i >= 0 && fields[1][i+1:] == want {
				inodes[fields[9]] = true
			}
		}
	}
	if len(inodes) == 0 {
		return "" // nothing on this machine listens there (or it is behind NAT/containers)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return ""
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			return ""
		}
	}
	return fmt.Sprintf("process %d does not listen on port %s of %s; -pid should name the homeserver process", pid, port, u.Host)
}
