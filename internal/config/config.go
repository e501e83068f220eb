// Package config reads each program's settings from the environment into a
// typed struct, with defaults, and rejects bad or missing values with a
// message that names the variable.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Common holds what every program needs.
type Common struct {
	DatabaseURL string     `env:"DATABASE_URL,required,notEmpty"`
	DBMaxConns  int        `env:"DB_MAX_CONNS" envDefault:"20"`
	LogLevel    slog.Level `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat   string     `env:"LOG_FORMAT" envDefault:"json"`
}

// HTTP holds the settings of a program's HTTP server.
type HTTP struct {
	ReadTimeout   time.Duration `env:"HTTP_READ_TIMEOUT" envDefault:"10s"`
	WriteTimeout  time.Duration `env:"HTTP_WRITE_TIMEOUT" envDefault:"10s"`
	IdleTimeout   time.Duration `env:"HTTP_IDLE_TIMEOUT" envDefault:"60s"`
	ShutdownGrace time.Duration `env:"SHUTDOWN_GRACE" envDefault:"10s"`
	AccessLog     bool          `env:"ACCESS_LOG" envDefault:"true"`
}

// Access holds the settings of authentication, rate limits and transport
// that the writer and the reader share.
type Access struct {
	RateLimit          int      `env:"RATE_LIMIT" envDefault:"1000"`
	AnonymousRateLimit int      `env:"RATE_LIMIT_ANONYMOUS" envDefault:"50"`
	TrustedProxies     []string `env:"TRUSTED_PROXIES" envDefault:"127.0.0.1,::1"`
	TLSCertFile        string   `env:"TLS_CERT_FILE"`
	TLSKeyFile         string   `env:"TLS_KEY_FILE"`
	// FeedStaleness bounds how old the feed of changes in Redis may be for
	// an instance to trust what it holds in memory (entries, grants).
	FeedStaleness time.Duration `env:"FEED_STALENESS" envDefault:"1s"`
	// AdmissionWait is how long a request waits for room when an instance
	// has all the work it takes on at once (MAX_IN_FLIGHT, MAX_DB_READS)
	// before it is refused with 503 and Retry-After.
	AdmissionWait time.Duration `env:"ADMISSION_WAIT" envDefault:"100ms"`
}

// Consistency holds the keys that sign consistency tokens: the writer signs
// with CONSISTENCY_KEY, and the readers accept it and, during a rotation,
// CONSISTENCY_KEY_PREVIOUS. Only serving needs them (not the writer's
// admin commands): see Keys.
type Consistency struct {
	ConsistencyKey         Secret `env:"CONSISTENCY_KEY"`
	ConsistencyKeyPrevious Secret `env:"CONSISTENCY_KEY_PREVIOUS"`
}

// Keys returns the current and the previous key, or an error naming
// CONSISTENCY_KEY when it is not set.
func (c Consistency) Keys() (current, previous string, err error) {
	if c.ConsistencyKey == "" {
		return "", "", fmt.Errorf("config: CONSISTENCY_KEY is required to serve: the same secret of at least %d characters on the writers and readers (for example: openssl rand -hex 32)", minKeyLen)
	}
	return string(c.ConsistencyKey), string(c.ConsistencyKeyPrevious), nil
}

// IDs holds the key of the ids the /v1 routes show (see publicid): the
// same secret on every writer, reader and projector, and never changed
// once clients hold ids, for every id would change with it.
type IDs struct {
	IDKey Secret `env:"ID_KEY"`
}

// PublicIDKey returns the key, or an error naming ID_KEY when it is not set.
func (c IDs) PublicIDKey() (string, error) {
	if c.IDKey == "" {
		return "", fmt.Errorf("config: ID_KEY is required: the same secret of at least %d characters on the writers, readers and projectors, kept for good: the /v1 ids are made with it (for example: openssl rand -hex 32)", minKeyLen)
	}
	return string(c.IDKey), nil
}

func (c IDs) validate(p *problems) {
	if c.IDKey != "" && len(c.IDKey) < minKeyLen {
		p.add("ID_KEY must have at least %d characters (for example: openssl rand -hex 32)", minKeyLen)
	}
}

// Secret is a setting that is never logged.
type Secret string

// LogValue hides the secret: a log says whether it is set, not what it is.
func (s Secret) LogValue() slog.Value {
	if s == "" {
		return slog.StringValue("")
	}
	return slog.StringValue("(set)")
}

// Stream names the event stream.
type Stream struct {
	NATSURL      string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	StreamName   string        `env:"STREAM_NAME" envDefault:"SPROCKETS"`
	StreamMaxAge time.Duration `env:"STREAM_MAX_AGE" envDefault:"168h"`
	// StuckAfter is how long events may wait, with none moving on, before
	// the relay (outbox rows) or the projector (pending events) is stuck:
	// it shows in readiness and in sprockets_pipeline_stuck.
	StuckAfter time.Duration `env:"STUCK_AFTER" envDefault:"1m"`
}

// Writer configures cmd/writer.
type Writer struct {
	Common
	HTTP
	Stream
	Access
	Consistency
	IDs
	Addr         string        `env:"WRITER_ADDR" envDefault:":8081"`
	RedisURL     string        `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	RedisTimeout time.Duration `env:"REDIS_TIMEOUT" envDefault:"250ms"`
	BodyLimit    int           `env:"BODY_LIMIT" envDefault:"1048576"`
	RelayBatch   int           `env:"RELAY_BATCH" envDefault:"256"`
	RelayPoll    time.Duration `env:"RELAY_POLL" envDefault:"500ms"`
	// MaxInFlight bounds the write requests in progress at once.
	MaxInFlight int `env:"MAX_IN_FLIGHT" envDefault:"128"`
}

