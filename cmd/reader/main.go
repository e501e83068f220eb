// Command reader is the read API. It serves pre-assembled bodies from Redis,
// and falls back to a Postgres replica within the lag bound, then to the
// leader, so that Redis or a replica being down makes answers slower, not
// errors. Readers are stateless and scale out.
//
//	reader [serve]      serve the read API (default)
//	reader healthcheck  exit 0 if the reader on READER_ADDR answers /healthz
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sprockets-api/sprockets/internal/admission"
	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/budget"
	"github.com/sprockets-api/sprockets/internal/compress"
	"github.com/sprockets-api/sprockets/internal/config"
	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/dashboard"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/httpapi/reader"
	"github.com/sprockets-api/sprockets/internal/live"
	"github.com/sprockets-api/sprockets/internal/nearcache"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/rediscache"
)

func main() {
	config.TuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "reader:", err)
		os.Exit(1)
	}
}

const usage = `usage: reader [serve | healthcheck] (configured by environment; see README)`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	case "serve", "healthcheck":
	default:
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}
	cfg, err := config.LoadReader(getenv)
	if err != nil {
		return err
	}
	if cmd == "healthcheck" {
		return httpapi.Probe(ctx, cfg.Addr)
	}
	log, logs := cfg.Logger(stderr, "reader")
	defer logs.Flush() //nolint:errcheck // nowhere left to report it
	log.Info("starting", config.Attrs(cfg)...)
	reg := httpapi.NewRegistry()

	// ---- Consistency tokens, sealed with a key the writers and readers share
	current, previous, err := cfg.Keys()
	if err != nil {
		return err
	}
	tokens, err := consistency.NewSigner(current, previous)
	if err != nil {
		return err
	}

	// ---- The ids of the /v1 routes ---------------------------------------
	idKey, err := cfg.PublicIDKey()
	if err != nil {
		return err
	}
	ids, err := publicid.New(idKey)
	if err != nil {
		return err
	}

	// ---- Postgres leader and replicas (none must be up to start) -----------
	leader, err := postgres.Connect(cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer leader.Close()
	replicas := map[string]*postgres.DB{}
	for _, u := range cfg.ReplicaURLs {
		db, err := postgres.Connect(u, cfg.DBMaxConns)
		if err != nil {
			return err
		}
		defer db.Close()
		replicas[replicaName(u)] = db
	}
	pool := postgres.NewReadPool(leader, replicas, cfg.ReplicaMaxLag, log, reg)

	// ---- Redis (the read model) ---------------------------------------
	rdb, err := rediscache.Connect(cfg.RedisURL, cfg.RedisPoolSize, cfg.RedisTimeout)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cache := rediscache.New(rdb)

	// ---- The feed of changes; what the reader holds in memory by it ------
	// Its memory of the read model, and the grants of tokens: both are used
	// only while the feed is fresh, and forgotten when it is lost. Grants
	// missing from Redis are read from the leader: a token just created may
	// not have reached a replica yet.
	feed := cache.NewFeed(cfg.FeedStaleness, log, reg)
	near := nearcache.New(cfg.NearCacheBytes, feed, reg)
	authn := auth.NewAuthenticator(cache, postgres.NewReads(leader), feed, reg)
	// Streams of changes follow the organizations' live logs, woken by the
	// feed, and check their tokens again whenever grants may have changed.
	hub := live.New(cache, authn, live.Config{
		Heartbeat: cfg.LiveHeartbeat, MaxStreams: cfg.LiveMaxStreams, MaxPerClient: cfg.LiveMaxStreamsPerClient,
		MaxPerOrg: cfg.LiveMaxStreamsPerOrg,
	}, log, reg)
	feed.OnChange(near.Changed)
	feed.OnChange(hub.Changed)
	feed.OnAuthChange(authn.Forget)
	feed.OnAuthChange(hub.Recheck)
	feed.OnLost(func(reason string) {
		near.Flush(reason)
		authn.Forget()
		hub.Recheck()
	})

	// ---- HTTP ---------------------------------------------------------
	served := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sprockets_reads_total", Help: "Answers by where their data came from.",
	}, []string{"source"})
	reg.MustRegister(served)
	// Each source's counter is found once: asking the vector by label on
	// every read cost a cached read 2% of its time.
	bySource := map[string]prometheus.Counter{}
	for _, source := range []string{reader.FromMemory, reader.FromCache, postgres.FromReplica, postgres.FromLeader} {
		bySource[source] = served.WithLabelValues(source)
	}
	countServed := func(source string) {
		if c, ok := bySource[source]; ok {
			c.Inc()
			return
		}
		served.WithLabelValues(source).Inc()
	}
	var access *httpapi.AccessLog
	if cfg.AccessLog && cfg.LogLevel <= slog.LevelInfo {
		access = httpapi.NewAccessLog(logs, cfg.LogFormat, "reader")
	}
	srv := httpapi.ServerConfig{
		Name: "reader", Addr: cfg.Addr, ShutdownGrace: cfg.ShutdownGrace,
		BodyLimit: 64 * 1024, AccessLog: access, TrustedProxies: cfg.TrustedProxies,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
		TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
	}
	app := httpapi.NewApp(srv, log, reg)
	httpapi.Health(app,
		map[string]httpapi.Check{"data": anyOf(cache.Ping, pool.Ping)},
		map[string]httpapi.Check{"redis": cache.Ping, "postgres": pool.Ping}, reg, log)
	app.Use(httpapi.Access(authn, budget.New(cache.NewLimiter(), reg),
		httpapi.AccessConfig{
			PublicReads: cfg.PublicReads, PublicOrg: cfg.PublicOrgID,
			RateLimit: cfg.RateLimit, AnonymousRateLimit: cfg.AnonymousRateLimit,
			PublicPaths: dashboard.Paths,
		}, log))
	if err := dashboard.Routes(app); err != nil {
		return err
	}
	database := database{pool, admission.New("database-reads", cfg.MaxDBReads, cfg.AdmissionWait, reg)}
	encoder := compress.New(cfg.CompressedBytes, reg)
	reader.Routes(app, reader.New(near, cache, database, encoder, reader.Config{
		ConsistencyWait: cfg.ConsistencyWait, CacheBackoff: cfg.RedisBackoff, MaxChartBuckets: cfg.ChartMaxBuckets,
		Tokens: tokens, IDs: ids, Live: hub,
	}, log, countServed))

	// ---- Run ------------------------------------------------------------
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pool.Run(ctx, cfg.ReplicaCheckInterval) })
	g.Go(func() error { return feed.Run(ctx) })
	g.Go(func() error { return hub.Run(ctx) })
	g.Go(func() error { return authn.RunRepairWatch(ctx, cfg.FeedStaleness/2) })
	// A reader starts without Postgres: its key is checked once the
	// leader answers, and a wrong one stops it.
	g.Go(func() error { return agreeOnIDKey(ctx, leader, ids) })
	g.Go(func() error {
		return httpapi.Serve(ctx, app, srv, func(a net.Addr) {
			log.Info("listening", "addr", a.String())
		})
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// database adapts the replica pool to the reader's Database interface,
// with at most MAX_DB_READS reads at once: past that, a read waits
// ADMISSION_WAIT for room and is then refused, so that a slow database
// makes quick 503s rather than a queue that grows as long as it is slow.
type database struct {
	pool *postgres.ReadPool
	gate *admission.Gate
}

func (d database) Do(ctx context.Context, minLSN string, fn func(reader.Queries) error) (string, error) {
	leave, err := d.gate.Enter(ctx)
	if err != nil {
		return "", err
	}
	defer leave()
	return d.pool.Do(ctx, minLSN, func(r postgres.Reads) error { return fn(r) })
}

// anyOf passes when at least one check passes: a reader can answer from
// Redis alone or from Postgres alone.
func anyOf(checks ...httpapi.Check) httpapi.Check {
	return func(ctx context.Context) error {
		var errs []error
		for _, c := range checks {
			err := c(ctx)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// replicaName labels a replica in logs and metrics by host and port.
func replicaName(url string) string {
	s := postgres.Redact(url)
	if _, rest, ok := strings.Cut(s, "@"); ok {
		s = rest
	} else if _, rest, ok := strings.Cut(s, "://"); ok {
		s = rest
	}
	host, _, _ := strings.Cut(s, "/")
	return host
}

// agreeOnIDKey checks ID_KEY against the service's (postgres.AgreeOnIDKey),
// trying again every two seconds while the leader cannot answer. It
// returns nil once they agree, and the refusal when they do not.
func agreeOnIDKey(ctx context.Context, leader *postgres.DB, ids *publicid.Codec) error {
	for {
		err := postgres.AgreeOnIDKey(ctx, leader, ids)
		if err == nil || errors.Is(err, postgres.ErrDisagrees) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}
