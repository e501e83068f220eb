package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

func testApp(t *testing.T) *fiber.App {
	t.Helper()
	return NewApp(ServerConfig{Name: "test", BodyLimit: 1024}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
}

type answer struct {
	status int
	header http.Header
	body   string
}

func send(t *testing.T, app *fiber.App, req *http.Request) answer {
	t.Helper()
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func TestErrorsBecomeProblems(t *testing.T) {
	app := testApp(t)
	errs := map[string]error{
		"invalid":  &domain.Error{Code: domain.EINVALID, Message: "teeth: bad", Fields: []domain.FieldError{{Field: "teeth", Message: "bad"}}},
		"missing":  domain.Errorf(domain.ENOTFOUND, "sprocket 4 not found"),
		"conflict": domain.Errorf(domain.ECONFLICT, "already recorded"),
		"stale":    domain.Errorf(domain.ESTALE, "version 3, not 2"),
		"reused":   domain.Errorf(domain.EKEYREUSED, "key reused"),
		"down":     domain.Errorf(domain.EUNAVAILABLE, "store down"),
		"internal": errors.New("pq: password authentication failed for user app"),
		"fiber":    fiber.NewError(http.StatusRequestEntityTooLarge, "Request Entity Too Large"),
	}
	for name, err := range errs {
		app.Get("/"+name, func(*fiber.Ctx) error { return err })
	}
	tests := []struct {
		path, ptype string
		status      int
		detail      string
	}{
		{"/invalid", "urn:sprockets:problem:invalid", 400, "teeth: bad"},
		{"/missing", "urn:sprockets:problem:not_found", 404, "sprocket 4 not found"},
		{"/conflict", "urn:sprockets:problem:conflict", 409, "already recorded"},
		{"/stale", "urn:sprockets:problem:stale", 412, "version 3, not 2"},
		{"/reused", "urn:sprockets:problem:key_reused", 422, "key reused"},
		{"/down", "urn:sprockets:problem:unavailable", 503, "store down"},
		{"/internal", "about:blank", 500, "internal error"},
		{"/fiber", "about:blank", 413, "Request Entity Too Large"},
		{"/nowhere", "about:blank", 404, "Cannot GET /nowhere"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			a := send(t, app, httptest.NewRequest("GET", tc.path, nil))
			if a.status != tc.status || a.header.Get("Content-Type") != ProblemContentType {
				t.Fatalf("got %d %s", a.status, a.header.Get("Content-Type"))
			}
			var p Problem
			if err := json.Unmarshal([]byte(a.body), &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != tc.ptype || p.Detail != tc.detail || p.Status != tc.status || p.Title == "" || p.RequestID == "" {
				t.Errorf("problem %+v", p)
			}
			if a.header.Get("X-Request-ID") != p.RequestID {
				t.Errorf("request id header %q, problem %q", a.header.Get("X-Request-ID"), p.RequestID)
			}
		})
	}
	if a := send(t, app, httptest.NewRequest("GET", "/invalid", nil)); !strings.Contains(a.body, `"errors":[{"field":"teeth"`) {
		t.Errorf("field errors missing: %s", a.body)
	}
}

func TestDecode(t *testing.T) {
	type body struct {
		Teeth int64   `json:"teeth"`
		Pitch float64 `json:"pitch"`
	}
	app := testApp(t)
	app.Post("/", func(c *fiber.Ctx) error {
		var b body
		if err := Decode(c, &b, JSON); err != nil {
			return err
		}
		return c.JSON(b)
	})
	tests := []struct {
		name, ctype, body string
		status            int
		mention           string
	}{
		{"valid", "application/json", `{"teeth":5,"pitch":1.5}`, 200, ""},
		{"charset is fine", "application/json; charset=utf-8", `{"teeth":5}`, 200, ""},
		{"wrong type", "text/plain", `{}`, 415, "Content-Type"},
		{"no type", "", `{}`, 415, "Content-Type"},
		{"empty", "application/json", "", 400, "empty"},
		{"syntax", "application/json", `{"teeth":}`, 400, "malformed JSON"},
		{"truncated", "application/json", `{"teeth":5`, 400, "ends too early"},
		{"unknown field", "application/json", `{"color":1}`, 400, "the fields are teeth, pitch"},
		{"string for integer", "application/json", `{"teeth":"5"}`, 400, "teeth: must be an integer"},
		{"overflow", "application/json", `{"teeth":1e40}`, 400, "teeth"},
		{"null", "application/json", `{"teeth":null}`, 400, "teeth: must not be null"},
		{"array", "application/json", `[1]`, 400, "JSON object"},
		{"trailing", "application/json", `{} []`, 400, "nothing after it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			a := send(t, app, req)
			if a.status != tc.status || !strings.Contains(a.body, tc.mention) {
				t.Errorf("got %d %s, want %d mentioning %q", a.status, a.body, tc.status, tc.mention)
			}
		})
	}
}

func TestParams(t *testing.T) {
	app := testApp(t)
	app.Get("/id/:id", func(c *fiber.Ctx) error {
		id, err := ID(c, "id")
		if err != nil {
			return err
		}
		return c.JSON(id)
	})
	app.Get("/dec/:x", func(c *fiber.Ctx) error {
		x, err := PathDecimal(c, "x")
		if err != nil {
			return err
		}
		return c.JSON(x)
	})
	ids, err := publicid.New("httpapi tests' key of 32 bytes!!")
	if err != nil {
		t.Fatal(err)
	}
	app.Get("/sprocket/:id", func(c *fiber.Ctx) error {
		n, err := PublicID(c, "id", ids, publicid.Sprocket, "sprocket")
		if err != nil {
			return err
		}
		return c.JSON(n)
	})
	app.Get("/page", func(c *fiber.Ctx) error {
		p, err := Page(c, ids, publicid.SprocketCursor)
		if err != nil {
			return err
		}
		return c.JSON(p)
	})
	tests := []struct {
		path   string
		status int
		body   string
	}{
		{"/id/1", 200, "1"},
		{"/id/9223372036854775807", 200, "9223372036854775807"},
		{"/id/9223372036854775808", 400, "out of range"},
		{"/id/0", 400, "positive integers"},
		{"/id/01", 400, "positive integers"},
		{"/id/-1", 400, "positive integers"},
		{"/id/1e3", 400, "positive integers"},
		{"/dec/6", 200, "6"},
		{"/dec/6.35", 200, "6.35"},
		{"/dec/NaN", 400, "plain decimal"},
		{"/dec/inf", 400, "plain decimal"},
		{"/dec/1e400", 400, "plain decimal"},
		{"/dec/0x10", 400, "plain decimal"},
		{"/dec/+1", 400, "plain decimal"},
		{"/dec/1_000", 400, "plain decimal"},
		{"/page", 200, `{"After":0,"Limit":50}`},
		{"/page?limit=500&cursor=" + ids.Encode(publicid.SprocketCursor, 41), 200, `{"After":41,"Limit":500}`},
		{"/page?cursor=" + ids.Encode(publicid.FactoryCursor, 41), 400, "cursor"},
		{"/page?limit=501", 400, "limit"},
		{"/page?cursor=YWZ0ZXI6NDE", 400, "cursor"}, // "after:41", as cursors once were
		{"/page?cursor=" + ids.Encode(publicid.Sprocket, 41), 400, "cursor"},
		{"/sprocket/" + ids.Encode(publicid.Sprocket, 41), 200, "41"},
		{"/sprocket/41", 400, "spr_"},
		{"/sprocket/" + ids.Encode(publicid.Factory, 41), 400, "not a valid sprocket id"},
		{"/sprocket/spr_AAAAAAAAAAAAAAAAAAAAAA", 404, "sprocket spr_AAAAAAAAAAAAAAAAAAAAAA not found"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			a := send(t, app, httptest.NewRequest("GET", tc.path, nil))
			if a.status != tc.status || !strings.Contains(a.body, tc.body) {
				t.Errorf("got %d %s, want %d with %q", a.status, a.body, tc.status, tc.body)
			}
		})
	}
}