// Reader configures cmd/reader.
type Reader struct {
	Common
	HTTP
	Access
	Consistency
	IDs
	Addr                 string        `env:"READER_ADDR" envDefault:":8082"`
	PublicReads          bool          `env:"PUBLIC_READS" envDefault:"false"`
	PublicOrgID          int64         `env:"PUBLIC_ORG_ID" envDefault:"1"`
	ReplicaURLs          []string      `env:"REPLICA_URLS"`
	ReplicaMaxLag        time.Duration `env:"REPLICA_MAX_LAG" envDefault:"5s"`
	ReplicaCheckInterval time.Duration `env:"REPLICA_CHECK_INTERVAL" envDefault:"250ms"`
	RedisURL             string        `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	RedisTimeout         time.Duration `env:"REDIS_TIMEOUT" envDefault:"250ms"`
	RedisPoolSize        int           `env:"REDIS_POOL_SIZE" envDefault:"64"`
	RedisBackoff         time.Duration `env:"REDIS_BACKOFF" envDefault:"1s"`
	ConsistencyWait      time.Duration `env:"CONSISTENCY_WAIT" envDefault:"250ms"`
	ChartMaxBuckets      int           `env:"CHART_MAX_BUCKETS" envDefault:"2000"`
	NearCacheBytes       int64         `env:"NEAR_CACHE_BYTES" envDefault:"67108864"`
	// MaxDBReads bounds the reads on the databases (replicas or leader) in
	// progress at once; answers from memory or Redis are not counted.
	MaxDBReads int `env:"MAX_DB_READS" envDefault:"64"`
	// CompressedBytes bounds the compressed forms of bodies a reader keeps
	// (gzip, zstd); 0 turns compression off.
	CompressedBytes int64 `env:"COMPRESSED_BYTES" envDefault:"33554432"`
	// LiveHeartbeat is how often an idle stream (GET /v1/stream) sends a
	// comment, so that proxies keep it open and a dead client is noticed.
	LiveHeartbeat time.Duration `env:"LIVE_HEARTBEAT" envDefault:"15s"`
	// LiveMaxStreams bounds the streams one reader holds open;
	// LiveMaxStreamsPerClient those of one token (or, without one, one
	// client address) on one reader; LiveMaxStreamsPerOrg those of one
	// organization on one reader.
	LiveMaxStreams          int `env:"LIVE_MAX_STREAMS" envDefault:"10000"`
	LiveMaxStreamsPerClient int `env:"LIVE_MAX_STREAMS_PER_CLIENT" envDefault:"16"`
	LiveMaxStreamsPerOrg    int `env:"LIVE_MAX_STREAMS_PER_ORG" envDefault:"2500"`
}

// Projector configures cmd/projector.
type Projector struct {
	Common
	HTTP
	Stream
	IDs
	Addr             string        `env:"PROJECTOR_ADDR" envDefault:":8083"`
	RedisURL         string        `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	RedisTimeout     time.Duration `env:"REDIS_TIMEOUT" envDefault:"2s"`
	ConsumerName     string        `env:"CONSUMER_NAME" envDefault:"projector"`
	FetchBatch       int           `env:"FETCH_BATCH" envDefault:"256"`
	FetchWait        time.Duration `env:"FETCH_WAIT" envDefault:"2s"`
	AckWait          time.Duration `env:"ACK_WAIT" envDefault:"30s"`
	ParkAfter        int           `env:"PARK_AFTER" envDefault:"20"`
	CoalesceInterval time.Duration `env:"COALESCE_INTERVAL" envDefault:"100ms"`
	VerifySettle     time.Duration `env:"VERIFY_SETTLE" envDefault:"1s"`
	// AntiEntropyEvery is how often, at most, the projector's background
	// check starts a pass over every organization; 0 turns it off.
	AntiEntropyEvery time.Duration `env:"ANTI_ENTROPY_INTERVAL" envDefault:"1m"`
	// LiveRetention and LiveMaxEntries bound each organization's log of
	// live changes (GET /v1/stream): a stream resumes without loss within
	// them, and is told to reload past them.
	LiveRetention  time.Duration `env:"LIVE_RETENTION" envDefault:"10m"`
	LiveMaxEntries int           `env:"LIVE_MAX_ENTRIES" envDefault:"10000"`
}

