package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// POST /user_directory/search {search_term, limit}: the users who share a room with
// the searcher or are in a room published in the directory, whose user ID or display
// name contains the term (case-insensitively).

const (
	defaultUserDirectoryLimit = 10
	maxUserDirectoryLimit     = 100
)

type userDirectoryResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// postUserDirectorySearch serves POST /user_directory/search.
func (s *Server) postUserDirectorySearch(r *http.Request) (any, error) {
	d := requestDevice(r)
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.SearchTerm == nil {
		return nil, httputil.MissingParam("search_term is required")
	}
	limit := defaultUserDirectoryLimit
	if body.Limit != nil {
		if *body.Limit < 0 {
			return nil, httputil.InvalidParam("limit must not be negative")
		}
		if *body.Limit > 0 {
			limit = min(*body.Limit, maxUserDirectoryLimit)
		}
	}
	entries, limited, err := storage.SearchUserDirectory(r.Context(), s.db, d.UserID, *body.SearchTerm, limit)
	if err != nil {
		return nil, err
	}
	results := make([]userDirectoryResult, 0, len(entries))
	for _, e := range entries {
		results = append(results, userDirectoryResult{UserID: e.UserID, DisplayName: e.DisplayName, AvatarURL: e.AvatarURL})
	}
	return map[string]any{"results": results, "limited": limited}, nil
}
