package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

const requestIDHeader = "X-Request-ID"

// RequestID returns the id of the request: the client's X-Request-ID when it
// is short and printable, else one generated here.
func RequestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDHeader).(string)
	return id
}

// requestIDs makes the ids of requests that come without one: a random
// prefix per process and a counter, unique across instances without a
// read of the system's randomness per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return &requestIDs{prefix: hex.EncodeToString(b[:])}
}

func (ids *requestIDs) handle(c *fiber.Ctx) error {
	id := c.Get(requestIDHeader)
	if !printable(id, 64) {
		id = ids.prefix + strconv.FormatUint(ids.n.Add(1), 36)
	}
	c.Locals(requestIDHeader, id)
	c.Set(requestIDHeader, id)
	return c.Next()
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// securityHeaders sets headers every answer of a JSON API should carry.
func securityHeaders(c *fiber.Ctx) error {
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	return c.Next()
}

// metrics counts requests and their durations by route pattern (never the
// raw path, which would explode the label set).
type metrics struct {
	requests *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sprockets_http_request_duration_seconds",
		Help:    "HTTP requests by route, method and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "method", "status"})}
	reg.MustRegister(m.requests)
	return m
}

// observe times the request and, when log is not nil, writes an access log
// line. It runs the error handler itself so that the status it records is
// the one sent.
func (m *metrics) observe(log *slog.Logger, onError fiber.ErrorHandler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		if err := c.Next(); err != nil {
			if herr := onError(c, err); herr != nil {
				return herr
			}
		}
		status := c.Response().StatusCode()
		route := "unmatched"
		if r := c.Route(); r != nil && r.Path != "/" && r.Path != "" {
			route = r.Path
		}
		m.requests.WithLabelValues(route, c.Method(), strconv.Itoa(status)).Observe(time.Since(start).Seconds())
		if log != nil {
			log.LogAttrs(c.UserContext(), slog.LevelInfo, "request", slog.String("method", c.Method()),
				slog.String("path", c.Path()), slog.Int("status", status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
				slog.String("request_id", RequestID(c)), slog.String("user_agent", UserAgent(c)), slog.String("client", c.IP()))
		}
		return nil
	}
}

// UserAgent returns the request's User-Agent, cut to 256 bytes and with
// control characters escaped, safe to log or store.
func UserAgent(c *fiber.Ctx) string {
	ua := c.Get(fiber.HeaderUserAgent)
	if len(ua) > 256 {
		ua = ua[:256]
	}
	var b strings.Builder
	for _, r := range ua {
		if r < 0x20 || r == 0x7f {
			b.WriteString(strconv.QuoteRune(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
