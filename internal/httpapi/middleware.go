package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	requestIDHeader = "X-Request-ID"
	clientRequestID = "client-request-id" // the Locals key of the client's X-Request-ID
	clientIPKey     = "client-ip"         // the Locals key of ClientIP's answer
)

// RequestID returns the id the service gave the request, sent back in
// X-Request-ID: unique, whatever the client sent (see ClientRequestID).
func RequestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDHeader).(string)
	return id
}

// ClientIP returns the client's address: the one X-Forwarded-For names
// when a trusted proxy (the edge) sent it, else the peer's. It is worked
// out once per request, for Fiber's check of the proxy is not free.
func ClientIP(c *fiber.Ctx) string {
	if ip, ok := c.Locals(clientIPKey).(string); ok {
		return ip
	}
	ip := strings.TrimSpace(c.IP())
	c.Locals(clientIPKey, ip)
	return ip
}

// ClientKey is the client as the budgets and limits that go by address
// count it: an IPv4 address whole, an IPv6 address by its /64, the least
// one host, or one customer's line, holds. Counted by address, a client
// with a /64 would have 2^64 budgets (one with a /48 still has 65,536).
func ClientKey(c *fiber.Ctx) string { return addressKey(ClientIP(c)) }

func addressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "ip:" + ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return "ip:" + a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return "ip:" + a.String()
	}
	return "ip:" + p.String()
}

// ClientRequestID returns the X-Request-ID the client sent, escaped and cut
// to 64 bytes, for logs that correlate with the client's own: it is the
// client's word, never taken as unique.
func ClientRequestID(c *fiber.Ctx) string {
	id, _ := c.Locals(clientRequestID).(string)
	return id
}

// requestIDs makes the ids of requests that come without one: a random
// prefix per process and a counter, unique across instances without a
// read of the system's randomness per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

// requestIDName is the header's name as Fiber would send it after its
// normalization, which SetCanonical skips.
var requestIDName = []byte("X-Request-Id")

func newRequestIDs() *requestIDs {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return &requestIDs{prefix: hex.EncodeToString(b[:])}
}

func (ids *requestIDs) handle(c *fiber.Ctx) error {
	var buf [32]byte
	b := strconv.AppendUint(append(buf[:0], ids.prefix...), ids.n.Add(1), 36)
	c.Response().Header.SetCanonical(requestIDName, b)
	c.Locals(requestIDHeader, string(b))
	if client := c.Get(requestIDHeader); client != "" {
		c.Locals(clientRequestID, Escape(client, 64))
	}
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

// plainASCII reports whether s is printable ASCII, spaces included.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// securityHeaders sets headers every answer of a JSON API should carry.
func securityHeaders(c *fiber.Ctx) error {
	h := &c.Response().Header
	for _, kv := range securityHeaderValues {
		h.SetCanonical(kv[0], kv[1])
	}
	return c.Next()
}

// securityHeaderValues are set on every answer with their names as sent
// (SetCanonical): Fiber's c.Set would normalize each name again on every
// request, a cost a cached read notices.
var securityHeaderValues = [][2][]byte{
	{[]byte("X-Content-Type-Options"), []byte("nosniff")},
	{[]byte("X-Frame-Options"), []byte("DENY")},
	{[]byte("Referrer-Policy"), []byte("no-referrer")},
	{[]byte("Content-Security-Policy"), []byte("default-src 'none'; frame-ancestors 'none'")},
}

// metrics counts requests and their durations by route pattern (never the
// raw path, which would explode the label set).
type metrics struct {
	requests *prometheus.HistogramVec
	// observers holds each route, method and status's histogram once it
	// was used (observerKey → prometheus.Observer): finding it by its
	// labels on every request cost a cached read 1% of its time.
	observers sync.Map
}

type observerKey struct {
	route  *fiber.Route // nil for a request no route matched
	method string       // a methodLabel
	status int
}

// observer returns the histogram of a request that route answered. A
// route without handlers is one Fiber made up for a request it refused
// before routing: it counts as unmatched, and is not kept.
func (m *metrics) observer(route *fiber.Route, method string, status int) prometheus.Observer {
	if route != nil && len(route.Handlers) == 0 {
		route = nil
	}
	key := observerKey{route, method, status}
	if o, ok := m.observers.Load(key); ok {
		return o.(prometheus.Observer)
	}
	label := "unmatched"
	if route != nil && route.Path != "/" && route.Path != "" {
		label = route.Path
	}
	o, _ := m.observers.LoadOrStore(key, m.requests.WithLabelValues(label, method, strconv.Itoa(status)))
	return o.(prometheus.Observer)
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
func (m *metrics) observe(log *AccessLog, onError fiber.ErrorHandler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		if err := c.Next(); err != nil {
			if herr := onError(c, err); herr != nil {
				return herr
			}
		}
		status := c.Response().StatusCode()
		elapsed := time.Since(start)
		m.observer(c.Route(), methodLabel(c.Method()), status).Observe(elapsed.Seconds())
		if log != nil {
			log.write(accessRecord{end: start.Add(elapsed), method: c.Method(), path: c.Path(),
				status: status, elapsed: elapsed, requestID: RequestID(c), userAgent: UserAgent(c),
				client: ClientIP(c), clientRequestID: ClientRequestID(c)})
		}
		return nil
	}
}

// methodLabel returns the metric label of a request method: a string of
// its own, for Fiber's c.Method() points into the connection's buffer,
// which the next request overwrites while the registry keeps the label.
func methodLabel(m string) string {
	for _, known := range []string{fiber.MethodGet, fiber.MethodHead, fiber.MethodPost, fiber.MethodPut,
		fiber.MethodPatch, fiber.MethodDelete, fiber.MethodOptions} {
		if m == known {
			return known
		}
	}
	return "other"
}

// UserAgent returns the request's User-Agent, escaped and cut to 256 bytes,
// safe to log or store.
func UserAgent(c *fiber.Ctx) string { return Escape(c.Get(fiber.HeaderUserAgent), 256) }

// Escape returns the first max bytes of s with everything that could
// garble or disguise a log line or an audit row escaped: control
// characters (C0, DEL, C1), Unicode's bidirectional controls (U+202E
// would show a line reversed), line and paragraph separators, and bytes
// that are not UTF-8. Each is written as Go quotes it, '\x1b' or
// '\u202e'.
func Escape(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	if plainASCII(s) {
		return s // the common case: nothing to escape
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `'\x%02x'`, s[i])
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029':
			b.WriteString(strconv.QuoteRune(r))
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
