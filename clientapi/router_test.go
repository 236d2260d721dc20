package clientapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/myelin-chat/myelin/config"
)

// The client API's router must answer every request the way gorilla/mux configured
// as before (SkipClean, UseEncodedPath, Methods) did: same route, same variables,
// 405 for a known path with another method, 404 for an unknown path.
func TestPathRouterMatchesGorillaMux(t *testing.T) {
	s := &Server{cfg: config.Default()}
	type hit struct {
		name string
		vars map[string]string
	}
	var got hit
	mark := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = hit{name, mux.Vars(r)}
		})
	}
	gm := mux.NewRouter().SkipClean(true).UseEncodedPath()
	pr := newPathRouter()
	var templates []string
	for i, rt := range s.routes() {
		for _, p := range rt.prefixes {
			name := fmt.Sprintf("%d %s %s%s", i, rt.method, p, rt.path)
			gm.Handle(p+rt.path, mark(name)).Methods(rt.method)
			pr.handle(rt.method, p+rt.path, mark(name))
			templates = append(templates, p+rt.path)
		}
	}
	gm.NotFoundHandler = mark("404")
	gm.MethodNotAllowedHandler = mark("405")
	pr.notFound = mark("404")
	pr.methodNotAllowed = mark("405")

	// Paths made from every template with several values for the variables, and
	// variations: empty variable, extra or missing segment, trailing slash.
	values := []string{"x", "enabled", "actions", "!room:example.org", "%21room%3Aexample.org", "a%2Fb", "@u:h", "m.room.message", "$ev/+="}
	var paths []string
	for _, tpl := range templates {
		for _, v := range values {
			p := fillTemplate(tpl, v)
			paths = append(paths, p, p+"/", p+"/extra", strings.TrimSuffix(p, "/"+lastSegment(p)), fillTemplate(tpl, ""))
		}
	}
	paths = append(paths, "/", "", "/_matrix", "/_matrix/client/v3/", "/_matrix/client/v3/rooms//send/a/b", "//_matrix/client/v3/sync",
		"/_matrix/client/v3/SYNC", "/_matrix/client/v3/sync?x=1", "/_matrix/federation/v1/version", "/_matrix/key/v2/query")
	methods := []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPatch}
	n := 0
	for _, p := range paths {
		for _, m := range methods {
			req := httptest.NewRequest(m, "http://h"+ensureSlash(p), nil)
			got = hit{}
			gm.ServeHTTP(httptest.NewRecorder(), req)
			want := got
			got = hit{}
			pr.ServeHTTP(httptest.NewRecorder(), req)
			if want.name != got.name || (len(want.vars) > 0 || len(got.vars) > 0) && !reflect.DeepEqual(want.vars, got.vars) {
				t.Errorf("%s %s: gorilla/mux %q %v, router %q %v", m, p, want.name, want.vars, got.name, got.vars)
			}
			n++
		}
	}
	if n < 1000 {
		t.Fatalf("only %d requests compared", n)
	}
}

func fillTemplate(tpl, v string) string {
	segs := strings.Split(tpl, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = v
		}
	}
	return strings.Join(segs, "/")
}

func lastSegment(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func ensureSlash(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return "/" + p
}

// BenchmarkRouteSend measures finding the handler of PUT /send among all routes.
func BenchmarkRouteSend(b *testing.B) {
	s := &Server{cfg: config.Default()}
	pr := newPathRouter()
	for _, rt := range s.routes() {
		for _, p := range rt.prefixes {
			pr.handle(rt.method, p+rt.path, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		}
	}
	pr.notFound, pr.methodNotAllowed = http.NotFoundHandler(), http.NotFoundHandler()
	req := httptest.NewRequest(http.MethodPut, "http://h/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/txn123", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		pr.ServeHTTP(w, req)
	}
}
