package httpapi

import (
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// digits reports whether s is 1 to max ASCII digits. The path parameters
// are checked with it, not with regular expressions: every cached read
// parses an id, and a regexp match cost it 2% of its time.
func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// idDigits: 1 to 19 digits, the first not 0.
func idDigits(s string) bool { return digits(s, 19) && s[0] != '0' }

// decimalDigits: plain decimals only, 1 to 15 digits, then optionally a
// point and 1 to 15 digits; no sign, exponent, hex, NaN or Infinity, which
// strconv.ParseFloat would otherwise accept.
func decimalDigits(s string) bool {
	whole, frac, point := strings.Cut(s, ".")
	return digits(whole, 15) && (!point || digits(frac, 15))
}

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
	if !idDigits(raw) {
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
	if !digits(raw, 18) {
		return 0, invalid(name, "%s is not a whole number", quote(raw))
	}
	return strconv.ParseInt(raw, 10, 64)
}

// PathDecimal parses a plain non-negative decimal path value such as 6 or
// 6.35; range rules are the domain's.
func PathDecimal(c *fiber.Ctx, name string) (float64, error) {
	raw := c.Params(name)
	if !decimalDigits(raw) {
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

// PublicID parses the /v1 id of a resource of kind from the path, and
// returns its number. Something that is not shaped like such an id is
// invalid; one shaped like it that ids did not make names nothing, and is
// not found, as an id of another organization's resource would be.
func PublicID(c *fiber.Ctx, name string, ids *publicid.Codec, kind publicid.Kind, what string) (int64, error) {
	raw := c.Params(name)
	if !publicid.Shaped(kind, raw) {
		return 0, invalid(name, "%s is not a valid %s id; %s ids look like %s", quote(raw), what, what, kind.Example())
	}
	n, ok := ids.Decode(kind, raw)
	if !ok {
		return 0, domain.Errorf(domain.ENOTFOUND, "%s %s not found", what, raw)
	}
	return n, nil
}

// Page reads the limit and cursor query parameters of a list endpoint;
// ids opens the cursor, which must be of kind (the list's): the id of the
// last item of the page before, sealed by ids.Encode, so that it says
// nothing of how many items there are.
func Page(c *fiber.Ctx, ids *publicid.Codec, kind publicid.Kind) (domain.PageRequest, error) {
	limit, err := QueryInt(c, "limit", domain.DefaultPageSize, 1, domain.MaxPageSize)
	if err != nil {
		return domain.PageRequest{}, err
	}
	after := int64(0)
	if raw := c.Query("cursor"); raw != "" {
		var ok bool
		if after, ok = ids.Decode(kind, raw); !ok {
			return domain.PageRequest{}, invalid("cursor", "%s is not a cursor this API issued", quote(raw))
		}
	}
	return domain.PageRequest{After: after, Limit: int(limit)}, nil
}

// QueryIDs parses an optional comma-separated list of at most most /v1 ids
// of kind: a set of their numbers, empty when absent.
func QueryIDs(c *fiber.Ctx, name string, ids *publicid.Codec, kind publicid.Kind, what string, most int) (map[int64]bool, error) {
	out := map[int64]bool{}
	raw := c.Query(name)
	if raw == "" {
		return out, nil
	}
	parts := strings.Split(raw, ",")
	if len(parts) > most {
		return nil, invalid(name, "at most %d %s ids, not %d", most, what, len(parts))
	}
	for _, p := range parts {
		n, ok := ids.Decode(kind, p)
		if !ok {
			return nil, invalid(name, "%s is not a valid %s id; %s ids look like %s", quote(p), what, what, kind.Example())
		}
		out[n] = true
	}
	return out, nil
}

// QueryChoices parses an optional comma-separated list of names from
// allowed: a set of them, empty when absent.
func QueryChoices(c *fiber.Ctx, name string, allowed ...string) (map[string]bool, error) {
	out := map[string]bool{}
	raw := c.Query(name)
	if raw == "" {
		return out, nil
	}
	for _, p := range strings.Split(raw, ",") {
		if !slices.Contains(allowed, p) {
			return nil, invalid(name, "%s is not one of %s", quote(p), strings.Join(allowed, ", "))
		}
		out[p] = true
	}
	return out, nil
}
