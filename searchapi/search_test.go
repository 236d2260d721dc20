package searchapi

import (
	"reflect"
	"testing"
)

// Terms must split like the engines' tokenizers, so a term with punctuation still
// matches, and must never pass FTS or tsquery operators through.
func TestTerms(t *testing.T) {
	for in, want := range map[string][]string{
		"Hello, World":        {"hello", "world"},
		`"quoted" OR -x* a:b`: {"quoted", "or", "x", "a", "b"},
		"message 4 message":   {"message", "4"},
		"  ":                  {},
		"Ünïcödé straße 東京":   {"ünïcödé", "straße", "東京"},
	} {
		if got := Terms(in); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("Terms(%q) = %q, want %q", in, got, want)
		}
	}
}

// A message mostly made of the terms outranks a long one mentioning them once.
func TestScore(t *testing.T) {
	short := score([]string{"banana"}, "banana bananas")
	long := score([]string{"banana"}, "a long message that mentions a banana once among many other words")
	if short <= long {
		t.Fatalf("short %v <= long %v", short, long)
	}
	if s := score([]string{"kiwi"}, "banana"); s != 0 {
		t.Fatalf("no match scored %v", s)
	}
}
