package federation

import (
	"strings"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	ok := []struct {
		in   string
		want XMatrix
	}{
		// The spec's example.
		{`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."`,
			XMatrix{"origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", "ABCDEF..."}},
		// Unquoted values, spaces after commas, case-insensitive scheme and names, unknown params.
		{`x-matrix Origin=a.test:8448, key=ed25519:k, sig=c2lnbmF0dXJl+/==, extra="x"`,
			XMatrix{"a.test:8448", "", "ed25519:k", "c2lnbmF0dXJl+/=="}},
		// Escapes in quoted strings; IPv6 literal origin.
		{`X-Matrix origin="[::1]:8448",key="ed25519:a\"b",sig="s\\"`,
			XMatrix{"[::1]:8448", "", `ed25519:a"b`, `s\`}},
	}
	for _, c := range ok {
		got, err := ParseXMatrix(c.in)
		if err != nil || got != c.want {
			t.Errorf("%s:\n got %+v %v\nwant %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		``,
		`Bearer abc`,
		`X-Matrix`,
		`X-Matrix origin="a.test",key="ed25519:k"`,                 // no sig
		`X-Matrix origin="a.test",key="ed25519:k",sig="x`,          // unterminated
		`X-Matrix origin="a.test",origin="b.test",key="k",sig="s"`, // repeated
		`X-Matrix origin="a.test" key="k",sig="s"`,                 // missing comma
		`X-Matrix origin=,key="k",sig="s"`,                         // empty token
		`X-Matrix origin="a` + "\x01" + `",key="k",sig="s"`,        // control character
		`X-Matrix =x,origin="a",key="k",sig="s"`,
	}
	for _, in := range bad {
		if x, err := ParseXMatrix(in); err == nil {
			t.Errorf("%q parsed as %+v", in, x)
		}
	}
}

// FuzzParseXMatrix checks the parser never panics, that what it accepts has the
// required fields, and that headers written the way gomatrixserverlib writes them
// parse back to the same values.
func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`, "a.test", "ed25519:k", "sig")
	f.Add(`X-Matrix origin=a.test,key=ed25519:k,sig=s`, "[::1]:8448", "ed25519:1", "AAAA+/")
	f.Fuzz(func(t *testing.T, header, origin, key, sig string) {
		if x, err := ParseXMatrix(header); err == nil {
			if x.Origin == "" || x.Key == "" || x.Sig == "" {
				t.Fatalf("accepted %q without required fields: %+v", header, x)
			}
		}
		if origin == "" || key == "" || sig == "" || !quotable(origin) || !quotable(key) || !quotable(sig) {
			return
		}
		h := `X-Matrix origin="` + origin + `",key="` + key + `",sig="` + sig + `",destination="dest.test"`
		x, err := ParseXMatrix(h)
		if err != nil {
			t.Fatalf("%q: %v", h, err)
		}
		if x.Origin != origin || x.Key != key || x.Sig != sig || x.Destination != "dest.test" {
			t.Fatalf("%q parsed as %+v", h, x)
		}
	})
}

// quotable: safe inside a quoted string without escaping (as gomatrixserverlib checks).
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return !strings.ContainsAny(s, "\x00")
}