func TestConditionalHeaders(t *testing.T) {
	app := testApp(t)
	app.Get("/r", func(c *fiber.Ctx) error {
		if NotModified(c, `"abc"`) {
			return c.SendStatus(304)
		}
		return c.SendString("body")
	})
	app.Put("/w", func(c *fiber.Ctx) error {
		v, err := IfMatch(c)
		if err != nil {
			return err
		}
		return c.JSON(v)
	})
	for inm, want := range map[string]int{`"abc"`: 304, `W/"abc"`: 304, `"x", "abc"`: 304, `*`: 304, `"abd"`: 200, ``: 200} {
		req := httptest.NewRequest("GET", "/r", nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		if a := send(t, app, req); a.status != want {
			t.Errorf("If-None-Match %s: %d, want %d", inm, a.status, want)
		}
	}
	for im, want := range map[string]string{``: "0", `*`: "0", `"3"`: "3", `W/"3"`: "412", `3`: "412", `"x"`: "412", `"1", "2"`: "400"} {
		req := httptest.NewRequest("PUT", "/w", nil)
		if im != "" {
			req.Header.Set("If-Match", im)
		}
		a := send(t, app, req)
		got := a.body
		if a.status != 200 {
			got = strconv.Itoa(a.status)
		}
		if got != want {
			t.Errorf("If-Match %s: %s, want %s", im, got, want)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	app := testApp(t)
	app.Post("/create", func(c *fiber.Ctx) error { return c.SendStatus(201) })
	app.All("/create", MethodNotAllowed("POST"))
	a := send(t, app, httptest.NewRequest("GET", "/create", nil))
	if a.status != 405 || a.header.Get("Allow") != "POST" || a.header.Get("Content-Type") != ProblemContentType {
		t.Errorf("GET: %d Allow %q %s", a.status, a.header.Get("Allow"), a.body)
	}
	if a := send(t, app, httptest.NewRequest("POST", "/create", nil)); a.status != 201 {
		t.Errorf("POST: %d", a.status)
	}
}

func TestUserAgentIsSafe(t *testing.T) {
	app := testApp(t)
	app.Get("/", func(c *fiber.Ctx) error { return c.SendString(UserAgent(c)) })
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("User-Agent", "evil\x1b[31m"+strings.Repeat("x", 500))
	a := send(t, app, req)
	if strings.ContainsRune(a.body, 0x1b) || len(a.body) > 300 || !strings.HasPrefix(a.body, `evil'\x1b'`) {
		t.Errorf("user agent %q", a.body)
	}
}

// Readiness says which dependency failed, not how: no hosts or users; and
// readiness and metrics refuse requests that came through a proxy.
func TestHealthKeepsDetailsInside(t *testing.T) {
	app := testApp(t)
	var logged strings.Builder
	Health(app,
		map[string]Check{"postgres": func(context.Context) error {
			return errors.New("dial tcp 10.1.2.3:5432: connect: connection refused (user admin)")
		}},
		map[string]Check{"redis": func(context.Context) error { return nil }},
		prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logged, nil)))
	a := send(t, app, httptest.NewRequest("GET", "/readyz", nil))
	if a.status != 503 || strings.Contains(a.body, "10.1.2.3") || strings.Contains(a.body, "admin") ||
		!strings.Contains(a.body, `"postgres":"unavailable"`) || !strings.Contains(a.body, `"redis":"ok"`) {
		t.Errorf("/readyz: %d %s", a.status, a.body)
	}
	if !strings.Contains(logged.String(), "10.1.2.3") {
		t.Errorf("the failure was not logged: %q", logged.String())
	}
	for _, path := range []string{"/readyz", "/metrics"} {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		if a := send(t, app, req); a.status != 404 {
			t.Errorf("%s through a proxy: %d", path, a.status)
		}
	}
	if a := send(t, app, httptest.NewRequest("GET", "/metrics", nil)); a.status != 200 {
		t.Errorf("/metrics on the program's port: %d", a.status)
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "curl/8.5 (x86_64) é", "curl/8.5 (x86_64) é"},
		{"C0 and DEL", "a\x1b[31mb\x07c\x7f", `a'\x1b'[31mb'\a'c'\x7f'`},
		{"C1", "a\u0085b\u009bc", `a'\u0085'b'\u009b'c`},
		{"bidi override", "admin\u202egnp.exe", `admin'\u202e'gnp.exe`},
		{"bidi isolate", "x\u2066y\u2069", `x'\u2066'y'\u2069'`},
		{"line separator", "a\u2028b", `a'\u2028'b`},
		{"not UTF-8", "a\xffb", `a'\xff'b`},
		{"a real replacement character", "a\uFFFDb", "a\uFFFDb"},
		{"cut", "abcdef", "abc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			max := 64
			if tc.name == "cut" {
				max = 3
			}
			if got := Escape(tc.in, max); got != tc.want {
				t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
