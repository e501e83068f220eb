// Command projector keeps the read model in Redis: it consumes the events the
// writer publishes and rewrites every Redis key that depends on them.
//
//	projector [run]            consume and project (default)
//	projector rebuild          rebuild every key from Postgres
//	projector verify [--repair] compare every key with Postgres; exit 1 on drift
//	projector healthcheck       exit 0 if the projector on PROJECTOR_ADDR answers /healthz
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

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sprockets-api/sprockets/internal/config"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/natsjs"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/projection"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/rediscache"
)

func main() {
	config.TuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(1)
	}
}

const usage = `usage: projector [run | rebuild | verify [--repair] | healthcheck]`

// errDrift makes verify exit non-zero.
var errDrift = errors.New("the read model differs from Postgres")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprintln(stdout, usage)
		return nil
	}
	if cmd != "run" && cmd != "rebuild" && cmd != "verify" && cmd != "healthcheck" {
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}
	cfg, err := config.LoadProjector(getenv)
	if err != nil {
		return err
	}
	if cmd == "healthcheck" {
		return httpapi.Probe(ctx, cfg.Addr)
	}
	log, logs := cfg.Logger(stderr, "projector")
	defer logs.Flush() //nolint:errcheck // nowhere left to report it
	reg := httpapi.NewRegistry()

	// ---- Postgres leader (the source of every rebuild) -------------------
	db, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns, 10*time.Second)
	if err != nil {
		return err
	}
	defer db.Close()

	// ---- Redis (the read model) ---------------------------------------
	rdb, err := rediscache.Connect(cfg.RedisURL, 16, cfg.RedisTimeout)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cache := rediscache.New(rdb)
	// ---- The /v1 ids in the bodies it writes ----------------------------
	idKey, err := cfg.PublicIDKey()
	if err != nil {
		return err
	}
	ids, err := publicid.New(idKey)
	if err != nil {
		return err
	}
	if err := postgres.AgreeOnIDKey(ctx, db, ids); err != nil {
		return err
	}
	proj := projection.New(postgres.NewReads(db), cache, ids, log, reg)
	proj.KeepLive(cfg.LiveRetention, cfg.LiveMaxEntries)

	switch cmd {
	case "rebuild":
		n, err := proj.Rebuild(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rebuilt: %d keys written\n", n)
		return nil
	case "verify":
		return verify(ctx, proj, cfg, args, stdout)
	}
	return project(ctx, cfg, proj, cache, log, reg)
}

func verify(ctx context.Context, proj *projection.Projector, cfg config.Projector, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stdout)
	repair := fs.Bool("repair", false, "rewrite every key that differs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	drifts, err := proj.Verify(ctx, cfg.VerifySettle, *repair)
	if err != nil {
		return err
	}
	for _, d := range drifts {
		fmt.Fprintln(stdout, "drift:", d)
	}
	if len(drifts) == 0 {
		fmt.Fprintln(stdout, "verify: the read model matches Postgres")
		return nil
	}
	if !*repair {
		return fmt.Errorf("%w: %d keys", errDrift, len(drifts))
	}
	fmt.Fprintf(stdout, "repaired %d keys; verifying again\n", len(drifts))
	if again, err := proj.Verify(ctx, cfg.VerifySettle, false); err != nil || len(again) > 0 {
		return fmt.Errorf("%w after repair: %d keys (%v)", errDrift, len(again), err)
	}
	fmt.Fprintln(stdout, "verify: the read model matches Postgres")
	return nil
}

