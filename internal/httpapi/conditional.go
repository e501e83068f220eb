package httpapi

import (
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// NotModified reports whether the request's If-None-Match matches etag
// (weak comparison, as RFC 9110 prescribes for this header).
func NotModified(c *fiber.Ctx, etag string) bool {
	inm := c.Get(fiber.HeaderIfNoneMatch)
	if inm == "" || etag == "" {
		return false
	}
	if strings.TrimSpace(inm) == "*" {
		return true
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, t := range strings.Split(inm, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == want {
			return true
		}
	}
	return false
}

// IfMatch returns the version a write's If-Match names, 0 when the header is
// absent or "*". An ETag that can never match (weak, malformed) gives an
// ESTALE error, as a failed precondition.
func IfMatch(c *fiber.Ctx) (int64, error) {
	raw := strings.TrimSpace(c.Get(fiber.HeaderIfMatch))
	if raw == "" || raw == "*" {
		return 0, nil
	}
	if strings.Contains(raw, ",") {
		return 0, domain.Errorf(domain.EINVALID, "If-Match: send the one ETag you read")
	}
	unq, ok := strings.CutPrefix(raw, `"`)
	if ok {
		unq, ok = strings.CutSuffix(unq, `"`)
	}
	v, err := strconv.ParseInt(unq, 10, 64)
	if !ok || err != nil || v < 1 {
		return 0, domain.Errorf(domain.ESTALE, "If-Match %s matches no version of this resource", quote(raw))
	}
	return v, nil
}

// IdempotencyKey returns the request's Idempotency-Key, "" when absent, or
// an EINVALID error when it is too long or not printable ASCII.
func IdempotencyKey(c *fiber.Ctx) (string, error) {
	k := c.Get("Idempotency-Key")
	if k == "" {
		return "", nil
	}
	if !printable(k, domain.MaxIdempotencyKeyLen) {
		return "", domain.Errorf(domain.EINVALID,
			"Idempotency-Key must be 1 to %d printable ASCII characters", domain.MaxIdempotencyKeyLen)
	}
	return k, nil
}
