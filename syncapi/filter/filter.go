// Package filter holds the Matrix event filters of the client-server API ("Filtering"
// in the spec): the types, parsing with validation (for POST /user/{userId}/filter and
// /sync's filter parameter), defaults, and the matching rules /sync applies.
//
// Every method is safe on a nil receiver, where nil means "no filter": everything is
// included and limits take the caller's default. So /sync can write
// f.GetRoom().GetTimeline().LimitOr(10) without nil checks.
package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// EventFormat is how events are returned: client (the default) or federation.
type EventFormat string

// The event formats of the spec.
const (
	FormatClient     EventFormat = "client"
	FormatFederation EventFormat = "federation"
)

// Filter is a sync filter (the spec's Filter object).
//
// Lists distinguish absent (nil: no restriction) from empty (non-nil, length 0: matches
// nothing); JSON round trips preserve the difference.
type Filter struct {
	// EventFields lists dot-separated paths of the event fields to include (nil: all).
	EventFields []string    `json:"event_fields,omitzero"`
	EventFormat EventFormat `json:"event_format,omitempty"`
	// Presence filters the presence updates.
	Presence *EventFilter `json:"presence,omitempty"`
	// AccountData filters the global account data.
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	// Limit is the maximum number of events to return (nil: the server's default).
	Limit      *int     `json:"limit,omitempty"`
	NotSenders []string `json:"not_senders,omitzero"`
	NotTypes   []string `json:"not_types,omitzero"`
	Senders    []string `json:"senders,omitzero"`
	// Types and NotTypes may use '*' as a wildcard for any sequence of characters.
	Types []string `json:"types,omitzero"`
}

