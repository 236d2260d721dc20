package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi/filter"
)

// filterError turns a filter parse error into the Matrix error for the client.
func filterError(err error) error {
	var fe *filter.Error
	if errors.As(err, &fe) {
		if fe.NotJSON {
			return httputil.NotJSON("%s", fe.Msg)
		}
		return httputil.BadJSON("%s", fe.Msg)
	}
	return err
}

// postFilter serves POST /user/{userId}/filter: validates and stores a filter, returning its ID.
// The filter is stored as uploaded (compacted), unknown fields included, so that /sync
// can honour unstable extensions and GET returns what the client sent.
func (s *Server) postFilter(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if err := requireSelf(r, userID, "create filters"); err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if _, err := filter.Parse(body); err != nil {
		return nil, filterError(err)
	}
	var compact bytes.Buffer
	if len(bytes.TrimSpace(body)) == 0 {
		compact.WriteString("{}")
	} else if err := json.Compact(&compact, body); err != nil {
		return nil, httputil.NotJSON("Filter is not a JSON object")
	}
	var id int64
	err = s.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		var err error
		id, err = storage.InsertFilter(r.Context(), tx, userID, compact.Bytes())
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": strconv.FormatInt(id, 10)}, nil
}

// getFilter serves GET /user/{userId}/filter/{filterId}: the filter as stored.
func (s *Server) getFilter(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if err := requireSelf(r, userID, "read filters"); err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(pathVar(r, "filterId"), 10, 64)
	if err != nil {
		return nil, httputil.NotFound("No such filter")
	}
	f, err := storage.GetFilter(r.Context(), s.db, userID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("No such filter")
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(f), nil
}
