package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/syncapi"
)

// postReceipt serves POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (s *Server) postReceipt(r *http.Request) (any, error) {
	var body struct {
		ThreadID string `json:"thread_id"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	if err := s.sync.PostReceipt(r.Context(), pathVar(r, "roomId"), d.UserID, pathVar(r, "receiptType"), pathVar(r, "eventId"), body.ThreadID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// postReadMarkers serves POST /rooms/{roomId}/read_markers.
func (s *Server) postReadMarkers(r *http.Request) (any, error) {
	var body struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	d := requestDevice(r)
	roomID := pathVar(r, "roomId")
	for _, m := range []struct{ typ, eventID string }{
		{syncapi.FullyRead, body.FullyRead}, {syncapi.ReceiptRead, body.Read}, {syncapi.ReceiptReadPrivate, body.ReadPrivate},
	} {
		if m.eventID == "" {
			continue
		}
		if err := s.sync.PostReceipt(r.Context(), roomID, d.UserID, m.typ, m.eventID, ""); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// decodeOptionalJSON decodes a JSON object body; an empty body is the empty object.
func decodeOptionalJSON(r *http.Request, v any) error {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	return httputil.UnmarshalBody(body, v)
}