// RoomEventFilter is the spec's RoomEventFilter: an EventFilter with room and member options.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitzero"`
	Rooms                     []string `json:"rooms,omitzero"`
	// ContainsURL: nil ignores url, true keeps only events whose content has a url, false drops them.
	ContainsURL *bool `json:"contains_url,omitempty"`
	// RelTypes and NotRelTypes filter by m.relates_to.rel_type (MSC3874; /messages only).
	RelTypes    []string `json:"org.matrix.msc3874.rel_types,omitzero"`
	NotRelTypes []string `json:"org.matrix.msc3874.not_rel_types,omitzero"`
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitzero"`
	Rooms        []string         `json:"rooms,omitzero"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// DefaultTimelineLimit is the number of timeline events per room /sync returns when the
// filter sets no limit (as other homeservers do).
const DefaultTimelineLimit = 10

// Default returns the filter used when a client gives none: everything, client format.
func Default() *Filter { return &Filter{} }

// Error is a filter that was refused, with a message for the client.
type Error struct {
	// NotJSON is true when the input is not a JSON object at all (M_NOT_JSON);
	// otherwise a field has a wrong type or value (M_BAD_JSON).
	NotJSON bool
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

func badf(format string, args ...any) *Error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Parse decodes and validates a filter. Unknown fields are ignored (clients send
// unstable extensions); fields of the wrong type or with invalid values give an *Error.
// An empty input is the empty filter.
func Parse(data []byte) (*Filter, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return Default(), nil
	}
	if !utf8.Valid(data) || data[0] != '{' || !json.Valid(data) {
		return nil, &Error{NotJSON: true, Msg: "Filter is not a JSON object"}
	}
	var f Filter
	if err := json.Unmarshal(data, &f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, typeError(te)
		}
		return nil, badf("Invalid filter: %v", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func typeError(te *json.UnmarshalTypeError) *Error {
	// The path of a field promoted from the embedded EventFilter names the Go struct: drop it.
	field := strings.ReplaceAll(te.Field, "EventFilter.", "")
	if field == "" {
		return badf("Filter must be a JSON object, not %s", te.Value)
	}
	want := "a value of another type"
	switch te.Type.Kind() {
	case reflect.Int, reflect.Int64:
		want = "an integer"
	case reflect.Bool:
		want = "a boolean"
	case reflect.String:
		want = "a string"
	case reflect.Slice:
		want = "a list of strings"
	case reflect.Struct, reflect.Ptr, reflect.Map:
		want = "an object"
	}
	if te.Type.Kind() == reflect.String && isListField(field) {
		want = "a list of strings"
	}
	return badf("Filter field %q must be %s, not %s", field, want, te.Value)
}

// isListField reports whether a field path names one of the string lists (for errors
// about their items).
func isListField(path string) bool {
	last := path[strings.LastIndexByte(path, '.')+1:]
	switch last {
	case "event_fields", "not_senders", "not_types", "senders", "types", "not_rooms", "rooms":
		return true
	}
	return false
}

// Validate checks the values that JSON types alone do not: the event format, limits
// that are not negative, and user and room IDs in the sender and room lists.
func (f *Filter) Validate() error {
	if f == nil {
		return nil
	}
	switch f.EventFormat {
	case "", FormatClient, FormatFederation:
	default:
		return badf("Filter field \"event_format\" must be \"client\" or \"federation\", not %q", f.EventFormat)
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	if r := f.Room; r != nil {
		if err := checkIDs("room.rooms", r.Rooms, '!', "room ID"); err != nil {
			return err
		}
		if err := checkIDs("room.not_rooms", r.NotRooms, '!', "room ID"); err != nil {
			return err
		}
		for _, sub := range []struct {
			path string
			f    *RoomEventFilter
		}{{"room.ephemeral", r.Ephemeral}, {"room.state", r.State}, {"room.timeline", r.Timeline}, {"room.account_data", r.AccountData}} {
			if err := sub.f.validate(sub.path); err != nil {
				return err
			}
		}
	}
	return nil
}

func (ef *EventFilter) validate(path string) error {
	if ef == nil {
		return nil
	}
	if ef.Limit != nil && *ef.Limit < 0 {
		return badf("Filter field %q must not be negative, got %d", path+".limit", *ef.Limit)
	}
	if err := checkIDs(path+".senders", ef.Senders, '@', "user ID"); err != nil {
		return err
	}
	return checkIDs(path+".not_senders", ef.NotSenders, '@', "user ID")
}

func (rf *RoomEventFilter) validate(path string) error {
	if rf == nil {
		return nil
	}
	if err := rf.EventFilter.validate(path); err != nil {
		return err
	}
	if err := checkIDs(path+".rooms", rf.Rooms, '!', "room ID"); err != nil {
		return err
	}
	return checkIDs(path+".not_rooms", rf.NotRooms, '!', "room ID")
}

func checkIDs(path string, ids []string, sigil byte, what string) error {
	for _, id := range ids {
		if len(id) < 2 || id[0] != sigil {
			return badf("Filter field %q must hold %ss, %q is not one", path, what, id)
		}
	}
	return nil
}

// Format returns the event format, client by default.
func (f *Filter) Format() EventFormat {
	if f == nil || f.EventFormat == "" {
		return FormatClient
	}
	return f.EventFormat
}

// GetRoom returns the room filter (nil: everything).
func (f *Filter) GetRoom() *RoomFilter {
	if f == nil {
		return nil
	}
	return f.Room
}

// GetPresence returns the presence filter (nil: everything).
func (f *Filter) GetPresence() *EventFilter {
	if f == nil {
		return nil
	}
	return f.Presence
}

// GetAccountData returns the global account data filter (nil: everything).
func (f *Filter) GetAccountData() *EventFilter {
	if f == nil {
		return nil
	}
	return f.AccountData
}

// GetTimeline returns the timeline filter (nil: everything).
func (rf *RoomFilter) GetTimeline() *RoomEventFilter {
	if rf == nil {
		return nil
	}
	return rf.Timeline
}

// GetState returns the state filter (nil: everything).
func (rf *RoomFilter) GetState() *RoomEventFilter {
	if rf == nil {
		return nil
	}
	return rf.State
}

// GetEphemeral returns the ephemeral events filter (nil: everything).
func (rf *RoomFilter) GetEphemeral() *RoomEventFilter {
	if rf == nil {
		return nil
	}
	return rf.Ephemeral
}

// GetAccountData returns the room account data filter (nil: everything).
func (rf *RoomFilter) GetAccountData() *RoomEventFilter {
	if rf == nil {
		return nil
	}
	return rf.AccountData
}

// IncludesLeave reports whether rooms the user has left are included.
func (rf *RoomFilter) IncludesLeave() bool { return rf != nil && rf.IncludeLeave }

// MatchesRoom reports whether a room passes the top-level rooms/not_rooms lists.
func (rf *RoomFilter) MatchesRoom(roomID string) bool {
	if rf == nil {
		return true
	}
	return matchList(rf.Rooms, rf.NotRooms, roomID, exact)
}

// LimitOr returns the filter's limit, or def when it sets none.
func (ef *EventFilter) LimitOr(def int) int {
	if ef == nil || ef.Limit == nil {
		return def
	}
	return *ef.Limit
}

// Matches reports whether an event of a type from a sender passes the filter.
func (ef *EventFilter) Matches(eventType, sender string) bool {
	if ef == nil {
		return true
	}
	return matchList(ef.Types, ef.NotTypes, eventType, glob) && matchList(ef.Senders, ef.NotSenders, sender, exact)
}

// ExcludesType reports whether the filter drops every event of a type, whoever sent
// it (a types list without it, or a not_types pattern matching it).
func (ef *EventFilter) ExcludesType(eventType string) bool {
	return ef != nil && !matchList(ef.Types, ef.NotTypes, eventType, glob)
}

// ExcludesAllTypes reports whether the filter drops every event: an empty types list or
// a not_types "*".
func (ef *EventFilter) ExcludesAllTypes() bool {
	if ef == nil {
		return false
	}
	if ef.Types != nil && len(ef.Types) == 0 {
		return true
	}
	for _, p := range ef.NotTypes {
		if p == "*" {
			return true
		}
	}
	return false
}

// ExcludesType reports whether the filter drops every event of a type in every room.
func (rf *RoomEventFilter) ExcludesType(eventType string) bool {
	return rf != nil && (rf.Rooms != nil && len(rf.Rooms) == 0 || rf.EventFilter.ExcludesType(eventType))
}

// ExcludesAllTypes reports whether the filter drops every event in every room.
func (rf *RoomEventFilter) ExcludesAllTypes() bool {
	return rf != nil && (rf.Rooms != nil && len(rf.Rooms) == 0 || rf.EventFilter.ExcludesAllTypes())
}

// LimitOr returns the filter's limit, or def when it sets none.
func (rf *RoomEventFilter) LimitOr(def int) int {
	if rf == nil {
		return def
	}
	return rf.EventFilter.LimitOr(def)
}

// Matches reports whether an event passes the filter: its room, type, sender and
// whether its content has a url.
func (rf *RoomEventFilter) Matches(roomID, eventType, sender string, hasURL bool) bool {
	if rf == nil {
		return true
	}
	if rf.ContainsURL != nil && *rf.ContainsURL != hasURL {
		return false
	}
	return matchList(rf.Rooms, rf.NotRooms, roomID, exact) && rf.EventFilter.Matches(eventType, sender)
}

// FiltersRelations reports whether the filter looks at events' relation types (MSC3874).
func (rf *RoomEventFilter) FiltersRelations() bool {
	return rf != nil && (rf.RelTypes != nil || rf.NotRelTypes != nil)
}

// MatchesRelation reports whether an event with relation type relType ("" for an event
// without a relation) passes rel_types and not_rel_types: an event without a relation
// never matches a rel_types list.
func (rf *RoomEventFilter) MatchesRelation(relType string) bool {
	if rf == nil {
		return true
	}
	if rf.RelTypes != nil && !slices.Contains(rf.RelTypes, relType) {
		return false
	}
	return relType == "" || !slices.Contains(rf.NotRelTypes, relType)
}

// LazyLoad reports whether membership events are lazy-loaded.
func (rf *RoomEventFilter) LazyLoad() bool { return rf != nil && rf.LazyLoadMembers }

// RedundantMembers reports whether lazy-loading resends members already sent
// (only meaningful with LazyLoad).
func (rf *RoomEventFilter) RedundantMembers() bool {
	return rf != nil && rf.LazyLoadMembers && rf.IncludeRedundantMembers
}

// ThreadNotifications reports whether per-thread notification counts are wanted.
func (rf *RoomEventFilter) ThreadNotifications() bool {
	return rf != nil && rf.UnreadThreadNotifications
}

// matchList applies an include list (nil: everything) and an exclude list, which wins.
func matchList(include, exclude []string, value string, match func(pattern, value string) bool) bool {
	for _, p := range exclude {
		if match(p, value) {
			return false
		}
	}
	if include == nil {
		return true
	}
	for _, p := range include {
		if match(p, value) {
			return true
		}
	}
	return false
}

func exact(pattern, value string) bool { return pattern == value }

// glob matches value against a pattern in which '*' stands for any sequence of characters.
func glob(pattern, value string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == value
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(value, parts[0]) {
		return false
	}
	value = value[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(value, part)
		if i < 0 {
			return false
		}
		value = value[i+len(part):]
	}
	return len(value) >= len(last) && strings.HasSuffix(value, last)
}
