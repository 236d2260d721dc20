package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/searchapi"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         []string        `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      string          `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// maxSearchLimit caps results per page, and maxContextLimit events around each.
const (
	maxSearchLimit  = 100
	maxContextLimit = 20
)

// postSearch serves POST /search (room_events only, the one category the spec has).
func (s *Server) postSearch(r *http.Request) (any, error) {
	if s.search == nil {
		return nil, httputil.Unrecognized("Search is not enabled")
	}
	var req searchRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchCategories == nil {
		return nil, httputil.BadJSON("search_categories is required")
	}
	crit := req.SearchCategories.RoomEvents
	if crit == nil {
		return map[string]any{"search_categories": map[string]any{}}, nil
	}
	if crit.SearchTerm == nil {
		return nil, httputil.BadJSON("room_events.search_term is required")
	}
	for _, k := range crit.Keys {
		if k != searchapi.KeyBody && k != searchapi.KeyName && k != searchapi.KeyTopic {
			return nil, httputil.InvalidParam("unknown search key %q", k)
		}
	}
	order := crit.OrderBy
	switch order {
	case "":
		order = searchapi.OrderRank
	case searchapi.OrderRank, searchapi.OrderRecent:
	default:
		return nil, httputil.InvalidParam("order_by must be rank or recent")
	}
	var rf *filter.RoomEventFilter
	if len(crit.Filter) > 0 && string(crit.Filter) != "null" {
		var err error
		if rf, err = parseRoomEventFilter(string(crit.Filter)); err != nil {
			return nil, err
		}
	}
	d := requestDevice(r)
	sreq := searchapi.Request{UserID: d.UserID, Term: *crit.SearchTerm, Keys: crit.Keys, Order: order,
		Batch: r.URL.Query().Get("next_batch"), Limit: 10}
	if rf != nil {
		sreq.Rooms, sreq.NotRooms = rf.Rooms, rf.NotRooms
		if rf.Limit != nil {
			sreq.Limit = min(max(*rf.Limit, 1), maxSearchLimit)
		}
		sreq.Match = func(ev *roomserver.Event) bool {
			return rf.Matches(ev.RoomID().String(), ev.Type(), string(ev.SenderID()), hasURL(ev.Content()))
		}
	}
	res, err := s.search.Search(r.Context(), sreq)
	if errors.Is(err, searchapi.ErrBadBatch) {
		return nil, httputil.InvalidParam("invalid next_batch")
	}
	if err != nil {
		return nil, err
	}

	f := s.formatter(d.UserID, d.DeviceID, filter.FormatClient)
	if err := f.load(r.Context(), res.Events); err != nil {
		return nil, err
	}
	results := make([]any, 0, len(res.Events))
	for i, ev := range res.Events {
		item := map[string]any{"rank": res.Ranks[i], "result": f.event(ev, true)}
		if crit.EventContext != nil {
			before, after := 5, 5
			if crit.EventContext.BeforeLimit != nil {
				before = min(max(*crit.EventContext.BeforeLimit, 0), maxContextLimit)
			}
			if crit.EventContext.AfterLimit != nil {
				after = min(max(*crit.EventContext.AfterLimit, 0), maxContextLimit)
			}
			c, err := s.searchContext(r, f, ev, before, after, crit.EventContext.IncludeProfile)
			if err != nil {
				return nil, err
			}
			item["context"] = c
		}
		results = append(results, item)
	}
	out := map[string]any{"count": res.Count, "results": results, "highlights": res.Highlights}
	if out["highlights"] == nil {
		out["highlights"] = []string{}
	}
	if res.NextBatch != "" {
		out["next_batch"] = res.NextBatch
	}
	if crit.IncludeState {
		state := map[string]any{}
		for _, ev := range res.Events {
			roomID := ev.RoomID().String()
			if _, done := state[roomID]; done {
				continue
			}
			// Current state only for rooms the user is still in.
			if m, _, err := s.rooms.Membership(r.Context(), roomID, d.UserID); err != nil || m != spec.Join {
				continue
			}
			cur, err := s.rooms.CurrentState(r.Context(), roomID)
			if err != nil {
				return nil, err
			}
			if state[roomID], err = f.events(r.Context(), cur); err != nil {
				return nil, err
			}
		}
		out["state"] = state
	}
	if crit.Groupings != nil && len(crit.Groupings.GroupBy) > 0 {
		groups := map[string]any{}
		for _, g := range crit.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return nil, httputil.InvalidParam("group_by key must be room_id or sender")
			}
			byKey := map[string]map[string]any{}
			for _, ev := range res.Events {
				k := ev.RoomID().String()
				if g.Key == "sender" {
					k = string(ev.SenderID())
				}
				grp := byKey[k]
				if grp == nil {
					grp = map[string]any{"results": []string{}, "order": len(byKey) + 1}
					byKey[k] = grp
				}
				grp["results"] = append(grp["results"].([]string), ev.EventID())
			}
			groups[g.Key] = byKey
		}
		out["groups"] = groups
	}
	return map[string]any{"search_categories": map[string]any{"room_events": out}}, nil
}

// searchContext returns the events around a search result the user may see, with
// pagination tokens and, when asked, the senders' profiles.
func (s *Server) searchContext(r *http.Request, f *eventFormatter, ev *roomserver.Event, nBefore, nAfter int, profiles bool) (map[string]any, error) {
	ctx := r.Context()
	roomID, viewer := ev.RoomID().String(), f.userID
	pos := ev.Position()
	startPos := roomserver.Position{Depth: pos.Depth, Stream: pos.Stream - 1}
	var before, after []*roomserver.Event
	if nBefore > 0 {
		page, err := s.rooms.Messages(ctx, roomserver.MessagesRequest{RoomID: roomID, Viewer: viewer,
			From: startPos, Dir: roomserver.Backward, Limit: nBefore})
		if err != nil {
			return nil, err
		}
		before = page.Events
		if page.Next != nil {
			startPos = *page.Next
		} else if len(page.Events) > 0 {
			startPos = roomserver.Start
		}
	}
	endPos := pos
	if nAfter > 0 {
		page, err := s.rooms.Messages(ctx, roomserver.MessagesRequest{RoomID: roomID, Viewer: viewer,
			From: pos, Dir: roomserver.Forward, Limit: nAfter})
		if err != nil {
			return nil, err
		}
		after = page.Events
		if n := len(after); n > 0 {
			endPos = after[n-1].Position()
		}
	}
	out := map[string]any{"start": startPos.String(), "end": endPos.String()}
	var err error
	if out["events_before"], err = f.events(ctx, before); err != nil {
		return nil, err
	}
	if out["events_after"], err = f.events(ctx, after); err != nil {
		return nil, err
	}
	if profiles {
		info := map[string]any{}
		for _, e := range append(append([]*roomserver.Event{ev}, before...), after...) {
			sender := string(e.SenderID())
			if _, done := info[sender]; done {
				continue
			}
			p := map[string]any{}
			// The sender's profile in the room as of the result.
			m, err := s.rooms.StateEventAt(ctx, ev.EventID(), spec.MRoomMember, sender, true)
			if err != nil {
				return nil, err
			}
			if m != nil {
				var c struct {
					DisplayName *string `json:"displayname"`
					AvatarURL   *string `json:"avatar_url"`
				}
				if json.Unmarshal(m.Content(), &c) == nil {
					if c.DisplayName != nil {
						p["displayname"] = *c.DisplayName
					}
					if c.AvatarURL != nil {
						p["avatar_url"] = *c.AvatarURL
					}
				}
			}
			info[sender] = p
		}
		out["profile_info"] = info
	}
	return out, nil
}
