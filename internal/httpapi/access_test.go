package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/budget"
	"github.com/sprockets-api/sprockets/internal/domain"
)

type fakeAuthn map[string]domain.Principal

// Authenticate knows its tokens as if held; any other is looked up, after
// admit, and unknown.
func (f fakeAuthn) Authenticate(_ context.Context, tok string, admit auth.Admit) (domain.Principal, error) {
	if p, ok := f[tok]; ok {
		return p, nil
	}
	if err := admit(); err != nil {
		return domain.Principal{}, err
	}
	return domain.Principal{}, auth.ErrUnauthenticated
}

// fakeBudgets counts spending per key against a fixed budget of one
// second's worth; a refund gives back.
type fakeBudgets struct {
	spent map[string]int
	local bool // the store is down: decisions are local
}

func (b *fakeBudgets) Charge(_ context.Context, key string, perSecond int) budget.Decision {
	d := budget.Decision{PerSecond: perSecond, Local: b.local, ResetAfter: time.Second}
	if b.spent[key] < perSecond {
		b.spent[key]++
		d.Allowed = true
	} else {
		d.RetryAfter = 100 * time.Millisecond
	}
	d.Remaining = perSecond - b.spent[key]
	return d
}

func (b *fakeBudgets) Refund(key string) { b.spent[key] = max(b.spent[key]-1, 0) }

func accessApp(t *testing.T, lim *fakeBudgets, cfg AccessConfig) *fiber.App {
	t.Helper()
	app := testApp(t)
	Health(app, nil, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	authn := fakeAuthn{
		"reader": {OrgID: 1, TokenID: 1, Scopes: []string{domain.ScopeRead}},
		"writer": {OrgID: 1, TokenID: 2, Scopes: []string{domain.ScopeWrite}, RateLimit: 2},
	}
	app.Use(Access(authn, lim, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))))
	app.Get("/r", Require(domain.ScopeRead), func(c *fiber.Ctx) error {
		if NotModified(c, `"x"`) {
			return c.SendStatus(304)
		}
		return c.JSON(PrincipalOf(c).OrgID)
	})
	app.Post("/w", Require(domain.ScopeWrite), func(c *fiber.Ctx) error { return c.SendStatus(201) })
	return app
}

func request(method, path, token string, header ...string) *http.Request {
	r := httptest.NewRequest(method, path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

func TestAccess(t *testing.T) {
	lim := &fakeBudgets{spent: map[string]int{}}
	app := accessApp(t, lim, AccessConfig{RateLimit: 3, AnonymousRateLimit: 2})
	tests := []struct {
		name, method, path, token string
		status                    int
	}{
		{"probes need no token", "GET", "/healthz", "", 200},
		{"no token", "GET", "/r", "", 401},
		{"unknown token", "GET", "/r", "nope", 401},
		{"read with read", "GET", "/r", "reader", 200},
		{"write with read", "POST", "/w", "reader", 403},
		{"read with write", "GET", "/r", "writer", 403},
		{"write with write", "POST", "/w", "writer", 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := send(t, app, request(tc.method, tc.path, tc.token))
			if a.status != tc.status {
				t.Fatalf("got %d %s, want %d", a.status, a.body, tc.status)
			}
		})
	}
	// The writer token's organization allows 2 per second: it spent 2 above.
	a := send(t, app, request("POST", "/w", "writer"))
	if a.status != 429 || a.header.Get("Retry-After") != "1" || a.header.Get("RateLimit-Policy") != `"default";q=2;w=1` ||
		a.header.Get("RateLimit") != `"default";r=0;t=1` {
		t.Errorf("over the budget: %d %v", a.status, a.header)
	}
	// 304s are refunded; other answers to conditional requests are charged.
	for i := 0; i < 5; i++ {
		if a := send(t, app, request("GET", "/r", "reader", "If-None-Match", `"x"`)); a.status != 304 {
			t.Fatalf("conditional read %d: %d", i, a.status)
		}
	}
	if lim.spent["token:1"] != 2 { // the two reads of the table above
		t.Errorf("304s were not refunded: spent %d", lim.spent["token:1"])
	}
	send(t, app, request("GET", "/r", "reader", "If-None-Match", `"y"`))
	if lim.spent["token:1"] != 3 {
		t.Errorf("a conditional read answered 200 was not charged: spent %d", lim.spent["token:1"])
	}
	// With the budget spent, a conditional request is refused like any
	// other, even one that would be a 304: it is charged before it is
	// served.
	if a := send(t, app, request("GET", "/r", "reader", "If-None-Match", `"x"`)); a.status != 429 {
		t.Errorf("a conditional read over the budget: %d", a.status)
	}
	// Without a valid token, the address's budget (2) was spent by the
	// table, each request once, the unknown token's for its lookup.
	if lim.spent["ip:0.0.0.0"] != 2 {
		t.Errorf("the address was charged %d for two requests", lim.spent["ip:0.0.0.0"])
	}
	if a := send(t, app, request("GET", "/r", "")); a.status != 429 {
		t.Errorf("anonymous over budget: %d", a.status)
	}
	// An unknown token past the address's budget is refused before it is
	// looked up.
	if a := send(t, app, request("GET", "/r", "made-up")); a.status != 429 {
		t.Errorf("an unknown token over the address's budget: %d", a.status)
	}
	// A limiter outage keeps the limit, locally.
	lim.local = true
	if a := send(t, app, request("GET", "/r", "reader")); a.status != 429 {
		t.Errorf("with the limiter down, over the budget: %d", a.status)
	}
}

func TestPublicReads(t *testing.T) {
	app := accessApp(t, &fakeBudgets{spent: map[string]int{}}, AccessConfig{PublicReads: true, PublicOrg: 9, RateLimit: 10, AnonymousRateLimit: 10})
	if a := send(t, app, request("GET", "/r", "")); a.status != 200 || a.body != "9" {
		t.Errorf("a public read: %d %s", a.status, a.body)
	}
	if a := send(t, app, request("POST", "/w", "")); a.status != 401 {
		t.Errorf("a write without a token in public-read mode: %d", a.status)
	}
	if a := send(t, app, request("GET", "/r", "reader")); a.status != 200 || a.body != "1" {
		t.Errorf("a token's read in public-read mode: %d %s", a.status, a.body)
	}
}
