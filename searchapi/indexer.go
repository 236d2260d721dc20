// Package searchapi is full-text search over room events (POST /search): an indexer
// that follows the roomserver's event stream, and the query that answers searches
// with the events the searcher may see.
//
// The indexer keeps the send path cheap: the roomserver's output only wakes it (a
// non-blocking channel send); it then reads the new events from the stream in
// batches. A search first brings the index up to the stream's current position, so
// an event a client already saw in /sync is always searchable.
package searchapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Indexed content keys, per event type.
const (
	KeyBody  = "content.body"
	KeyName  = "content.name"
	KeyTopic = "content.topic"
)

// indexedKeys maps the event types that are indexed to the content field indexed.
var indexedKeys = map[string]string{
	"m.room.message": KeyBody,
	"m.room.name":    KeyName,
	"m.room.topic":   KeyTopic,
}

// batchSize is how many stream events one indexing transaction reads.
const batchSize = 500

// indexLinger is the shortest time between two background catch-ups while events keep
// coming: each catch-up is a commit on the database's single SQLite writer, which the
// roomserver's commits wait for, so a busy server indexes a few times a second instead
// of once per event. Searches do not wait for it: they catch up themselves.
const indexLinger = 250 * time.Millisecond

// Service indexes room events and answers searches.
type Service struct {
	db    *storage.DB
	rooms *roomserver.Roomserver

	mu  sync.Mutex // serialises catch-ups; guards pos
	pos int64      // stream position indexed so far (0: not loaded yet)

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// New returns the search service; Start runs its indexer.
func New(db *storage.DB, rooms *roomserver.Roomserver) *Service {
	return &Service{db: db, rooms: rooms, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// OnNewEvent implements roomserver.Output: it only wakes the indexer.
func (s *Service) OnNewEvent(roomserver.OutputEvent) {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start runs the indexer until Close; it first indexes what was written while the
// server was down (or, on the first start, the whole history).
func (s *Service) Start() {
	s.OnNewEvent(roomserver.OutputEvent{})
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-s.wake:
				if err := s.CatchUp(context.Background()); err != nil {
					logrus.WithError(err).Warn("search indexer")
				}
				select {
				case <-s.stop:
					return
				case <-time.After(indexLinger):
				}
			}
		}
	}()
}

// Close stops the indexer.
func (s *Service) Close() {
	close(s.stop)
	<-s.done
}

// CatchUp indexes the room events up to the stream's current position.
func (s *Service) CatchUp(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos == 0 {
		pos, err := storage.SearchIndexPosition(ctx, s.db)
		if err != nil {
			return err
		}
		s.pos = pos
	}
	target := s.rooms.StreamPosition()
	for s.pos < target {
		evs, next, err := s.rooms.EventsInStream(ctx, s.pos, target, batchSize)
		if err != nil {
			return fmt.Errorf("read events to index: %w", err)
		}
		entries, redacted := entriesOf(evs)
		if err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.IndexSearchBatch(ctx, tx, entries, redacted, next)
		}); err != nil {
			return err
		}
		s.pos = next
	}
	return nil
}

// entriesOf returns the index entries of a batch of events, and the events the
// redactions in it remove from the index.
func entriesOf(evs []*roomserver.Event) ([]storage.SearchEntry, []string) {
	var entries []storage.SearchEntry
	var redacted []string
	for _, ev := range evs {
		if ev.Type() == "m.room.redaction" {
			if target := redactsOf(ev); target != "" {
				redacted = append(redacted, target)
			}
			continue
		}
		key, ok := indexedKeys[ev.Type()]
		if !ok || ev.RedactedBy != "" {
			continue
		}
		var content map[string]any
		if json.Unmarshal(ev.Content(), &content) != nil {
			continue
		}
		field := key[len("content."):]
		text, _ := content[field].(string)
		if text == "" {
			continue
		}
		entries = append(entries, storage.SearchEntry{EventNID: ev.NID, EventID: ev.EventID(), RoomID: ev.RoomID().String(),
			StreamPos: ev.StreamPos, Key: key, Value: text})
	}
	return entries, redacted
}

// redactsOf returns the event a redaction targets: the top-level redacts field, or
// content.redacts from room version 11.
func redactsOf(ev *roomserver.Event) string {
	if r := ev.Redacts(); r != "" {
		return r
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Redacts
}
