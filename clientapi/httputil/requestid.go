package httputil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

type requestIDKey struct{}

// WithRequestID returns a context carrying a new random request ID, used to correlate log lines.
func WithRequestID(ctx context.Context) (context.Context, string) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	return context.WithValue(ctx, requestIDKey{}, id), id
}

// RequestID returns the request's correlation ID, or "" outside a request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
