package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Media types accepted for request bodies.
const (
	JSON       = "application/json"
	MergePatch = "application/merge-patch+json"
)

// Decode reads the request body into v, which must be a pointer to a struct.
// The Content-Type must be one of accept (415 otherwise); the body must be
// exactly one JSON object with no unknown fields and no explicit nulls
// (EINVALID otherwise).
func Decode(c *fiber.Ctx, v any, accept ...string) error {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || !contains(accept, mt) {
		return fiber.NewError(http.StatusUnsupportedMediaType,
			"Content-Type must be "+strings.Join(accept, " or "))
	}
	body := c.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return domain.Errorf(domain.EINVALID, "the request body is empty; send a JSON object")
	}
	if err := rejectNulls(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, v)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Errorf(domain.EINVALID, "the request body must hold one JSON object and nothing after it")
	}
	return nil
}

// rejectNulls refuses top-level members set to null: no field of this API
// can be removed, and treating null as "absent" would hide client bugs.
func rejectNulls(body []byte) error {
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return nil // not an object: the typed decode reports it
	}
	for name, raw := range members {
		if string(bytes.TrimSpace(raw)) == "null" {
			return &domain.Error{Code: domain.EINVALID, Message: name + ": must not be null",
				Fields: []domain.FieldError{{Field: name, Message: "must not be null"}}}
		}
	}
	return nil
}

func decodeError(err error, v any) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return domain.Errorf(domain.EINVALID, "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.EINVALID, "malformed JSON: the body ends too early")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return domain.Errorf(domain.EINVALID, "the request body must be a JSON object, not %s", typ.Value)
		}
		msg := fmt.Sprintf("must be %s, not %s", describe(typ.Type), typ.Value)
		return &domain.Error{Code: domain.EINVALID, Message: field + ": " + msg,
			Fields: []domain.FieldError{{Field: field, Message: msg}}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return domain.Errorf(domain.EINVALID, "unknown field %s; the fields are %s", name, fieldNames(v))
	}
	return domain.Errorf(domain.EINVALID, "malformed JSON: %v", err)
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number in range"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return describe(t.Elem())
	}
	return t.String()
}

// fieldNames lists the JSON names of v's fields, for error messages.
func fieldNames(v any) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				names = append(names, name)
			}
		}
	}
	if t.Kind() == reflect.Struct {
		walk(t)
	}
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
