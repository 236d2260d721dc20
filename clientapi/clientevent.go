package clientapi

import (
	"context"
	"encoding/json"
	"time"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// clientEvent is the spec's ClientEvent: a room event as the client-server API returns it.
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// eventFormatter turns roomserver events into the events a client sees: the client
// format (or the federation format on request) with the unsigned data of the spec:
// age, transaction_id (only for the sending device), prev_content, prev_sender,
// replaces_state and redacted_because.
type eventFormatter struct {
	s        *Server
	userID   string
	deviceID string
	format   filter.EventFormat
	now      time.Time
	// related holds the events referred to by unsigned (replaced states, redactions).
	related map[string]*roomserver.Event
	// membership is the requester's membership at each formatted event (by event ID),
	// for unsigned.membership.
	membership map[string]string
}

func (s *Server) formatter(userID, deviceID string, format filter.EventFormat) *eventFormatter {
	return &eventFormatter{s: s, userID: userID, deviceID: deviceID, format: format, now: time.Now()}
}

// load fetches the events the unsigned data of evs refers to, in one batch, and the
// requester's membership at each event.
func (f *eventFormatter) load(ctx context.Context, evs []*roomserver.Event) error {
	if err := f.loadMemberships(ctx, evs); err != nil {
		return err
	}
	var ids []string
	for _, ev := range evs {
		if ev == nil {
			continue
		}
		if ev.ReplacesState != "" {
			if _, ok := f.related[ev.ReplacesState]; !ok {
				ids = append(ids, ev.ReplacesState)
			}
		}
		if ev.RedactedBy != "" {
			if _, ok := f.related[ev.RedactedBy]; !ok {
				ids = append(ids, ev.RedactedBy)
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	m, err := f.s.rooms.Events(ctx, ids)
	if err != nil {
		return err
	}
	if f.related == nil {
		f.related = make(map[string]*roomserver.Event, len(m))
	}
	for k, v := range m {
		f.related[k] = v
	}
	return nil
}

// loadMemberships finds the requester's membership at each of evs not seen yet.
func (f *eventFormatter) loadMemberships(ctx context.Context, evs []*roomserver.Event) error {
	if f.userID == "" {
		return nil
	}
	var todo []*roomserver.Event
	for _, ev := range evs {
		if ev == nil {
			continue
		}
		if _, ok := f.membership[ev.EventID()]; !ok {
			todo = append(todo, ev)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	ms, err := f.s.rooms.MembershipsAt(ctx, f.userID, todo)
	if err != nil {
		return err
	}
	if f.membership == nil {
		f.membership = make(map[string]string, len(todo))
	}
	for i, ev := range todo {
		f.membership[ev.EventID()] = ms[i]
	}
	return nil
}

// events formats evs (loading what their unsigned data needs).
func (f *eventFormatter) events(ctx context.Context, evs []*roomserver.Event) ([]any, error) {
	if err := f.load(ctx, evs); err != nil {
		return nil, err
	}
	out := make([]any, 0, len(evs))
	for _, ev := range evs {
		out = append(out, f.event(ev, true))
	}
	return out, nil
}

// one formats a single event.
func (f *eventFormatter) one(ctx context.Context, ev *roomserver.Event) (any, error) {
	if err := f.load(ctx, []*roomserver.Event{ev}); err != nil {
		return nil, err
	}
	return f.event(ev, true), nil
}

// unsigned builds the unsigned object of ev.
func (f *eventFormatter) unsigned(ev *roomserver.Event, nested bool) map[string]any {
	u := map[string]any{}
	if raw := ev.Unsigned(); len(raw) > 0 {
		_ = json.Unmarshal(raw, &u)
	}
	// Fields a remote server may have put there are ours to fill.
	delete(u, "transaction_id")
	delete(u, "redacted_because")
	delete(u, "membership")
	age := f.now.UnixMilli() - int64(ev.OriginServerTS())
	if age < 0 {
		age = 0
	}
	u["age"] = age
	if ev.TxnID != "" && ev.DeviceID == f.deviceID && string(ev.SenderID()) == f.userID && f.deviceID != "" {
		u["transaction_id"] = ev.TxnID
	}
	if ev.ReplacesState != "" {
		u["replaces_state"] = ev.ReplacesState
		if prev := f.related[ev.ReplacesState]; prev != nil {
			u["prev_content"] = json.RawMessage(prev.Content())
			u["prev_sender"] = string(prev.SenderID())
		}
	}
	if m := f.membership[ev.EventID()]; m != "" && nested {
		u["membership"] = m
	}
	if ev.RedactedBy != "" && nested {
		if red := f.related[ev.RedactedBy]; red != nil {
			u["redacted_because"] = f.event(red, false)
		}
	}
	return u
}

// event formats one event; nested is false inside redacted_because (no recursion).
func (f *eventFormatter) event(ev *roomserver.Event, nested bool) any {
	u := f.unsigned(ev, nested)
	if f.format == filter.FormatFederation {
		pdu, err := ev.SetUnsigned(u)
		if err != nil {
			return json.RawMessage(ev.JSON())
		}
		return json.RawMessage(pdu.JSON())
	}
	ce := clientEvent{
		Content:        json.RawMessage(ev.Content()),
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         ev.RoomID().String(),
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Redacts:        ev.Redacts(),
		Unsigned:       u,
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage("{}")
	}
	return ce
}
