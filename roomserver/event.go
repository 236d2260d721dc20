package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage/roomstore"
)

// Event is a stored room event. Events are shared between callers (they come from a
// cache): treat them as read-only, and do not call methods of the PDU that modify it
// (SetUnsignedField, Redact); SetUnsigned returns a copy and is fine.
type Event struct {
	// PDU is the event; already stripped by the redaction algorithm when RedactedBy is set.
	gomatrixserverlib.PDU
	// NID is the event's numeric ID in this database.
	NID int64
	// StreamPos is its position in the global event stream, 0 when the event is not
	// part of the timeline (outlier, rejected or soft-failed).
	StreamPos int64
	// RoomNID is the room's numeric ID.
	RoomNID int64
	// Outlier events are known (e.g. as auth events) but have no state of their own.
	Outlier bool
	// Rejected events failed authorisation; they never enter the timeline or the state.
	Rejected bool
	// SoftFailed events passed authorisation but not against the current state; kept
	// in the DAG, hidden from clients.
	SoftFailed bool
	// RedactedBy is the ID of the redaction event applied to this event.
	RedactedBy string
	// TxnID and DeviceID are the client transaction ID and device of a local sender,
	// for unsigned.transaction_id in the sender's own /sync.
	TxnID    string
	DeviceID string
	// ReplacesState is the state event this one replaced (for unsigned.replaces_state
	// and prev_content).
	ReplacesState string
	// Membership is content.membership of m.room.member events.
	Membership string
	// RelType and RelatesTo are content["m.relates_to"].rel_type / event_id.
	RelType   string
	RelatesTo string

	stateBefore, stateAfter int64
	typeNID, keyNID         int64
}

// Position returns the event's topological pagination position.
func (e *Event) Position() Position { return Position{Depth: e.Depth(), Stream: e.StreamPos} }

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.StateKey() != nil }

func eventFromRow(row *roomstore.Event, verImpl gomatrixserverlib.IRoomVersion) (*Event, error) {
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(row.EventID, row.JSON, false)
	if err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", row.EventID, err)
	}
	if row.RedactedBy != "" {
		pdu.Redact()
	}
	// EventID() is computed lazily and cached inside the PDU; compute it now so that
	// concurrent readers of the shared PDU never race on it.
	_ = pdu.EventID()
	return &Event{
		PDU:           pdu,
		NID:           row.NID,
		StreamPos:     row.StreamPos,
		RoomNID:       row.RoomNID,
		Outlier:       row.Outlier,
		Rejected:      row.Rejected,
		SoftFailed:    row.SoftFailed,
		RedactedBy:    row.RedactedBy,
		TxnID:         row.TxnID,
		DeviceID:      row.DeviceID,
		ReplacesState: row.ReplacesID,
		Membership:    row.Membership,
		RelType:       row.RelType,
		RelatesTo:     row.RelatesTo,
		stateBefore:   row.StateBefore,
		stateAfter:    row.StateAfter,
		typeNID:       row.TypeNID,
		keyNID:        row.StateKeyNID,
	}, nil
}

// relation extracts content["m.relates_to"] (rel_type, event_id).
func relation(content []byte) (relType, target string) {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.EventID == "" {
		return "", ""
	}
	return c.RelatesTo.RelType, c.RelatesTo.EventID
}

// membershipOf returns content.membership of a member event ("" otherwise).
func membershipOf(pdu gomatrixserverlib.PDU) string {
	if pdu.Type() != spec.MRoomMember {
		return ""
	}
	m, _ := pdu.Membership()
	return m
}

// redactsOf returns the target of a redaction event: the top-level redacts key, or
// content.redacts (room versions 11 and later).
func redactsOf(pdu gomatrixserverlib.PDU) string {
	if r := pdu.Redacts(); r != "" {
		return r
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(pdu.Content(), &c)
	return c.Redacts
}

// eventsByNID returns the events with the given NIDs (missing ones are absent).
func (rs *Roomserver) eventsByNID(ctx context.Context, nids []int64) (map[int64]*Event, error) {
	out := make(map[int64]*Event, len(nids))
	var missing []int64
	for _, nid := range nids {
		if ev, ok := rs.eventCache.Get(nid); ok {
			out[nid] = ev
		} else if _, dup := out[nid]; !dup {
			missing = append(missing, nid)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := rs.loadEvents(ctx, missing)
	if err != nil {
		return nil, err
	}
	for _, ev := range loaded {
		out[ev.NID] = ev
	}
	return out, nil
}

// loadEvents reads and parses events from the database. Large loads (the state of a
// big room) are split over a few goroutines: reading and parsing are both CPU-bound.
func (rs *Roomserver) loadEvents(ctx context.Context, nids []int64) ([]*Event, error) {
	const part = 500
	if len(nids) <= 2*part {
		return rs.loadEventsPart(ctx, nids)
	}
	var parts [][]int64
	for len(nids) > 0 {
		n := min(part, len(nids))
		parts = append(parts, nids[:n])
		nids = nids[n:]
	}
	results := make([][]*Event, len(parts))
	errs := make([]error, len(parts))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(parts), max(2, runtime.GOMAXPROCS(0))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(parts) {
					return
				}
				results[i], errs[i] = rs.loadEventsPart(ctx, parts[i])
			}
		}()
	}
	wg.Wait()
	var out []*Event
	for i := range parts {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, results[i]...)
	}
	return out, nil
}

func (rs *Roomserver) loadEventsPart(ctx context.Context, nids []int64) ([]*Event, error) {
	rows, err := roomstore.EventsByNID(ctx, rs.db, nids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(rows))
	for _, row := range rows {
		ev, err := rs.eventFromRow(ctx, row)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func (rs *Roomserver) eventFromRow(ctx context.Context, row *roomstore.Event) (*Event, error) {
	r, err := rs.roomByNID(ctx, row.RoomNID)
	if err != nil {
		return nil, err
	}
	ev, err := eventFromRow(row, r.verImpl)
	if err != nil {
		return nil, err
	}
	rs.cacheEvent(ev)
	return ev, nil
}

func (rs *Roomserver) cacheEvent(ev *Event) {
	rs.eventCache.Add(ev.NID, ev)
	rs.eventIDCache.Add(ev.EventID(), ev.NID)
}

// eventByNID returns one event; nil when unknown.
func (rs *Roomserver) eventByNID(ctx context.Context, nid int64) (*Event, error) {
	m, err := rs.eventsByNID(ctx, []int64{nid})
	if err != nil {
		return nil, err
	}
	return m[nid], nil
}

// eventsByID returns the events with the given IDs (unknown ones are absent).
func (rs *Roomserver) eventsByID(ctx context.Context, ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	var missing []string
	for _, id := range ids {
		if nid, ok := rs.eventIDCache.Get(id); ok {
			if ev, ok := rs.eventCache.Get(nid); ok {
				out[id] = ev
				continue
			}
		}
		missing = append(missing, id)
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := roomstore.EventsByID(ctx, rs.db, missing)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		ev, err := rs.eventFromRow(ctx, row)
		if err != nil {
			return nil, err
		}
		out[row.EventID] = ev
	}
	return out, nil
}

// eventByID returns one event; nil when unknown.
func (rs *Roomserver) eventByID(ctx context.Context, id string) (*Event, error) {
	m, err := rs.eventsByID(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	return m[id], nil
}