func project(ctx context.Context, cfg config.Projector, proj *projection.Projector, cache *rediscache.Cache, log *slog.Logger, reg *prometheus.Registry) error {
	log.Info("starting", config.Attrs(cfg)...)

	// ---- NATS JetStream ------------------------------------------------
	nc, err := natsjs.Connect(cfg.NATSURL, "projector", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	// A deleted organization's events leave the stream with its keys.
	proj.PurgeWith(func(ctx context.Context, filters []string) error {
		return nc.PurgeSubjects(ctx, cfg.StreamName, filters)
	})
	runner := natsjs.NewRunner(nc, natsjs.RunConfig{
		Batch: cfg.FetchBatch, Wait: cfg.FetchWait, ParkAfter: uint64(cfg.ParkAfter), AckWait: cfg.AckWait,
		StuckAfter: cfg.StuckAfter,
	}, log, reg)

	// ---- HTTP: health and metrics -----------------------------------------
	srv := httpapi.ServerConfig{
		Name: "projector", Addr: cfg.Addr, ShutdownGrace: cfg.ShutdownGrace,
		BodyLimit:   4096,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
	}
	app := httpapi.NewApp(srv, log, reg)
	httpapi.Health(app,
		map[string]httpapi.Check{"redis": cache.Ping, "nats": nc.Ping, "pipeline": runner.Stuck},
		map[string]httpapi.Check{}, reg, log)

	// ---- Run ------------------------------------------------------------
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return httpapi.Serve(ctx, app, srv, func(a net.Addr) {
			log.Info("listening", "addr", a.String())
		})
	})
	g.Go(func() error { return proj.RunDerived(ctx, cfg.CoalesceInterval) })
	if cfg.AntiEntropyEvery > 0 {
		g.Go(func() error { return proj.RunAntiEntropy(ctx, cfg.VerifySettle, cfg.AntiEntropyEvery) })
	}
	g.Go(func() error {
		// A flushed or new Redis is rebuilt before events are applied to it.
		var rebuilt bool
		err := natsjs.Retry(ctx, log, "build read model", 0, func(ctx context.Context) (err error) {
			rebuilt, err = proj.EnsureBuilt(ctx)
			return err
		})
		if err != nil || ctx.Err() != nil {
			return err
		}
		g.Go(func() error { return watchBuilt(ctx, proj, log) })
		return consume(ctx, cfg, nc, runner, proj, rebuilt, log)
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// consume applies the stream's events until ctx is done. When the broker
// loses the stream or the consumer (a restart without its store), it makes
// them again and rebuilds the read model: the events that were in the
// stream and not yet applied are gone, and only Postgres still has what
// they said. A consumer that has to be created on a read model built
// before (and not just now) means the same.
func consume(ctx context.Context, cfg config.Projector, nc *natsjs.Conn, runner *natsjs.Runner, proj *projection.Projector, rebuilt bool, log *slog.Logger) error {
	for {
		var (
			cons    *natsjs.Consumer
			created bool
		)
		err := natsjs.Retry(ctx, log, "ensure stream and consumer", 5*time.Second, func(ctx context.Context) error {
			if err := nc.EnsureStream(ctx, natsjs.StreamConfig{
				Name: cfg.StreamName, Subjects: []string{events.SubjectPrefix + ".>"}, MaxAge: cfg.StreamMaxAge,
			}); err != nil {
				return err
			}
			if err := nc.EnsureStream(ctx, natsjs.StreamConfig{
				Name: natsjs.ParkedStream(cfg.StreamName), Subjects: []string{natsjs.ParkPrefix + ".>"}, MaxAge: 30 * 24 * time.Hour,
			}); err != nil {
				return err
			}
			var err error
			cons, created, err = nc.EnsureConsumer(ctx, natsjs.ConsumerConfig{
				Stream: cfg.StreamName, Durable: cfg.ConsumerName, Filter: events.SubjectPrefix + ".>", AckWait: cfg.AckWait,
			})
			return err
		})
		if err != nil || ctx.Err() != nil {
			return err
		}
		if created && !rebuilt {
			log.Warn("the consumer was missing: events may have been lost with the broker's store; rebuilding the read model")
			err := natsjs.Retry(ctx, log, "rebuild read model", 0, func(ctx context.Context) error {
				n, err := proj.Rebuild(ctx)
				if err == nil {
					log.Info("read model rebuilt", "keys", n)
				}
				return err
			})
			if err != nil || ctx.Err() != nil {
				return err
			}
		}
		rebuilt = false
		err = runner.Run(ctx, cons, proj.HandleBatch)
		if !errors.Is(err, natsjs.ErrConsumerLost) {
			return err
		}
		log.Warn("consumer lost; creating it again", "err", err)
	}
}

// watchBuilt rebuilds the read model when Redis loses it while running (a
// flush or a restart without persistence), instead of serving from the
// database until an operator notices.
func watchBuilt(ctx context.Context, proj *projection.Projector, log *slog.Logger) error {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if _, err := proj.EnsureBuilt(ctx); err != nil && ctx.Err() == nil {
			log.Warn("check read model", "err", err)
		}
	}
}
