package httpapi

import (
	"encoding/base64"
	"regexp"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
)

var (
	idPattern      = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	integerPattern = regexp.MustCompile(`^[0-9]{1,18}$`)
	// Plain decimals only: no sign, exponent, hex, NaN or Infinity, which
	// strconv.ParseFloat would otherwise accept.
	decimalPattern = regexp.MustCompile(`^[0-9]{1,15}(\.[0-9]{1,15})?$`)
)

func invalid(field, format string, args ...any) *domain.Error {
	e := domain.Errorf(domain.EINVALID, format, args...)
	e.Fields = []domain.FieldError{{Field: field, Message: e.Message}}
	e.Message = field + ": " + e.Message
	return e
}

// quote shows a client's value in an error message, shortened and escaped.
func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strconv.Quote(s)
}

// ID parses a resource id from the path: a positive integer that fits in
// 63 bits.
func ID(c *fiber.Ctx, name string) (int64, error) {
	raw := c.Params(name)
	if !idPattern.MatchString(raw) {
		return 0, invalid(name, "%s is not a valid id; ids are positive integers", quote(raw))
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, invalid(name, "%s is out of range", quote(raw))
	}
	return id, nil
}

// PathInteger parses a non-negative integer path value; range rules are the
// domain's.
func PathInteger(c *fiber.Ctx, name string) (int64, error) {
	raw := c.Params(name)
	if !integerPattern.MatchString(raw) {
		return 0, invalid(name, "%s is not a whole number", quote(raw))
	}
	return strconv.ParseInt(raw, 10, 64)
}

// PathDecimal parses a plain non-negative decimal path value such as 6 or
// 6.35; range rules are the domain's.
func PathDecimal(c *fiber.Ctx, name string) (float64, error) {
	raw := c.Params(name)
	if !decimalPattern.MatchString(raw) {
		return 0, invalid(name, "%s is not a plain decimal number such as 6 or 6.35", quote(raw))
	}
	return strconv.ParseFloat(raw, 64)
}

// QueryInt parses an optional integer query parameter within [lo, hi];
// absent gives def.
func QueryInt(c *fiber.Ctx, name string, def, lo, hi int64) (int64, error) {
	raw := c.Query(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, invalid(name, "%s must be an integer from %d to %d", quote(raw), lo, hi)
	}
	return n, nil
}

// Page reads the limit and cursor query parameters of a list endpoint.
func Page(c *fiber.Ctx) (domain.PageRequest, error) {
	limit, err := QueryInt(c, "limit", domain.DefaultPageSize, 1, domain.MaxPageSize)
	if err != nil {
		return domain.PageRequest{}, err
	}
	after := int64(0)
	if raw := c.Query("cursor"); raw != "" {
		if after, err = parseCursor(raw); err != nil {
			return domain.PageRequest{}, err
		}
	}
	return domain.PageRequest{After: after, Limit: int(limit)}, nil
}

// Cursor returns the opaque cursor of the page after the item with id.
func Cursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("after:" + strconv.FormatInt(id, 10)))
}

func parseCursor(raw string) (int64, error) {
	bad := invalid("cursor", "%s is not a cursor this API issued", quote(raw))
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return 0, bad
	}
	n, ok := strings.CutPrefix(string(b), "after:")
	if !ok {
		return 0, bad
	}
	id, err := strconv.ParseInt(n, 10, 64)
	if err != nil || id < 1 {
		return 0, bad
	}
	return id, nil
}
