package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// viaSlog is the line slog's handler of format writes for r: what the
// access log wrote before it encoded JSON by hand, and what every other
// line of a program looks like.
func viaSlog(format string, r accessRecord) string {
	var out bytes.Buffer
	var h slog.Handler = slog.NewJSONHandler(&out, nil)
	if format == "text" {
		h = slog.NewTextHandler(&out, nil)
	}
	h = h.WithAttrs([]slog.Attr{slog.String("program", "reader")})
	rec := slog.NewRecord(r.end, slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("method", r.method), slog.String("path", r.path), slog.Int("status", r.status),
		slog.Float64("duration_ms", float64(r.elapsed.Microseconds())/1000), slog.String("request_id", r.requestID),
		slog.String("user_agent", r.userAgent), slog.String("client", r.client))
	if r.clientRequestID != "" {
		rec.AddAttrs(slog.String("client_request_id", r.clientRequestID))
	}
	_ = h.Handle(context.Background(), rec)
	return out.String()
}

func viaAccessLog(format string, r accessRecord) string {
	var out bytes.Buffer
	NewAccessLog(&out, format, "reader").write(r)
	return out.String()
}

// FuzzAccessLogMatchesSlog checks the hand-written JSON line against
// slog's, byte for byte, for any path, header values and timing: escapes,
// bytes that are not UTF-8, separators, and durations of every size.
func FuzzAccessLogMatchesSlog(f *testing.F) {
	f.Add("GET", "/api/factory/1", 200, int64(547), "curl/8.0", "", int64(0))
	f.Add("POST", "/a\"b\\c\n\r\t\x00\x1f\x7f", 503, int64(1), "\u2028\u2029\u202e<>&", "x\xff\xfey", int64(1))
	f.Add("GET", "/\xe2\x82", 404, int64(123456789012), "ü日本", "id", int64(-1))
	f.Add("HEAD", "", 304, int64(0), "", "\ufffd", int64(999999999))
	for _, us := range []int64{999_999_999_999_999, 1_000_000_000_000_000, 1<<53 - 1, 4_398_046_511_103_999} {
		f.Add("GET", "/", 200, us, "", "", int64(0))
	}
	f.Fuzz(func(t *testing.T, method, path string, status int, micros int64, agent, clientID string, nanos int64) {
		if micros < 0 {
			micros = -micros
		}
		r := accessRecord{
			end:    time.Date(2026, 12, 2, 6, 41, 11, 0, time.UTC).Add(time.Duration(nanos % int64(time.Hour))),
			method: method, path: path, status: status, elapsed: time.Duration(micros%(1<<53)) * time.Microsecond,
			requestID: "efafe1377ed8fef1yvrt", userAgent: agent, client: "203.0.113.9", clientRequestID: clientID,
		}
		for _, format := range []string{"json", "text"} {
			if got, want := viaAccessLog(format, r), viaSlog(format, r); got != want {
				t.Fatalf("%s line differs from slog's:\n got %q\nwant %q", format, got, want)
			}
		}
		if !json.Valid([]byte(viaAccessLog("json", r))) {
			t.Fatalf("not JSON: %q", viaAccessLog("json", r))
		}
	})
}

func BenchmarkAccessLogLine(b *testing.B) {
	r := accessRecord{end: time.Now(), method: "GET", path: "/api/factory/1", status: 200,
		elapsed: 547 * time.Microsecond, requestID: "efafe1377ed8fef1yvrt", userAgent: "wrk", client: "127.0.0.1"}
	for _, format := range []string{"json", "text"} {
		b.Run(format, func(b *testing.B) {
			var out bytes.Buffer
			l := NewAccessLog(&out, format, "reader")
			for i := 0; i < b.N; i++ {
				out.Reset()
				l.write(r)
			}
		})
	}
	b.Run("slog-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			viaSlog("json", r)
		}
	})
}

// A request through an app gets one line that says what was answered, to
// whom, with the id the answer carried.
func TestEveryAnswerIsLogged(t *testing.T) {
	var out bytes.Buffer
	app := NewApp(ServerConfig{Name: "test", BodyLimit: 1024, AccessLog: NewAccessLog(&out, "json", "reader")},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	app.Get("/teapot", func(c *fiber.Ctx) error { return c.SendStatus(http.StatusTeapot) })
	req := httptest.NewRequest(http.MethodGet, "/teapot", nil)
	req.Header.Set("User-Agent", "dashboard\x1b[31m")
	req.Header.Set("X-Request-ID", "mine")
	a := send(t, app, req)
	type fields struct {
		Level, Msg, Program, Method, Path string
		RequestID                         string `json:"request_id"`
		UserAgent                         string `json:"user_agent"`
		Client                            string
		ClientRequestID                   string `json:"client_request_id"`
	}
	var line struct {
		fields
		Status     int
		DurationMS *float64 `json:"duration_ms"`
	}
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&line); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if dec.More() {
		t.Fatalf("more than one line: %q", out.String())
	}
	want := fields{"INFO", "request", "reader", "GET", "/teapot", a.header.Get("X-Request-ID"), `dashboard'\x1b'[31m`, "0.0.0.0", "mine"}
	got := line.fields
	if got != want || line.Status != http.StatusTeapot || line.DurationMS == nil {
		t.Fatalf("line %+v (status %d, duration %v), want %+v", got, line.Status, line.DurationMS, want)
	}
}
