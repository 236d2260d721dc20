package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const reg1 = `id: one
hs_token: h1
as_token: a1
url: 'http://localhost:9000'
sender_localpart: bot
de.sorunome.msc2409.push_ephemeral: false
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:example\.org'
`

func TestParseAndNamespaces(t *testing.T) {
	reg, err := Parse([]byte(reg1))
	if err != nil {
		t.Fatal(err)
	}
	const hs = "example.org"
	for user, want := range map[string]bool{
		"@bot:example.org":          true,  // the sender
		"@irc_joe:example.org":      true,  // namespaced
		"@joe:example.org":          false, // outside
		"@irc_joe:example.org.evil": false, // the regex covers the whole ID
		"x@irc_joe:example.org":     false,
	} {
		if got := reg.OwnsUser(user, hs); got != want {
			t.Errorf("OwnsUser(%s) = %v, want %v", user, got, want)
		}
	}
	if !reg.Limited() {
		t.Error("rate_limited absent: requests must be limited")
	}
}

func TestParseRejectsBadRegistrations(t *testing.T) {
	for name, yaml := range map[string]string{
		"no as_token": strings.Replace(reg1, "as_token: a1\n", "", 1),
		"no hs_token": strings.Replace(reg1, "hs_token: h1\n", "", 1),
		"no sender":   strings.Replace(reg1, "sender_localpart: bot\n", "", 1),
		"no id":       strings.Replace(reg1, "id: one\n", "", 1),
		"bad regex":   strings.Replace(reg1, `'@irc_.*:example\.org'`, `'@irc_(:'`, 1),
		"not yaml":    "id: [",
	} {
		if _, err := Parse([]byte(yaml)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestLoadAndLookup(t *testing.T) {
	dir := t.TempDir()
	reg2 := strings.NewReplacer("id: one", "id: two", "as_token: a1", "as_token: a2", "hs_token: h1", "hs_token: h2").Replace(reg1)
	for name, data := range map[string]string{"one.yaml": reg1, "two.yaml": reg2} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Load([]string{filepath.Join(dir, "*.yaml"), filepath.Join(dir, "one.yaml"), filepath.Join(dir, "none", "*.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 2 {
		t.Fatalf("loaded %d registrations, want 2 (each file once)", r.Len())
	}
	if got := r.ByToken("a2"); got == nil || got.ID != "two" {
		t.Fatalf("ByToken(a2) = %v", got)
	}
	for _, tok := range []string{"", "a", "a1x", "h1"} {
		if r.ByToken(tok) != nil {
			t.Errorf("ByToken(%q) matched; only as_tokens authenticate", tok)
		}
	}
	if r.ExclusiveOwner("@irc_x:example.org") == nil || r.ExclusiveOwner("@x:example.org") != nil {
		t.Error("ExclusiveOwner wrong")
	}

	// Two registrations with one as_token cannot be told apart: refused.
	dup := strings.Replace(reg2, "as_token: a2", "as_token: a1", 1)
	if err := os.WriteFile(filepath.Join(dir, "two.yaml"), []byte(dup), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{filepath.Join(dir, "*.yaml")}); err == nil {
		t.Fatal("duplicate as_token accepted")
	}
	var nilReg *Registry
	if nilReg.ByToken("a1") != nil || nilReg.Len() != 0 {
		t.Fatal("nil registry must be empty")
	}
}
