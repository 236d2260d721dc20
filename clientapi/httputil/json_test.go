package httputil

import (
	"errors"
	"testing"
)

func TestUnmarshalBodyErrorCodes(t *testing.T) {
	for body, want := range map[string]string{
		`not JSON {`:           "M_NOT_JSON",
		"{\"x\":\"\xff\"}":     "M_NOT_JSON",
		`"eyJib2R5IjoxfQ=="`:   "M_BAD_JSON", // a JSON string (Complement's TestJson sends these)
		`[1,2]`:                "M_BAD_JSON",
		`42`:                   "M_BAD_JSON",
		`{"n":"not a number"}`: "M_BAD_JSON",
		`{"n":1}`:              "",
		``:                     "",
	} {
		var v struct {
			N int `json:"n"`
		}
		err := UnmarshalBody([]byte(body), &v)
		var me *Error
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", body, err)
		case want != "" && (!errors.As(err, &me) || me.Code != want):
			t.Errorf("%q: got %v, want %s", body, err, want)
		}
	}
}
