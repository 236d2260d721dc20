package httputil

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// Response is a JSON body with a non-200 status or extra headers.
type Response struct {
	Status  int
	Body    any
	Headers map[string]string
}

// jsonContentType is the Content-Type of JSON answers, one shared slice (see setCORS
// in clientapi: net/http only reads header values).
var jsonContentType = []string{"application/json"}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteResult writes a handler's result: a Response, raw JSON bytes, or any value marshalled with status 200.
func WriteResult(w http.ResponseWriter, v any) {
	switch r := v.(type) {
	case Response:
		for k, val := range r.Headers {
			w.Header().Set(k, val)
		}
		status := r.Status
		if status == 0 {
			status = http.StatusOK
		}
		WriteJSON(w, status, r.Body)
	case *Response:
		WriteResult(w, *r)
	case json.RawMessage:
		w.Header()["Content-Type"] = jsonContentType
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(r)
	case nil:
		WriteJSON(w, http.StatusOK, struct{}{})
	default:
		WriteJSON(w, http.StatusOK, v)
	}
}

// WriteError renders err as a Matrix error. Unexpected errors are logged with the request ID
// and answered with a generic 500 so internals are never shown to the client.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e, ok := AsError(err)
	if !ok {
		logrus.WithFields(logrus.Fields{
			"request_id": RequestID(r.Context()),
			"method":     r.Method,
			"path":       r.URL.Path,
		}).WithError(err).Error("internal error")
	}
	body := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		body[k] = v
	}
	// A UIA challenge (401 with flows and no failed stage) carries no errcode.
	if e.Code != "" {
		body["errcode"] = e.Code
		body["error"] = e.Msg
	}
	if ms, ok := e.Extra["retry_after_ms"].(int64); ok && e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	}
	WriteJSON(w, e.Status, body)
}

// ReadBody reads the whole request body, answering M_TOO_LARGE when it is over the limit
// that the server's middleware set with http.MaxBytesReader.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, TooLarge("Request body is larger than %d bytes", mbe.Limit)
		}
		return nil, Unknown("Could not read request body")
	}
	return body, nil
}

// DecodeJSON reads the request body into v: M_NOT_JSON when it is not JSON (or not
// UTF-8), M_BAD_JSON when it is JSON but not an object or a field has the wrong type,
// M_TOO_LARGE when too big.
// An empty body counts as {} so endpoints whose fields are all optional accept it.
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r)
	if err != nil {
		return err
	}
	return UnmarshalBody(body, v)
}

// UnmarshalBody applies DecodeJSON's rules to an already-read body.
func UnmarshalBody(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if !utf8.Valid(body) {
		return NotJSON("Request body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return NotJSON("Request body is not valid JSON")
	}
	if body[0] != '{' {
		// JSON, but the wrong kind: M_BAD_JSON, as Synapse and Complement expect.
		return BadJSON("Request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field != "" {
				return BadJSON("Field %q has the wrong type: expected %s", te.Field, te.Type.String())
			}
			return BadJSON("Wrong JSON type: expected %s", te.Type.String())
		}
		return BadJSON("Malformed JSON: %v", err)
	}
	return nil
}
