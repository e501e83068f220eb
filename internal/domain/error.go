// Package domain holds the entities of the sprockets service, their
// validation rules and the kinds of error the rest of the code speaks in.
// It imports the standard library only.
package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Error codes. Each names a kind of failure a client can act on; the HTTP
// layer maps them to status codes in one place.
const (
	EINVALID         = "invalid"         // the request is malformed or breaks a data rule
	ENOTFOUND        = "not_found"       // no such resource, or not the caller's
	ECONFLICT        = "conflict"        // the request contradicts stored data
	ESTALE           = "stale"           // If-Match named a version that is no longer current
	EKEYREUSED       = "key_reused"      // an Idempotency-Key was reused with another request
	EUNAUTHENTICATED = "unauthenticated" // no valid credentials
	EFORBIDDEN       = "forbidden"       // valid credentials without the scope needed
	ELIMITED         = "rate_limited"    // over the request budget
	EINTERNAL        = "internal"        // anything else; never shown to clients in detail
	EUNAVAILABLE     = "unavailable"     // a dependency needed for the answer is down
)

// Error is a failure with a code and a message safe to show to a client.
type Error struct {
	Code    string
	Message string
	// Fields lists, for EINVALID, which inputs were wrong and why.
	Fields []FieldError
	// Err is the failure behind it, for logs (EUNAVAILABLE: which
	// dependency failed, and how); never shown to clients.
	Err error
}

// Unwrap returns the failure behind e, if any.
func (e *Error) Unwrap() error { return e.Err }

// FieldError says what is wrong with one input.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err: the *Error's message,
// or a generic one for internal errors so that no detail leaks.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// validation collects field errors so that a client learns every problem with
// its request at once rather than one per round trip.
type validation struct{ fields []FieldError }

func (v *validation) add(field, format string, args ...any) {
	v.fields = append(v.fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validation) err() error {
	if len(v.fields) == 0 {
		return nil
	}
	msgs := make([]string, len(v.fields))
	for i, f := range v.fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	return &Error{Code: EINVALID, Message: strings.Join(msgs, "; "), Fields: v.fields}
}
