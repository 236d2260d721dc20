package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/test/harness"
)

// runJS runs a scenario from test/js with Node against a server; the script exits
// non-zero (with the failed assertion) when the server misbehaves.
func runJS(t *testing.T, script string, args ...string) {
	t.Helper()
	dir := filepath.Join(harness.RepoRoot(), "test", "js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		t.Fatalf("matrix-js-sdk is not installed: run `cd test/js && npm ci` (the README's test command does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	t.Logf("%s", out)
}

func TestJSClientAccounts(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		runJS(t, "accounts.mjs", s.URL)
	})
}
