package clientapi

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/gorilla/mux"
)

// pathRouter dispatches requests on route templates made of literal segments and
// {name} variables, with gorilla/mux's semantics for those (a variable matches one
// non-empty segment of the escaped path; the first route registered that matches
// path and method wins; 405 when only the method differs; 404 otherwise) and the
// variables readable with mux.Vars. gorilla/mux tries every route's regular
// expression in turn and escapes the path again for each: with ~300 routes that cost
// more server CPU than the rest of a PUT /send's HTTP handling. Here the path is split
// once and only the routes with as many segments are compared, by string equality.
type pathRouter struct {
	// byLen holds the routes by their number of segments, in registration order.
	byLen            map[int][]*pathRoute
	notFound         http.Handler
	methodNotAllowed http.Handler
}

// pathRoute is one method + template.
type pathRoute struct {
	method string
	// segs are the template's segments split on '/'; vars[i] is the variable name of
	// segment i, "" for a literal segment.
	segs []string
	vars []string
	// patterns[i] restricts variable i ({name:pattern}); nil when any segment goes.
	patterns []*regexp.Regexp
	h        http.Handler
}

func newPathRouter() *pathRouter {
	return &pathRouter{byLen: map[int][]*pathRoute{}}
}

// handle registers h for method and template (e.g. "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}").
// A variable may carry a pattern for its whole segment: {attr:enabled|actions}.
func (pr *pathRouter) handle(method, template string, h http.Handler) {
	segs := strings.Split(template, "/")
	rt := &pathRoute{method: method, segs: segs, vars: make([]string, len(segs)), patterns: make([]*regexp.Regexp, len(segs)), h: h}
	for i, s := range segs {
		if len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' {
			name, pattern, hasPattern := strings.Cut(s[1:len(s)-1], ":")
			rt.vars[i] = name
			if hasPattern {
				rt.patterns[i] = regexp.MustCompile("^(?:" + pattern + ")$")
			}
		}
	}
	pr.byLen[len(segs)] = append(pr.byLen[len(segs)], rt)
}

// match reports whether the request path's segments fit the template.
func (rt *pathRoute) match(segs []string) bool {
	for i, s := range segs {
		if rt.vars[i] != "" {
			if s == "" || rt.patterns[i] != nil && !rt.patterns[i].MatchString(s) {
				return false
			}
		} else if s != rt.segs[i] {
			return false
		}
	}
	return true
}

func (pr *pathRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(r.URL.EscapedPath(), "/")
	methodMismatch := false
	for _, rt := range pr.byLen[len(segs)] {
		if !rt.match(segs) {
			continue
		}
		if rt.method != r.Method {
			methodMismatch = true
			continue
		}
		vars := make(map[string]string, 4)
		for i, name := range rt.vars {
			if name != "" {
				vars[name] = segs[i]
			}
		}
		rt.h.ServeHTTP(w, mux.SetURLVars(r, vars))
		return
	}
	if methodMismatch {
		pr.methodNotAllowed.ServeHTTP(w, r)
		return
	}
	pr.notFound.ServeHTTP(w, r)
}
