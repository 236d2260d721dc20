package searchapi

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Orders of results.
const (
	OrderRank   = "rank"
	OrderRecent = "recent"
)

// rankCandidates caps how many matches a rank-ordered search scores: ranking happens
// over the newest matches only, so a very common word costs a bounded amount.
const rankCandidates = 1000

// Request is one room_events search.
type Request struct {
	UserID string
	Term   string
	// Keys are the content keys searched (all three when empty).
	Keys []string
	// Rooms limits the search to these rooms (every room of the user when nil).
	Rooms    []string
	NotRooms []string
	// Match, when set, filters the loaded events further (senders, types, URLs).
	Match func(*roomserver.Event) bool
	Order string
	Limit int
	// Batch is the next_batch token of the previous page ("" for the first page).
	Batch string
}

// Result is one page of a search.
type Result struct {
	Events []*roomserver.Event
	// Ranks are the events' scores (rank order only; 0 otherwise).
	Ranks []float64
	// Count is the number of matching events in the searched rooms (before
	// history-visibility checks: an estimate, as the spec allows).
	Count int64
	// Highlights are the words to highlight in the results.
	Highlights []string
	// NextBatch fetches the next page; set on every full page, "" on a short one.
	NextBatch string
}

// ErrBadBatch reports a next_batch token this server did not make.
var ErrBadBatch = fmt.Errorf("invalid next_batch token")

// Terms splits a search term into the lowercased words the index matches, each as a
// word prefix. Punctuation separates words, as the tokenizers do.
func Terms(term string) []string {
	words := strings.FieldsFunc(strings.ToLower(term), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	seen := map[string]bool{}
	out := words[:0]
	for _, w := range words {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// Search runs a search with the events userID may see.
func (s *Service) Search(ctx context.Context, req Request) (*Result, error) {
	terms := Terms(req.Term)
	res := &Result{Highlights: terms}
	if len(terms) == 0 {
		return res, nil
	}
	rooms, err := s.searchableRooms(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(rooms) == 0 {
		return res, nil
	}
	// Whatever a client saw in /sync must be searchable.
	if err := s.CatchUp(ctx); err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	sq := storage.SearchQuery{Terms: terms, Rooms: rooms, Keys: req.Keys}
	if req.Order == OrderRank {
		return s.searchRank(ctx, req, sq, limit, res)
	}
	return s.searchRecent(ctx, req, sq, limit, res)
}

// searchableRooms returns the rooms the user is or was in (their history visibility is
// checked per event later), narrowed by the filter.
func (s *Service) searchableRooms(ctx context.Context, req Request) ([]string, error) {
	mine, err := s.rooms.RoomsOfUser(ctx, req.UserID, "")
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", req.UserID, err)
	}
	allowed := map[string]bool{}
	for _, m := range mine {
		if m.Membership == "join" || m.Membership == "leave" || m.Membership == "ban" {
			allowed[m.RoomID] = true
		}
	}
	for _, r := range req.NotRooms {
		delete(allowed, r)
	}
	var out []string
	if req.Rooms != nil {
		for _, r := range req.Rooms {
			if allowed[r] {
				out = append(out, r)
				delete(allowed, r) // once
			}
		}
		return out, nil
	}
	for r := range allowed {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// visible loads the hits' events and keeps those the user may see and the filter keeps.
func (s *Service) visible(ctx context.Context, req Request, hits []storage.SearchHit) ([]*roomserver.Event, error) {
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.EventID
	}
	byID, err := s.rooms.Events(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load search results: %w", err)
	}
	evs := make([]*roomserver.Event, 0, len(hits))
	for _, id := range ids {
		ev := byID[id]
		if ev == nil || ev.RedactedBy != "" || (req.Match != nil && !req.Match(ev)) {
			continue
		}
		evs = append(evs, ev)
	}
	return s.rooms.VisibleEvents(ctx, req.UserID, evs)
}

// searchRecent pages newest first; next_batch is the stream position to continue below.
func (s *Service) searchRecent(ctx context.Context, req Request, sq storage.SearchQuery, limit int, res *Result) (*Result, error) {
	if req.Batch != "" {
		before, err := strconv.ParseInt(strings.TrimPrefix(req.Batch, "s"), 10, 64)
		if err != nil || !strings.HasPrefix(req.Batch, "s") || before <= 0 {
			return nil, ErrBadBatch
		}
		sq.Before = before
	}
	first := true
	for len(res.Events) < limit {
		sq.Limit = limit - len(res.Events) + 1
		hits, count, err := storage.SearchEvents(ctx, s.db, s.db.Dialect(), sq)
		if err != nil {
			return nil, err
		}
		if first {
			res.Count, first = count, false
		}
		more := len(hits) == sq.Limit
		if more {
			hits = hits[:len(hits)-1]
		}
		evs, err := s.visible(ctx, req, hits)
		if err != nil {
			return nil, err
		}
		res.Events = append(res.Events, evs...)
		res.Ranks = append(res.Ranks, make([]float64, len(evs))...)
		if len(hits) > 0 {
			sq.Before = hits[len(hits)-1].StreamPos
		}
		if !more {
			break
		}
	}
	// A full page gets a next_batch even when nothing follows (as other servers do:
	// the next page is then empty); a short page is the last.
	if len(res.Events) >= limit {
		res.NextBatch = "s" + strconv.FormatInt(sq.Before, 10)
	}
	return res, nil
}

// searchRank scores the newest matches and pages through them by offset; next_batch
// is the offset of the next page.
func (s *Service) searchRank(ctx context.Context, req Request, sq storage.SearchQuery, limit int, res *Result) (*Result, error) {
	offset := 0
	if req.Batch != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Batch, "r"))
		if err != nil || !strings.HasPrefix(req.Batch, "r") || n < 0 {
			return nil, ErrBadBatch
		}
		offset = n
	}
	sq.Limit = rankCandidates
	hits, count, err := storage.SearchEvents(ctx, s.db, s.db.Dialect(), sq)
	if err != nil {
		return nil, err
	}
	res.Count = count
	scores := make([]float64, len(hits))
	for i, h := range hits {
		scores[i] = score(sq.Terms, h.Value)
	}
	order := make([]int, len(hits))
	for i := range order {
		order[i] = i
	}
	// Newest first among equal scores (hits come newest first).
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	for offset < len(order) && len(res.Events) < limit {
		end := min(offset+limit-len(res.Events), len(order))
		page := make([]storage.SearchHit, 0, end-offset)
		for _, i := range order[offset:end] {
			page = append(page, hits[i])
		}
		evs, err := s.visible(ctx, req, page)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			res.Events = append(res.Events, ev)
			for _, i := range order[offset:end] {
				if hits[i].EventID == ev.EventID() {
					res.Ranks = append(res.Ranks, scores[i])
					break
				}
			}
		}
		offset = end
	}
	if offset < len(order) || len(res.Events) >= limit {
		res.NextBatch = "r" + strconv.Itoa(offset)
	}
	return res, nil
}

// score rates how well text matches the terms: the share of its words that match a
// term, so a short message about the subject ranks above a long one mentioning it.
func score(terms []string, text string) float64 {
	words := Terms(text)
	if len(words) == 0 {
		return 0
	}
	n := 0
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		for _, t := range terms {
			if strings.HasPrefix(w, t) {
				n++
				break
			}
		}
	}
	return float64(n) / math.Sqrt(float64(len(words)))
}
