// Package httpapitest holds what the tests of the read and write APIs
// share: a codec of /v1 ids, an authenticator that admits every request as
// one principal,
// budgets that refuse nothing, and the check every fuzz target makes of an
// answer.
package httpapitest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/budget"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// IDs returns a codec of /v1 ids under a fixed test key.
func IDs() *publicid.Codec {
	c, err := publicid.New("the key of the API tests' ids, 32+ bytes")
	if err != nil {
		panic(err)
	}
	return c
}

// As authenticates every request as the principal it is.
type As domain.Principal

func (a As) Authenticate(context.Context, string, auth.Admit) (domain.Principal, error) {
	return domain.Principal(a), nil
}

// Unlimited admits every request.
type Unlimited struct{}

func (Unlimited) Charge(context.Context, string, int) budget.Decision {
	return budget.Decision{Allowed: true, PerSecond: 1000, Remaining: 1000, ResetAfter: time.Second}
}

func (Unlimited) Refund(string) {}

// SetHeaders sets each header of headers that a client could send: not
// empty, and without CR, LF or NUL.
func SetHeaders(req *http.Request, headers map[string]string) {
	for name, v := range headers {
		if v != "" && !strings.ContainsAny(v, "\r\n\x00") {
			req.Header.Set(name, v)
		}
	}
}

// CheckAnswer sends req to app and fails t, naming the request as what,
// when the answer is a 5xx, or an error that is not problem+json but for
// the statuses in plain. A request the server's parser refuses outright
// is no answer of the API's, and passes.
func CheckAnswer(t *testing.T, app *fiber.App, req *http.Request, what string, plain ...int) {
	t.Helper()
	resp, err := app.Test(req, -1)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d %s", what, resp.StatusCode, b)
	}
	for _, status := range plain {
		if resp.StatusCode == status {
			return
		}
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != httpapi.ProblemContentType {
		t.Fatalf("%s: %d with Content-Type %q", what, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
