// Package appservice loads application service registrations (the YAML files bridges and
// bots are registered with, in Synapse's format) and answers the questions the client API
// asks about them: which registration an access token belongs to, and which users a
// registration may act as.
//
// Only what the client API needs is here: as_token authentication of the sender user and
// masquerading as namespaced users (?user_id=). Pushing events to the application service
// (hs_token, transactions) is not done yet.
package appservice

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"gopkg.in/yaml.v3"
)

// Namespace is one regular expression of users, aliases or rooms an application service
// is interested in. Exclusive namespaces are reserved for it.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
	re        *regexp.Regexp
}

// Matches reports whether the whole of s matches the namespace's regex.
func (n *Namespace) Matches(s string) bool { return n.re != nil && n.re.MatchString(s) }

// Namespaces are the user, alias and room namespaces of a registration.
type Namespaces struct {
	Users   []Namespace `yaml:"users"`
	Aliases []Namespace `yaml:"aliases"`
	Rooms   []Namespace `yaml:"rooms"`
}

// Registration is one application service registration file. Unknown keys (vendor
// extensions such as de.sorunome.msc2409.push_ephemeral) are ignored.
type Registration struct {
	ID              string     `yaml:"id"`
	URL             string     `yaml:"url"`
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	RateLimited     *bool      `yaml:"rate_limited"`
	Namespaces      Namespaces `yaml:"namespaces"`
	// File is where the registration was loaded from (for error messages).
	File string `yaml:"-"`
}

// Parse decodes and validates one registration.
func Parse(data []byte) (*Registration, error) {
	var reg Registration
	if err := yaml.Unmarshal(data, &reg); err != nil {
		return nil, fmt.Errorf("parse registration: %w", err)
	}
	switch {
	case reg.ID == "":
		return nil, errors.New("registration has no id")
	case reg.ASToken == "":
		return nil, fmt.Errorf("registration %q has no as_token", reg.ID)
	case reg.HSToken == "":
		return nil, fmt.Errorf("registration %q has no hs_token", reg.ID)
	case reg.SenderLocalpart == "":
		return nil, fmt.Errorf("registration %q has no sender_localpart", reg.ID)
	}
	for _, list := range []struct {
		name string
		ns   []Namespace
	}{{"users", reg.Namespaces.Users}, {"aliases", reg.Namespaces.Aliases}, {"rooms", reg.Namespaces.Rooms}} {
		for i := range list.ns {
			// Anchored: a namespace covers whole IDs, not IDs that merely contain a match.
			re, err := regexp.Compile(`^(?:` + list.ns[i].Regex + `)$`)
			if err != nil {
				return nil, fmt.Errorf("registration %q: namespaces.%s[%d]: invalid regex %q: %w", reg.ID, list.name, i, list.ns[i].Regex, err)
			}
			list.ns[i].re = re
		}
	}
	return &reg, nil
}

// SenderID is the user ID of the application service's own user.
func (r *Registration) SenderID(serverName string) string {
	return "@" + r.SenderLocalpart + ":" + serverName
}

// OwnsUser reports whether the application service may act as userID: its sender user,
// or any user in its user namespaces.
func (r *Registration) OwnsUser(userID, serverName string) bool {
	if userID == r.SenderID(serverName) {
		return true
	}
	for i := range r.Namespaces.Users {
		if r.Namespaces.Users[i].Matches(userID) {
			return true
		}
	}
	return false
}

// Registry is the set of loaded registrations.
type Registry struct {
	regs []*Registration
}

// NewRegistry checks that ids and tokens are unique and returns the registry.
func NewRegistry(regs []*Registration) (*Registry, error) {
	ids, tokens := map[string]string{}, map[string]string{}
	for _, r := range regs {
		if other, ok := ids[r.ID]; ok {
			return nil, fmt.Errorf("application service id %q is registered twice (%s and %s)", r.ID, other, r.File)
		}
		if other, ok := tokens[r.ASToken]; ok {
			return nil, fmt.Errorf("application services %q and %q have the same as_token", other, r.ID)
		}
		ids[r.ID], tokens[r.ASToken] = r.File, r.ID
	}
	return &Registry{regs: regs}, nil
}

// Load reads every registration file matching the glob patterns (in order, each file
// once). A pattern that matches nothing is not an error: the directory may be empty.
func Load(patterns []string) (*Registry, error) {
	seen := map[string]bool{}
	var regs []*Registration
	for _, pat := range patterns {
		files, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("app service pattern %q: %w", pat, err)
		}
		sort.Strings(files)
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read app service registration: %w", err)
			}
			reg, err := Parse(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			reg.File = f
			regs = append(regs, reg)
		}
	}
	return NewRegistry(regs)
}

// Len is the number of registrations.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.regs)
}

// ByToken returns the registration whose as_token is token, or nil. Every registration is
// compared in constant time, so timing does not tell how much of a token was right.
func (r *Registry) ByToken(token string) *Registration {
	if r == nil || token == "" {
		return nil
	}
	var found *Registration
	for _, reg := range r.regs {
		if subtle.ConstantTimeCompare([]byte(reg.ASToken), []byte(token)) == 1 {
			found = reg
		}
	}
	return found
}

// ExclusiveOwner returns the registration that reserves userID in an exclusive
// namespace, or nil.
func (r *Registry) ExclusiveOwner(userID string) *Registration {
	if r == nil {
		return nil
	}
	for _, reg := range r.regs {
		for i := range reg.Namespaces.Users {
			if ns := &reg.Namespaces.Users[i]; ns.Exclusive && ns.Matches(userID) {
				return reg
			}
		}
	}
	return nil
}

// ByID returns the registration with the given id, or nil.
func (r *Registry) ByID(id string) *Registration {
	if r == nil {
		return nil
	}
	for _, reg := range r.regs {
		if reg.ID == id {
			return reg
		}
	}
	return nil
}

// Limited reports whether requests of the application service are rate limited
// (rate_limited defaults to true).
func (r *Registration) Limited() bool { return r.RateLimited == nil || *r.RateLimited }
