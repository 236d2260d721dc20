package syncapi

import (
	"strings"
	"testing"
)

// FuzzParseToken checks sync tokens: parsing never panics, garbage is an error, an
// accepted token renders back to one that parses to the same Token, and every Token of
// non-negative positions round-trips through String.
func FuzzParseToken(f *testing.F) {
	f.Add("s0_0_0_0_0_0_0", int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("s1_2_3_4_5_6_7", int64(1), int64(2), int64(3), int64(1764100000000), int64(5), int64(6), int64(7))
	f.Add("s9223372036854775807_0_0_0_0_0_0", int64(9223372036854775807), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("s1_2_3", int64(-1), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("s1_2_3_4_5_6_-7", int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(-7))
	f.Add("s+1_2_3_4_5_6_07", int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("t1_2", int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("", int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, s string, a, b, c, d, e, g, h int64) {
		tok, err := ParseToken(s)
		if err == nil {
			for _, p := range tok.fields() {
				if *p < 0 {
					t.Fatalf("%q parsed to negative %+v", s, tok)
				}
			}
			again, err := ParseToken(tok.String())
			if err != nil || again != tok {
				t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, tok, tok.String(), again, err)
			}
		} else if !strings.HasPrefix(err.Error(), "invalid sync token") {
			t.Fatalf("%q: unexpected error %v", s, err)
		}
		want := Token{a, b, c, d, e, g, h}
		got, err := ParseToken(want.String())
		if a < 0 || b < 0 || c < 0 || d < 0 || e < 0 || g < 0 || h < 0 {
			if err == nil {
				t.Fatalf("negative %+v accepted as %+v", want, got)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("%+v -> %q -> %+v, %v", want, want.String(), got, err)
		}
	})
}
