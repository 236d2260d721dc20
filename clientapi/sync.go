package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// maxSyncTimeout caps the long-poll timeout of /sync.
const maxSyncTimeout = 5 * time.Minute

// getSync serves GET /sync.
func (s *Server) getSync(r *http.Request) (any, error) {
	if s.sync == nil {
		return nil, httputil.Unrecognized("/sync is not available")
	}
	d := requestDevice(r)
	q := r.URL.Query()
	req := syncapi.Request{UserID: d.UserID, DeviceID: d.DeviceID, SetPresence: q.Get("set_presence")}
	switch req.SetPresence {
	case "", syncapi.PresenceOnline, syncapi.PresenceOffline, syncapi.PresenceUnavailable:
	default:
		return nil, httputil.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if v := q.Get("since"); v != "" {
		tok, err := syncapi.ParseToken(v)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid since token")
		}
		req.Since = &tok
	}
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("timeout must be a number of milliseconds")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, httputil.InvalidParam("full_state must be true or false")
	}
	switch q.Get("use_state_after") {
	case "", "false":
	case "true":
		req.UseStateAfter = true
	default:
		return nil, httputil.InvalidParam("use_state_after must be true or false")
	}
	f, err := s.syncFilter(r.Context(), d.UserID, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.Filter = f
	fmtr := s.formatter(d.UserID, d.DeviceID, f.Format())
	req.Format = func(ctx context.Context, evs []*roomserver.Event) ([]any, error) {
		if len(evs) == 0 {
			return []any{}, nil
		}
		out, err := fmtr.events(ctx, evs)
		if err != nil || len(f.EventFields) == 0 {
			return out, err
		}
		for i, ev := range out {
			if out[i], err = onlyFields(ev, f.EventFields); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return s.sync.Sync(r.Context(), req)
}

// filterCache keeps parsed /sync filters: a client sends the same filter (inline or by
// ID) with every request, and parsing it cost a sixth of a long-poll's CPU. Filters are
// immutable (a stored filter ID never changes) and /sync only reads them, so one parsed
// *filter.Filter is shared by every request that names it.
type filterCache struct {
	mu sync.Mutex
	m  map[string]*filter.Filter
}

// filterCacheMax bounds the cache (it is emptied when full); filterCacheMaxInline
// bounds the inline filters kept, so big one-off filters do not fill the memory.
const (
	filterCacheMax       = 10_000
	filterCacheMaxInline = 4096
)

func (c *filterCache) get(key string) *filter.Filter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *filterCache) put(key string, f *filter.Filter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= filterCacheMax {
		c.m = map[string]*filter.Filter{}
	}
	c.m[key] = f
}

// syncFilter resolves /sync's filter parameter: a filter ID or an inline JSON filter.
// The result is shared between requests: callers must not modify it.
func (s *Server) syncFilter(ctx context.Context, userID, param string) (*filter.Filter, error) {
	if param == "" {
		return filter.Default(), nil
	}
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		cacheable := len(param) <= filterCacheMaxInline
		if cacheable {
			if f := s.filters.get(param); f != nil {
				return f, nil
			}
		}
		f, err := filter.Parse([]byte(param))
		if err != nil {
			return nil, filterError(err)
		}
		if cacheable {
			s.filters.put(param, f)
		}
		return f, nil
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, httputil.InvalidParam("filter must be a filter ID or a JSON filter")
	}
	key := userID + "\x00" + strconv.FormatInt(id, 10)
	if f := s.filters.get(key); f != nil {
		return f, nil
	}
	raw, err := storage.GetFilter(ctx, s.db, userID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.InvalidParam("No such filter")
	}
	if err != nil {
		return nil, err
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, filterError(err)
	}
	s.filters.put(key, f)
	return f, nil
}

// onlyFields applies a filter's event_fields to a formatted event: only the listed
// dot-separated paths are kept ('\.' escapes a dot inside a key).
func onlyFields(ev any, fields []string) (any, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	var full map[string]any
	if err := json.Unmarshal(data, &full); err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, f := range fields {
		path := splitFieldPath(f)
		src, dst := full, out
		for i, key := range path {
			v, ok := src[key]
			if !ok {
				break
			}
			if i == len(path)-1 {
				dst[key] = v
				break
			}
			next, ok := v.(map[string]any)
			if !ok {
				break
			}
			sub, _ := dst[key].(map[string]any)
			if sub == nil {
				sub = map[string]any{}
				dst[key] = sub
			}
			src, dst = next, sub
		}
	}
	return out, nil
}

func splitFieldPath(f string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '\\' && i+1 < len(f) && f[i+1] == '.':
			cur.WriteByte('.')
			i++
		case f[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(f[i])
		}
	}
	return append(parts, cur.String())
}
