package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

var (
	loadToolOnce sync.Once
	loadToolPath string
	loadToolErr  error
)

// loadTool builds cmd/myelin-load once per test process.
func loadTool(t *testing.T) string {
	t.Helper()
	loadToolOnce.Do(func() {
		dir, err := os.MkdirTemp("", "myelin-load-bin-")
		if err != nil {
			loadToolErr = err
			return
		}
		loadToolPath = filepath.Join(dir, "myelin-load")
		cmd := exec.Command("go", "build", "-o", loadToolPath, "./cmd/myelin-load")
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			loadToolErr = err
			t.Logf("%s", out)
		}
	})
	if loadToolErr != nil {
		t.Fatal(loadToolErr)
	}
	return loadToolPath
}

// serverPID finds the myelin process started with this config file.
func serverPID(t *testing.T, configPath string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(configPath)) && !bytes.Contains(cmdline, []byte("myelin-load")) {
			return pid
		}
	}
	return 0
}

type loadResult struct {
	Scenario        string            `json:"scenario"`
	Ops             int64             `json:"ops"`
	OK              int64             `json:"ok"`
	Errors          int64             `json:"errors"`
	ErrorsByKind    map[string]int64  `json:"errors_by_kind"`
	ErrorSamples    map[string]string `json:"error_samples"`
	DurationSeconds float64           `json:"duration_seconds"`
	Throughput      float64           `json:"throughput_per_sec"`
	Latency         struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P95   float64 `json:"p95_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	} `json:"latency"`
	Server *struct {
		PID          int     `json:"pid"`
		CPUSeconds   float64 `json:"cpu_seconds"`
		PeakRSSBytes int64   `json:"peak_rss_bytes"`
	} `json:"server"`
	Extra map[string]any `json:"extra"`
	Error string         `json:"error"`
}

// runLoad runs the tool and decodes its one JSON result line.
func runLoad(t *testing.T, args ...string) loadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, loadTool(t), append([]string{"-json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Fatalf("myelin-load %v: want one JSON line, got %q (err %v)\nstderr:\n%s", args, stdout.String(), err, stderr.String())
	}
	var res loadResult
	if jerr := json.Unmarshal([]byte(lines[0]), &res); jerr != nil {
		t.Fatalf("bad JSON %q: %v", lines[0], jerr)
	}
	if err != nil || res.Error != "" || res.Errors != 0 || len(res.ErrorsByKind) != 0 {
		t.Fatalf("myelin-load %v: exit %v, error %q, errors %d %v\n%s\nstderr:\n%s", args, err, res.Error, res.Errors, res.ErrorsByKind, lines[0], stderr.String())
	}
	if res.Ops != res.OK || res.Latency.Count != int(res.OK) {
		t.Fatalf("ops %d, ok %d, latency count %d disagree: %s", res.Ops, res.OK, res.Latency.Count, lines[0])
	}
	if res.OK > 0 && (res.DurationSeconds <= 0 || res.Throughput <= 0 || res.Latency.P50 <= 0 ||
		res.Latency.P50 > res.Latency.P95 || res.Latency.P95 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max) {
		t.Fatalf("insane numbers: %s", lines[0])
	}
	if res.Server == nil || res.Server.PeakRSSBytes <= 0 || res.Server.CPUSeconds < 0 {
		t.Fatalf("no server CPU/RSS with -pid: %s", lines[0])
	}
	t.Logf("%s", lines[0])
	return res
}

func extraInt(t *testing.T, r loadResult, key string) int {
	t.Helper()
	v, ok := r.Extra[key].(float64)
	if !ok {
		t.Fatalf("%s: extra %q missing: %v", r.Scenario, key, r.Extra)
	}
	return int(v)
}

// TestLoadTool runs every myelin-load scenario with tiny sizes against a real server,
// so the load generator keeps working as the server changes.
func TestLoadTool(t *testing.T) {
	engines := []string{"sqlite"}
	if !testing.Short() {
		engines = append(engines, "postgres")
	}
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			s := harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
				cfg.Registration.SharedSecret = "load-test-secret"
			}})
			pid := serverPID(t, s.ConfigPath)
			if pid == 0 {
				t.Fatal("cannot find the server process")
			}
			base := []string{"-hs", s.URL, "-pid", strconv.Itoa(pid), "-timeout", "20s"}
			load := func(t *testing.T, args ...string) loadResult {
				return runLoad(t, append(append([]string{}, base...), args...)...)
			}
			t.Run("register", func(t *testing.T) {
				r := load(t, "-scenario", "register", "-users", "6", "-concurrency", "3")
				if r.OK != 6 {
					t.Fatalf("registered %d, want 6", r.OK)
				}
			})
			t.Run("register-shared-secret", func(t *testing.T) {
				r := load(t, "-scenario", "register", "-users", "3", "-concurrency", "2", "-shared-secret", "load-test-secret")
				if r.OK != 3 {
					t.Fatalf("registered %d, want 3", r.OK)
				}
			})
			t.Run("send", func(t *testing.T) {
				r := load(t, "-scenario", "send", "-concurrency", "3", "-rooms", "2", "-messages", "20", "-duration", "20s")
				if r.OK != 20 || extraInt(t, r, "messages_sent") != 20 {
					t.Fatalf("sent %d, want 20", r.OK)
				}
			})
			t.Run("fanout", func(t *testing.T) {
				r := load(t, "-scenario", "fanout", "-listeners", "3", "-messages", "5", "-interval", "20ms", "-drain", "10s")
				if extraInt(t, r, "sent") != 5 || extraInt(t, r, "delivered") != 15 || r.OK != 15 {
					t.Fatalf("fanout counts wrong: %+v", r)
				}
			})
			t.Run("initial-sync", func(t *testing.T) {
				r := load(t, "-scenario", "initial-sync", "-rooms", "3", "-events", "5", "-repeat", "2")
				if r.OK != 2 || extraInt(t, r, "rooms_in_sync") != 3 || extraInt(t, r, "bytes") <= 0 || extraInt(t, r, "timeline_events") < 3 {
					t.Fatalf("initial-sync counts wrong: %+v", r)
				}
			})
			t.Run("join-big-room", func(t *testing.T) {
				r := load(t, "-scenario", "join-big-room", "-members", "6", "-users", "3", "-concurrency", "3")
				if r.OK != 3 || extraInt(t, r, "joined_members") != 1+6+3 {
					t.Fatalf("join-big-room counts wrong: %+v", r)
				}
			})
			t.Run("paginate", func(t *testing.T) {
				r := load(t, "-scenario", "paginate", "-events", "30", "-page", "7")
				if extraInt(t, r, "events_seen") != 30 || extraInt(t, r, "pages") < 5 || r.OK != int64(extraInt(t, r, "pages")) {
					t.Fatalf("paginate counts wrong: %+v", r)
				}
			})
		})
	}
}