// LoadWriter reads the writer's settings through getenv.
func LoadWriter(getenv func(string) string) (Writer, error) {
	var c Writer
	if err := load(&c, getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// LoadReader reads the reader's settings through getenv.
func LoadReader(getenv func(string) string) (Reader, error) {
	var c Reader
	if err := load(&c, getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// LoadProjector reads the projector's settings through getenv.
func LoadProjector(getenv func(string) string) (Projector, error) {
	var c Projector
	if err := load(&c, getenv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// load parses the variables cfg declares, looked up through getenv (so that
// tests need not touch the process environment).
func load(cfg any, getenv func(string) string) error {
	params, err := env.GetFieldParams(cfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	vars := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			vars[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(cfg, env.Options{Environment: vars}); err != nil {
		return describe(cfg, err)
	}
	return nil
}

// describe rewrites env's errors so that each names the variable, not the
// Go field.
func describe(cfg any, err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("config: %w", err)
	}
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var parse env.ParseError
		var unset env.VarIsNotSetError
		var empty env.EmptyVarError
		switch {
		case errors.As(e, &parse):
			msgs = append(msgs, fmt.Sprintf("%s: %v", varName(cfg, parse.Name), parse.Err))
		case errors.As(e, &unset):
			msgs = append(msgs, unset.Key+" is required")
		case errors.As(e, &empty):
			msgs = append(msgs, empty.Key+" must not be empty")
		default:
			msgs = append(msgs, e.Error())
		}
	}
	return errors.New("config: " + strings.Join(msgs, "; "))
}

func varName(cfg any, field string) string {
	f, ok := reflect.TypeOf(cfg).Elem().FieldByName(field)
	if !ok {
		return field
	}
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

// problems collects validation failures, each naming its variable.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New("config: " + strings.Join(p, "; "))
}

func (p *problems) url(name, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" && u.Scheme != "unix" {
		p.add("%s: %q is not a URL with a host", name, redact(raw))
		return
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return
		}
	}
	p.add("%s: scheme must be one of %s, not %q", name, strings.Join(schemes, ", "), u.Scheme)
}

func (p *problems) addr(name, raw string) {
	if _, port, err := net.SplitHostPort(raw); err != nil || port == "" {
		p.add("%s: %q is not host:port (for example :8081)", name, raw)
	}
}

func (p *problems) positive(name string, v int64) {
	if v <= 0 {
		p.add("%s must be greater than zero", name)
	}
}

func (c Common) validate(p *problems) {
	p.url("DATABASE_URL", c.DatabaseURL, "postgres", "postgresql")
	p.positive("DB_MAX_CONNS", int64(c.DBMaxConns))
	if c.LogFormat != "json" && c.LogFormat != "text" {
		p.add("LOG_FORMAT must be json or text, not %q", c.LogFormat)
	}
}

func (h HTTP) validate(p *problems) {
	p.positive("HTTP_READ_TIMEOUT", int64(h.ReadTimeout))
	p.positive("HTTP_WRITE_TIMEOUT", int64(h.WriteTimeout))
	p.positive("HTTP_IDLE_TIMEOUT", int64(h.IdleTimeout))
	p.positive("SHUTDOWN_GRACE", int64(h.ShutdownGrace))
}

func (a Access) validate(p *problems) {
	p.positive("RATE_LIMIT", int64(a.RateLimit))
	p.positive("RATE_LIMIT_ANONYMOUS", int64(a.AnonymousRateLimit))
	for _, tp := range a.TrustedProxies {
		if net.ParseIP(tp) == nil {
			if _, _, err := net.ParseCIDR(tp); err != nil {
				p.add("TRUSTED_PROXIES: %q is not an IP address or CIDR range", tp)
			}
		}
	}
	p.positive("FEED_STALENESS", int64(a.FeedStaleness))
	p.positive("ADMISSION_WAIT", int64(a.AdmissionWait))
	if (a.TLSCertFile == "") != (a.TLSKeyFile == "") {
		p.add("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
	}
	for name, f := range map[string]string{"TLS_CERT_FILE": a.TLSCertFile, "TLS_KEY_FILE": a.TLSKeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				p.add("%s: %v", name, err)
			}
		}
	}
}

func (c Consistency) validate(p *problems) {
	for name, k := range map[string]Secret{"CONSISTENCY_KEY": c.ConsistencyKey, "CONSISTENCY_KEY_PREVIOUS": c.ConsistencyKeyPrevious} {
		if k != "" && len(k) < minKeyLen {
			p.add("%s must have at least %d characters (for example: openssl rand -hex 32)", name, minKeyLen)
		}
	}
}

// minKeyLen is consistency.MinKeyLen and publicid.MinKeyLen; config does
// not import the packages it configures.
const minKeyLen = 32

func (s Stream) validate(p *problems) {
	p.url("NATS_URL", s.NATSURL, "nats", "tls")
	if s.StreamName == "" || strings.ContainsAny(s.StreamName, ".*> \t") {
		p.add("STREAM_NAME must be a non-empty name without dots, wildcards or spaces")
	}
	p.positive("STREAM_MAX_AGE", int64(s.StreamMaxAge))
	p.positive("STUCK_AFTER", int64(s.StuckAfter))
}

// Validate checks the writer's settings.
func (c Writer) Validate() error {
	var p problems
	c.Common.validate(&p)
	c.HTTP.validate(&p)
	c.Stream.validate(&p)
	c.Access.validate(&p)
	c.Consistency.validate(&p)
	c.IDs.validate(&p)
	p.addr("WRITER_ADDR", c.Addr)
	p.url("REDIS_URL", c.RedisURL, "redis", "rediss", "unix")
	p.positive("REDIS_TIMEOUT", int64(c.RedisTimeout))
	p.positive("BODY_LIMIT", int64(c.BodyLimit))
	p.positive("RELAY_BATCH", int64(c.RelayBatch))
	p.positive("MAX_IN_FLIGHT", int64(c.MaxInFlight))
	p.positive("RELAY_POLL", int64(c.RelayPoll))
	return p.err()
}

// Validate checks the reader's settings.
func (c Reader) Validate() error {
	var p problems
	c.Common.validate(&p)
	c.HTTP.validate(&p)
	c.Access.validate(&p)
	c.Consistency.validate(&p)
	c.IDs.validate(&p)
	p.addr("READER_ADDR", c.Addr)
	p.positive("PUBLIC_ORG_ID", c.PublicOrgID)
	for _, u := range c.ReplicaURLs {
		p.url("REPLICA_URLS", u, "postgres", "postgresql")
	}
	p.positive("REPLICA_MAX_LAG", int64(c.ReplicaMaxLag))
	p.positive("REPLICA_CHECK_INTERVAL", int64(c.ReplicaCheckInterval))
	p.url("REDIS_URL", c.RedisURL, "redis", "rediss", "unix")
	p.positive("REDIS_TIMEOUT", int64(c.RedisTimeout))
	p.positive("REDIS_POOL_SIZE", int64(c.RedisPoolSize))
	p.positive("REDIS_BACKOFF", int64(c.RedisBackoff))
	if c.ConsistencyWait < 0 {
		p.add("CONSISTENCY_WAIT must not be negative")
	}
	p.positive("CHART_MAX_BUCKETS", int64(c.ChartMaxBuckets))
	p.positive("MAX_DB_READS", int64(c.MaxDBReads))
	if c.CompressedBytes < 0 {
		p.add("COMPRESSED_BYTES must not be negative (0 turns compression off)")
	}
	if c.NearCacheBytes < 0 {
		p.add("NEAR_CACHE_BYTES must not be negative (0 turns the near-cache off)")
	}
	p.positive("LIVE_HEARTBEAT", int64(c.LiveHeartbeat))
	p.positive("LIVE_MAX_STREAMS", int64(c.LiveMaxStreams))
	p.positive("LIVE_MAX_STREAMS_PER_CLIENT", int64(c.LiveMaxStreamsPerClient))
	p.positive("LIVE_MAX_STREAMS_PER_ORG", int64(c.LiveMaxStreamsPerOrg))
	return p.err()
}

// Validate checks the projector's settings.
func (c Projector) Validate() error {
	var p problems
	c.Common.validate(&p)
	c.HTTP.validate(&p)
	c.Stream.validate(&p)
	c.IDs.validate(&p)
	p.addr("PROJECTOR_ADDR", c.Addr)
	p.url("REDIS_URL", c.RedisURL, "redis", "rediss", "unix")
	p.positive("REDIS_TIMEOUT", int64(c.RedisTimeout))
	if c.ConsumerName == "" || strings.ContainsAny(c.ConsumerName, ".*> \t") {
		p.add("CONSUMER_NAME must be a non-empty name without dots, wildcards or spaces")
	}
	p.positive("FETCH_BATCH", int64(c.FetchBatch))
	p.positive("FETCH_WAIT", int64(c.FetchWait))
	p.positive("ACK_WAIT", int64(c.AckWait))
	p.positive("PARK_AFTER", int64(c.ParkAfter))
	p.positive("COALESCE_INTERVAL", int64(c.CoalesceInterval))
	p.positive("VERIFY_SETTLE", int64(c.VerifySettle))
	if c.AntiEntropyEvery < 0 {
		p.add("ANTI_ENTROPY_INTERVAL must not be negative (0 turns the background check off)")
	}
	if c.LiveRetention < time.Second {
		p.add("LIVE_RETENTION must be at least 1s")
	}
	p.positive("LIVE_MAX_ENTRIES", int64(c.LiveMaxEntries))
	return p.err()
}

// redact masks the password of a URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
