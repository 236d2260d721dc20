package federation

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
)

func TestJoinCandidates(t *testing.T) {
	m := &Memberships{s: &Server{cfg: &config.Config{ServerName: "us.example"}}}
	got := m.candidates("!room:creator.example", nil, "inviter.example", "")
	want := []spec.ServerName{"inviter.example", "creator.example"}
	if !slices.Equal(got, want) {
		t.Fatalf("candidates: %v, want %v", got, want)
	}
	// Servers the client names are the ones to use: the room ID's server is not added
	// (a join through a server that cannot authorise it must fail, not go elsewhere).
	got = m.candidates("!room:creator.example", []string{"via.example", "us.example", "via.example"}, "inviter.example", "")
	want = []spec.ServerName{"via.example", "inviter.example"}
	if !slices.Equal(got, want) {
		t.Fatalf("candidates with via: %v, want %v", got, want)
	}
	// Naming only ourselves names nothing.
	got = m.candidates("!room:creator.example", []string{"us.example"})
	if want = []spec.ServerName{"creator.example"}; !slices.Equal(got, want) {
		t.Fatalf("candidates with via us: %v, want %v", got, want)
	}
	// Room IDs without a server (room version 12) add nothing.
	if got := m.candidates("!abcdef", nil); len(got) != 0 {
		t.Fatalf("candidates of a domainless room ID: %v", got)
	}
}

func TestRemoteError(t *testing.T) {
	forbidden := gomatrix.HTTPError{Code: 403, Contents: []byte(`{"errcode":"M_FORBIDDEN","error":"You are banned"}`)}
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"matrix error", forbidden, 403, "M_FORBIDDEN"},
		{"wrapped in a federation error", &gomatrixserverlib.FederationError{Err: errors.Join(errors.New("make_join"), forbidden)}, 403, "M_FORBIDDEN"},
		{"server error", gomatrix.HTTPError{Code: 500, Contents: []byte(`{"errcode":"M_UNKNOWN","error":"boom"}`)}, 502, "M_UNKNOWN"},
		{"unreachable", errors.New("connection refused"), 502, "M_UNKNOWN"},
	} {
		var he *httputil.Error
		if err := remoteError("remote.example", c.err); !errors.As(err, &he) || he.Status != c.status || he.Code != c.code {
			t.Errorf("%s: %v, want %d %s", c.name, err, c.status, c.code)
		}
	}
}

func TestPrevEventIDs(t *testing.T) {
	for _, c := range []struct {
		name, json string
		want       []string
	}{
		{"event IDs", `{"prev_events":["$a","$b"]}`, []string{"$a", "$b"}},
		{"room versions 1 and 2", `{"prev_events":[["$a:x",{"sha256":"h"}],["$b:x",{"sha256":"h"}]]}`, []string{"$a:x", "$b:x"}},
		{"garbage", `{"prev_events":[1,[],[2],{}]}`, nil},
		{"none", `{}`, nil},
	} {
		var res fclient.RespMakeJoin
		if err := json.Unmarshal([]byte(`{"room_version":"11","event":`+c.json+`}`), &res); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := prevEventIDs(res.JoinEvent.PrevEvents); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
