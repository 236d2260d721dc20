package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// getNotifications serves GET /notifications: the events that notified the user,
// newest first, with their actions and whether they were read.
func (s *Server) getNotifications(r *http.Request) (any, error) {
	d := requestDevice(r)
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("limit must be a non-negative integer")
		}
		limit = n
	}
	only := q.Get("only")
	page, err := s.push.Notifications(r.Context(), d.UserID, q.Get("from"), limit, only == "highlight")
	if err != nil {
		return nil, pushError(err)
	}
	f := s.formatter(d.UserID, d.DeviceID, filter.FormatClient)
	type notification struct {
		Actions    json.RawMessage `json:"actions"`
		Event      any             `json:"event"`
		ProfileTag string          `json:"profile_tag,omitempty"`
		Read       bool            `json:"read"`
		RoomID     string          `json:"room_id"`
		TS         int64           `json:"ts"`
	}
	evs := make([]*roomserver.Event, len(page.Notifications))
	for i, n := range page.Notifications {
		evs[i] = page.Events[n.EventID]
	}
	formatted, err := f.events(r.Context(), evs)
	if err != nil {
		return nil, err
	}
	out := make([]notification, 0, len(page.Notifications))
	for i, n := range page.Notifications {
		out = append(out, notification{Actions: n.Actions, Event: formatted[i], Read: n.Read, RoomID: n.RoomID, TS: n.TS})
	}
	res := map[string]any{"notifications": out}
	if page.Next != "" {
		res["next_token"] = page.Next
	}
	return res, nil
}
