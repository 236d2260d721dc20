// Package httputil renders Matrix errors and JSON responses and parses request
// bodies with the spec's error codes. Handlers return errors; WriteError is the
// one place they become HTTP responses.
package httputil

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Error is a Matrix error with its HTTP status: {"errcode": Code, "error": Msg, ...Extra}.
type Error struct {
	Status int
	Code   string
	Msg    string
	// Extra holds additional top-level fields (retry_after_ms, soft_logout, ...).
	Extra map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg) }

// With returns a copy of e carrying an extra top-level field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// NewError builds an Error.
func NewError(status int, code, format string, args ...any) *Error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Status: status, Code: code, Msg: msg}
}

// Constructors for the common cases, named after their error codes.
func Forbidden(format string, args ...any) *Error {
	return NewError(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func BadJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return NewError(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}
func Unrecognized(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, "M_UNRECOGNIZED", format, args...)
}
func UnknownToken(format string, args ...any) *Error {
	return NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", format, args...)
}
func MissingToken(format string, args ...any) *Error {
	return NewError(http.StatusUnauthorized, "M_MISSING_TOKEN", format, args...)
}
func Unknown(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_UNKNOWN", format, args...)
}

// LimitExceeded is M_LIMIT_EXCEEDED with the retry hint in both the body and the Retry-After header.
func LimitExceeded(retryAfterMS int64) *Error {
	return NewError(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests").With("retry_after_ms", retryAfterMS)
}

// statusForCode maps errors from lower components (gomatrixserverlib's spec.MatrixError)
// to the HTTP status the spec gives their code.
var statusForCode = map[spec.MatrixErrorCode]int{
	spec.ErrorForbidden:               http.StatusForbidden,
	spec.ErrorGuestAccessForbidden:    http.StatusForbidden,
	spec.ErrorNotFound:                http.StatusNotFound,
	spec.ErrorUnrecognized:            http.StatusNotFound,
	spec.ErrorUnknownToken:            http.StatusUnauthorized,
	spec.ErrorMissingToken:            http.StatusUnauthorized,
	spec.ErrorLimitExceeded:           http.StatusTooManyRequests,
	spec.ErrorUserInUse:               http.StatusBadRequest,
	spec.ErrorRoomInUse:               http.StatusBadRequest,
	spec.ErrorUnableToAuthoriseJoin:   http.StatusForbidden,
	spec.ErrorServerNotTrusted:        http.StatusUnauthorized,
	spec.ErrorWrongRoomKeysVersion:    http.StatusForbidden,
	spec.ErrorIncompatibleRoomVersion: http.StatusBadRequest,
	spec.ErrorUnsupportedRoomVersion:  http.StatusBadRequest,
	"M_TOO_LARGE":                     http.StatusRequestEntityTooLarge,
	"M_USER_DEACTIVATED":              http.StatusForbidden,
	"M_UNAUTHORIZED":                  http.StatusUnauthorized,
}

// AsError converts any error into a Matrix error. Errors that are not Matrix errors
// become a generic 500 so internal details never reach clients; ok is false for them.
func AsError(err error) (e *Error, ok bool) {
	var he *Error
	if errors.As(err, &he) {
		return he, true
	}
	var le spec.LimitExceededError
	if errors.As(err, &le) {
		return LimitExceeded(le.RetryAfterMS), true
	}
	var me spec.MatrixError
	if errors.As(err, &me) {
		status, found := statusForCode[me.ErrCode]
		if !found {
			status = http.StatusBadRequest
		}
		return &Error{Status: status, Code: string(me.ErrCode), Msg: me.Err}, true
	}
	var mp *spec.MatrixError
	if errors.As(err, &mp) {
		return AsError(*mp)
	}
	var ir spec.IncompatibleRoomVersionError
	if errors.As(err, &ir) {
		return NewError(http.StatusBadRequest, string(spec.ErrorIncompatibleRoomVersion), "%s", ir.Err).With("room_version", ir.RoomVersion), true
	}
	return NewError(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error"), false
}
