package test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

func TestCheckConfigListsEveryProblem(t *testing.T) {
	bin := harness.Binary(t)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("server_name: 'not a name'\nregistration:\n  mode: maybe\nlogging:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check-config", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("check-config on a bad file: err=%v\n%s", err, out)
	}
	for _, key := range []string{"server_name:", "registration.mode:", "logging.level:", "3 problem"} {
		if !strings.Contains(string(out), key) {
			t.Errorf("output does not mention %q:\n%s", key, out)
		}
	}

	good := filepath.Join(t.TempDir(), "good.yaml")
	gen, err := exec.Command(bin, "generate-config", "--server-name", "example.org").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, gen, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check-config", "--config", good).CombinedOutput(); err != nil {
		t.Fatalf("generated config fails check-config: %v\n%s", err, out)
	}
	cfg, err := config.Load(good)
	if err != nil || cfg.ServerName != "example.org" {
		t.Fatalf("generated config: %+v %v", cfg, err)
	}

	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	_ = os.WriteFile(unknown, []byte("sever_name: typo\n"), 0o600)
	out, err = exec.Command(bin, "check-config", "--config", unknown).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "sever_name") {
		t.Fatalf("unknown key not reported: %v\n%s", err, out)
	}
}

// TestFirstStartCreatesEverything starts myelin with only flags in an empty directory, as a
// new operator would, and checks it writes its config, key and database, then stops on SIGTERM.
func TestFirstStartCreatesEverything(t *testing.T) {
	bin := harness.Binary(t)
	dir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(bin, "--data-dir", dir, "--listen", "127.0.0.1:0", "--server-name", "first.test")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	sc := bufio.NewScanner(stderr)
	listening := false
	var logs strings.Builder
	for sc.Scan() {
		logs.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=listening") {
			listening = true
			break
		}
	}
	if !listening {
		t.Fatalf("never listened:\n%s", logs.String())
	}
	for _, f := range []string{"myelin.yaml", "signing.key", "myelin.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not created: %v", f, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "signing.key")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("signing key mode %v, want 0600", st.Mode().Perm())
	}
	cfg, err := config.Load(filepath.Join(dir, "myelin.yaml"))
	if err != nil || cfg.ServerName != "first.test" {
		t.Fatalf("written config: %+v %v", cfg, err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unclean exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit within 10s of SIGTERM")
	}
}

func TestVersionCommand(t *testing.T) {
	out, err := exec.Command(harness.Binary(t), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "myelin ") {
		t.Fatalf("version: %q %v", out, err)
	}
}
