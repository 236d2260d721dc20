// Package harness starts real myelin server processes for end-to-end tests: the
// binary built from this repository, on free loopback ports, with a fresh SQLite
// directory or PostgreSQL schema each.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary builds cmd/myelin once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "myelin-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "myelin")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/myelin")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/myelin: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Options configure a test server.
type Options struct {
	// Engine is "sqlite" (default) or "postgres".
	Engine string
	// ServerName defaults to "hs1.test".
	ServerName string
	// Configure may adjust the generated configuration before it is written.
	Configure func(cfg *config.Config)
	// Args are extra command-line flags.
	Args []string
	// Federation serves the federation API over TLS with a certificate from TestCA.
	Federation bool
	// NameFromFederationAddr (with Federation) picks a free port for the federation
	// listener and names the server "127.0.0.1:<port>", so other servers reach it by name.
	NameFromFederationAddr bool
	// LoopbackHost (with NameFromFederationAddr) is the loopback address the federation
	// listener uses and the server is named after, "127.0.0.1" by default. Servers on
	// different hosts (127.0.0.2, ...) differ by more than their port, which server ACLs
	// ignore.
	LoopbackHost string
}

// Server is a running myelin process.
type Server struct {
	t   testing.TB
	URL string // client API base URL, e.g. http://127.0.0.1:41234
	// FederationURL is the federation API base URL (https), when Options.Federation is set.
	FederationURL string
	ServerName    string
	DataDir       string
	ConfigPath    string
	Engine        string
	args          []string
	federation    bool
	healedURL     string // FederationURL while partitioned

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan struct{}
}

// Start launches a server and waits until /_matrix/client/versions answers.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	if opts.Engine == "" {
		opts.Engine = "sqlite"
	}
	if opts.ServerName == "" {
		opts.ServerName = "hs1.test"
	}
	var fedAddr string
	if opts.Federation && opts.NameFromFederationAddr {
		fedAddr = freeAddrOn(t, opts.LoopbackHost)
		opts.ServerName = fedAddr
	}
	dataDir := t.TempDir()
	cfg := config.Default()
	cfg.ServerName = opts.ServerName
	cfg.DataDir = dataDir
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Database.DSN = storagetest.DSN(t, opts.Engine)
	cfg.Database.SQLiteSynchronous = "normal"
	cfg.Registration.Mode = config.RegistrationOpen
	cfg.Passwords.BcryptCost = 4
	cfg.RateLimits.Enabled = false
	cfg.Logging.Format = "json"
	cfg.Logging.Level = "info"
	if opts.Federation {
		ca := TestCA(t)
		host := "127.0.0.1"
		if opts.NameFromFederationAddr && opts.LoopbackHost != "" {
			host = opts.LoopbackHost
		}
		cfg.Listen.TLSCert, cfg.Listen.TLSKey = ca.Issue(t, dataDir, host)
		cfg.Listen.Federation = "127.0.0.1:0"
		cfg.Federation.Enabled = true
		cfg.Federation.CAFile = ca.Path
		cfg.Federation.AllowPrivateAddresses = true
		if fedAddr != "" {
			cfg.Listen.Federation = fedAddr
		}
	}
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	data, err := config.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dataDir, "myelin.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, ServerName: opts.ServerName, DataDir: dataDir, ConfigPath: cfgPath, Engine: opts.Engine,
		args: append([]string{"--config", cfgPath}, opts.Args...), federation: opts.Federation}
	s.launch(bin, s.args)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("server %s logs:\n%s", s.ServerName, s.Logs())
		}
	})
	return s
}

// launch starts the process and waits for readiness. A restart reuses the previous address.
func (s *Server) launch(bin string, args []string) {
	s.t.Helper()
	if s.URL != "" {
		args = append(append([]string{}, args...), "--listen", strings.TrimPrefix(s.URL, "http://"))
	}
	if s.FederationURL != "" {
		args = append(args, "--federation-listen", strings.TrimPrefix(s.FederationURL, "https://"))
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	logs := s.logs
	if logs == nil {
		logs = &bytes.Buffer{}
	} else {
		logs.WriteString("---- restart ----\n")
	}
	s.mu.Unlock()
	addrc := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			s.mu.Lock()
			logs.Write(line)
			logs.WriteByte('\n')
			s.mu.Unlock()
			var entry struct {
				Msg      string `json:"msg"`
				Listener string `json:"listener"`
				Addr     string `json:"addr"`
			}
			if json.Unmarshal(line, &entry) == nil && entry.Msg == "listening" {
				switch entry.Listener {
				case "client":
					select {
					case addrc <- entry.Addr:
					default:
					}
				case "federation":
					s.mu.Lock()
					s.FederationURL = "https://" + entry.Addr
					s.mu.Unlock()
				}
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.logs, s.done = cmd, logs, done
	s.mu.Unlock()
	select {
	case addr := <-addrc:
		s.URL = "http://" + addr
	case <-done:
		s.t.Fatalf("myelin exited before listening:\n%s", s.Logs())
	case <-time.After(60 * time.Second):
		s.t.Fatalf("myelin did not start listening within 60s:\n%s", s.Logs())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (!s.federation || s.federationURL() != "") {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("myelin not ready: %v\n%s", err, s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) federationURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.FederationURL
}

// Logs returns everything the server wrote to stderr so far (all its runs).
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// Stop sends SIGTERM and waits for a clean exit (SIGKILL after 15 s).
func (s *Server) Stop() {
	s.signal(syscall.SIGTERM, 15*time.Second)
}

// Kill sends SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL, 15*time.Second)
}

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the server cleanly and starts it again on the same address and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.launch(Binary(s.t), s.args)
}

// Partition restarts the server cut off from federation in both directions, as a
// network partition would: its federation listener moves to another port (other
// servers, reaching it by name, get connection refused) and its outgoing federation
// trusts only an unrelated CA (every TLS handshake to another server fails, so its
// transactions stay queued). Heal ends the partition.
func (s *Server) Partition() {
	s.t.Helper()
	ca, err := newCA("Myelin partition CA")
	if err != nil {
		s.t.Fatal(err)
	}
	s.Stop()
	s.mu.Lock()
	s.healedURL, s.FederationURL = s.FederationURL, ""
	s.mu.Unlock()
	s.launch(Binary(s.t), append(append([]string{}, s.args...), "--federation-listen", freeAddr(s.t), "--federation-ca", ca.Path))
}

// Heal restarts a partitioned server with its federation as before.
func (s *Server) Heal() {
	s.t.Helper()
	s.Stop()
	s.mu.Lock()
	s.FederationURL = s.healedURL
	s.mu.Unlock()
	s.launch(Binary(s.t), s.args)
}

// Exited reports whether the process has ended.
func (s *Server) Exited() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Do sends a request with an optional JSON body and access token and returns the status and decoded JSON body.
func (s *Server) Do(t testing.TB, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: status %d, body is not a JSON object: %q", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// ForEachEngine runs fn as a subtest on SQLite and on PostgreSQL.
func ForEachEngine(t *testing.T, fn func(t *testing.T, engine string)) {
	for _, e := range storagetest.Engines {
		t.Run(e, func(t *testing.T) {
			if e == "postgres" {
				storagetest.RequirePostgres(t)
			}
			fn(t, e)
		})
	}
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t testing.TB) string {
	t.Helper()
	return freeAddrOn(t, "")
}

// freeAddrOn returns host (a loopback address, 127.0.0.1 when empty) with a port free
// at the time of the call.
func freeAddrOn(t testing.TB, host string) string {
	t.Helper()
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
