// Package httpapi holds what the writer's and the reader's HTTP APIs share:
// the one place where errors become HTTP answers (RFC 9457 problem+json),
// strict request decoding, health and metrics endpoints, and the server's
// lifecycle.
package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// ProblemContentType is the media type of every error answer.
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type      string              `json:"type"`
	Title     string              `json:"title"`
	Status    int                 `json:"status"`
	Detail    string              `json:"detail,omitempty"`
	Instance  string              `json:"instance,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
	Errors    []domain.FieldError `json:"errors,omitempty"`
}

// statusOf maps domain error codes to HTTP statuses. This table is the only
// place the mapping lives.
var statusOf = map[string]int{
	domain.EINVALID:         http.StatusBadRequest,
	domain.ENOTFOUND:        http.StatusNotFound,
	domain.ECONFLICT:        http.StatusConflict,
	domain.ESTALE:           http.StatusPreconditionFailed,
	domain.EKEYREUSED:       http.StatusUnprocessableEntity,
	domain.EUNAVAILABLE:     http.StatusServiceUnavailable,
	domain.EUNAUTHENTICATED: http.StatusUnauthorized,
	domain.EFORBIDDEN:       http.StatusForbidden,
	domain.ELIMITED:         http.StatusTooManyRequests,
	domain.EINTERNAL:        http.StatusInternalServerError,
}

// problemType names the kind of problem; clients may switch on it.
func problemType(status int, code string) string {
	if code != "" && code != domain.EINTERNAL {
		return "urn:sprockets:problem:" + code
	}
	return "about:blank"
}

// ErrorHandler returns Fiber's error handler: it turns every error a
// handler or Fiber itself returns into a problem+json answer. Internal
// errors are logged with the request id; the client sees a plain message.
func ErrorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		status, code, detail := http.StatusInternalServerError, domain.EINTERNAL, "internal error"
		var fields []domain.FieldError
		var fe *fiber.Error
		var de *domain.Error
		switch {
		case errors.As(err, &de):
			code, detail, fields = de.Code, de.Message, de.Fields
			status = statusOf[code]
			if status == 0 {
				status = http.StatusInternalServerError
			}
		case errors.As(err, &fe):
			status, code, detail = fe.Code, "", fe.Message
		}
		switch {
		case status == http.StatusServiceUnavailable && de != nil && de.Err != nil:
			log.Warn("dependency unavailable", "method", c.Method(), "path", c.Path(),
				"request_id", RequestID(c), "err", de.Err)
		case status >= 500 && status != http.StatusServiceUnavailable:
			log.Error("request failed", "method", c.Method(), "path", c.Path(),
				"request_id", RequestID(c), "err", err)
			detail = "internal error"
		}
		switch status {
		case http.StatusServiceUnavailable:
			c.Set(fiber.HeaderRetryAfter, "1")
		case http.StatusUnauthorized:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="sprockets"`)
		}
		return WriteProblem(c, Problem{
			Type: problemType(status, code), Title: http.StatusText(status), Status: status,
			Detail: detail, Instance: c.OriginalURL(), RequestID: RequestID(c), Errors: fields,
		})
	}
}

// WriteProblem sends p as the answer.
func WriteProblem(c *fiber.Ctx, p Problem) error {
	if len(p.Instance) > 256 {
		p.Instance = p.Instance[:256]
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, ProblemContentType)
	return c.Status(p.Status).Send(body)
}

// MethodNotAllowed answers 405 with Allow listing the methods the route
// serves. Register it with All after a route's real handlers.
func MethodNotAllowed(allow string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderAllow, allow)
		return fiber.NewError(http.StatusMethodNotAllowed,
			c.Method()+" is not allowed here; use "+allow)
	}
}
