// Command writer is the write API. It commits every change on the Postgres
// leader together with its events in an outbox, and relays those events to
// NATS JetStream. Its subcommands migrate the schema and load the seeds.
//
//	writer [serve]     serve the write API (default)
//	writer migrate [--seed DIR]  apply the database migrations, then optionally load DIR's seeds
//	writer seed [DIR]  load DIR/seed_*.json (default seeds/), idempotently
//	writer healthcheck exit 0 if the writer on WRITER_ADDR answers /healthz
//	writer org|token|audit ...  manage organizations and tokens; see -h
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sprockets-api/sprockets/internal/admission"
	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/budget"
	"github.com/sprockets-api/sprockets/internal/config"
	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/httpapi/writer"
	"github.com/sprockets-api/sprockets/internal/natsjs"
	"github.com/sprockets-api/sprockets/internal/outbox"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/rediscache"
	"github.com/sprockets-api/sprockets/internal/seed"
)

func main() {
	config.TuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(1)
	}
}

const usage = "usage: writer [serve | migrate [--seed DIR] | seed [DIR] | healthcheck | org ... | token ... | audit ...]\n" + adminUsage

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprintln(stdout, usage)
		return nil
	}
	cfg, err := config.LoadWriter(getenv)
	if err != nil {
		return err
	}
	log, logs := cfg.Logger(stderr, "writer")
	defer logs.Flush() //nolint:errcheck // nowhere left to report it
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log, logs)
	case "migrate":
		// --seed lets a container without a shell migrate and seed in one
		// step, as `writer migrate && writer seed DIR` would.
		fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
		fs.SetOutput(stdout)
		seedDir := fs.String("seed", "", "after migrating, load the seed files in `DIR`")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if err := migrate(ctx, cfg, stdout); err != nil || *seedDir == "" {
			return err
		}
		return loadSeeds(ctx, cfg, *seedDir, stdout)
	case "seed":
		dir := "seeds"
		if len(args) > 0 {
			dir = args[0]
		}
		return loadSeeds(ctx, cfg, dir, stdout)
	case "healthcheck":
		return httpapi.Probe(ctx, cfg.Addr)
	case "org", "token", "audit":
		return runAdmin(ctx, cfg, cmd, args, stdout)
	}
	return fmt.Errorf("unknown command %q; %s", cmd, usage)
}

func migrate(ctx context.Context, cfg config.Writer, stdout io.Writer) error {
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2, 10*time.Second)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := postgres.Migrate(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied: %d\n", n)
	return nil
}

// openStore connects a one-shot command to the leader.
func openStore(ctx context.Context, cfg config.Writer) (*postgres.Store, func(), error) {
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	store, err := postgres.NewStore(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return store, func() { store.Close(); db.Close() }, nil
}

func loadSeeds(ctx context.Context, cfg config.Writer, dir string, stdout io.Writer) error {
	store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	res, err := seed.Load(ctx, store, dir, domain.DefaultOrgID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "factories: %d created, %d already loaded; sprockets: %d created, %d already loaded\n",
		res.FactoriesCreated, res.FactoriesExisting, res.SprocketsCreated, res.SprocketsExisting)
	return nil
}

func serve(ctx context.Context, cfg config.Writer, log *slog.Logger, logs io.Writer) error {
	log.Info("starting", config.Attrs(cfg)...)
	reg := httpapi.NewRegistry()

	// ---- Consistency tokens, sealed with a key the writers and readers share
	key, _, err := cfg.Keys()
	if err != nil {
		return err
	}
	tokens, err := consistency.NewSigner(key)
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

	// ---- Postgres leader ----------------------------------------------
	db, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns, 10*time.Second)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := postgres.AgreeOnIDKey(ctx, db, ids); err != nil {
		return err
	}

	// ---- NATS JetStream (writes do not wait for it) --------------------
	nc, err := natsjs.Connect(cfg.NATSURL, "writer", log)
	if err != nil {
		return err
	}
	defer nc.Close()

	// ---- Outbox relay and the store that feeds it -----------------------
	relay := outbox.New(db, nc, log, outbox.Config{
		Batch: cfg.RelayBatch, Poll: cfg.RelayPoll, StuckAfter: cfg.StuckAfter,
	}, reg)
	store, err := postgres.NewStore(ctx, db, postgres.WithCommitHook(relay.Committed))
	if err != nil {
		return err
	}
	defer store.Close()

	// ---- Redis: token grants and rate limits (writes go on without it) ----
	rdb, err := rediscache.Connect(cfg.RedisURL, cfg.DBMaxConns, cfg.RedisTimeout)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cache := rediscache.New(rdb)

	// ---- The feed of auth changes: grants are held while it is fresh ----
	feed := cache.NewFeed(cfg.FeedStaleness, log, reg)
	authn := auth.NewAuthenticator(cache, postgres.NewReads(db), feed, reg)
	feed.OnAuthChange(authn.Forget)
	feed.OnLost(func(string) { authn.Forget() })

	// ---- HTTP ---------------------------------------------------------
	var access *httpapi.AccessLog
	if cfg.AccessLog && cfg.LogLevel <= slog.LevelInfo {
		access = httpapi.NewAccessLog(logs, cfg.LogFormat, "writer")
	}
	srv := httpapi.ServerConfig{
		Name: "writer", Addr: cfg.Addr, ShutdownGrace: cfg.ShutdownGrace,
		BodyLimit: cfg.BodyLimit, AccessLog: access, TrustedProxies: cfg.TrustedProxies,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
		TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
	}
	app := httpapi.NewApp(srv, log, reg)
	httpapi.Health(app,
		map[string]httpapi.Check{"postgres": db.PingContext},
		// The relay being stuck does not stop writes (they wait in the
		// outbox), so it is reported, not required.
		map[string]httpapi.Check{"nats": nc.Ping, "redis": cache.Ping, "relay": relay.Stuck}, reg, log)
	app.Use(httpapi.Access(authn, budget.New(cache.NewLimiter(), reg),
		httpapi.AccessConfig{RateLimit: cfg.RateLimit, AnonymousRateLimit: cfg.AnonymousRateLimit}, log))
	// Past MAX_IN_FLIGHT writes at once, a write waits ADMISSION_WAIT for
	// room and is then refused: overload is a quick 503, not a queue.
	app.Use(httpapi.Admit(admission.New("writes", cfg.MaxInFlight, cfg.AdmissionWait, reg)))
	writer.Routes(app, writer.New(store, tokens, ids))

	// ---- Run ------------------------------------------------------------
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return nc.KeepStream(ctx, natsjs.StreamConfig{
			Name: cfg.StreamName, Subjects: []string{events.SubjectPrefix + ".>"}, MaxAge: cfg.StreamMaxAge,
		}, log)
	})
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return store.RunKeyExpiry(ctx, 10*time.Minute, log) })
	g.Go(func() error { return feed.Run(ctx) })
	// Revocations that could not reach Redis: looked up in Postgres by
	// every instance meanwhile, and put into Redis once it answers.
	g.Go(func() error { return authn.RunRepairWatch(ctx, cfg.FeedStaleness/2) })
	g.Go(func() error {
		reads := postgres.NewReads(db)
		return auth.Repairer{Pending: reads.GrantRepairs, Revoke: cache.Revoke, Forget: store.ForgetGrantRepairs}.Run(ctx, time.Second, log)
	})
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
