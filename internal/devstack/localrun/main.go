// Command localrun is `make run`: the whole topology as local processes on
// this machine, from its installed Postgres, Redis and NATS, with the data
// kept in a directory so that running it again picks up where it stopped.
// It migrates, loads the seeds, prints where each part listens, and stops
// everything it started on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("localrun", flag.ContinueOnError)
	dir := fs.String("dir", ".run", "where data and logs are kept")
	bin := fs.String("bin", "bin", "where the writer, projector and reader binaries are")
	seeds := fs.String("seeds", "seeds", "the seed data to load")
	var p devstack.Ports
	fs.IntVar(&p.Leader, "leader-port", 15432, "Postgres leader")
	fs.IntVar(&p.Replica, "replica-port", 15433, "Postgres replica")
	fs.IntVar(&p.Redis, "redis-port", 16379, "Redis")
	fs.IntVar(&p.NATS, "nats-port", 14222, "NATS")
	fs.IntVar(&p.Writer, "writer-port", 8081, "writer")
	fs.IntVar(&p.Reader, "reader-port", 8082, "reader")
	fs.IntVar(&p.Projector, "projector-port", 8083, "projector (health and metrics)")
	fs.IntVar(&p.Edge, "edge-port", 8000, "the edge proxy: the one port clients use")
	fs.IntVar(&p.EdgeHealth, "edge-health-port", 8404, "the edge proxy's own health check")
	readers := fs.Int("readers", 2, "how many readers to run behind the edge")
	if err := fs.Parse(args); err != nil {
		return err
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	for _, port := range []int{p.Leader, p.Replica, p.Redis, p.NATS, p.Writer, p.Reader, p.Projector, p.Edge, p.EdgeHealth} {
		if !devstack.PortFree(port) {
			return fmt.Errorf("port %d is in use: stop what uses it or choose another port (see -help)", port)
		}
	}

	fmt.Fprintf(stdout, "starting Postgres leader and replica, Redis and NATS in %s ...\n", *dir)
	s, err := devstack.Start(ctx, devstack.Config{Dir: *dir, BinDir: binDir, Ports: p, Replica: true, Durable: true,
		Readers: *readers, Edge: true})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "\nstopping everything ...")
		s.Close()
		fmt.Fprintln(stdout, "stopped")
	}()
	fmt.Fprintln(stdout, "migrating and loading the seeds ...")
	if err := s.Migrate(ctx, *seeds); err != nil {
		return err
	}
	if err := s.StartPrograms(ctx); err != nil {
		return err
	}
	token, err := s.CreateToken(ctx, "default", "read,write,admin", "--name", "make-run")
	if err != nil {
		return err
	}
	var readerURLs []string
	for _, r := range s.Readers {
		readerURLs = append(readerURLs, r.URL())
	}
	fmt.Fprintf(stdout, `
Sprockets API is running.

  edge       %s   the one port to use: GET and HEAD go to the readers, the rest to the writer
  readers    %v
  writer     %s
  projector  %s   /healthz, /readyz, /metrics (every program serves them)

  postgres   leader %s
             replica %s
  redis      %s
  nats       %s
  logs       %s

A token of the organization "default" (read, write and admin) for local
development, created for this run and shown only now:

  export TOKEN=%s

Try:
  curl -H "Authorization: Bearer $TOKEN" %s/api/factories
  curl -H "Authorization: Bearer $TOKEN" %s/api/factory/1
  curl -H "Authorization: Bearer $TOKEN" -X POST %s/api/sprocket/create/5/6/4/7/
  curl -N -H "Authorization: Bearer $TOKEN" %s/v1/stream      (changes as they happen)

The dashboard: %s/ (paste the token to sign in).

More tokens: bin/writer token create --org default --scopes read (with DATABASE_URL and REDIS_URL set).
Ctrl-C stops everything.
`, s.Edge.URL(), readerURLs, s.Writer.URL(), s.Projector.URL(), s.DatabaseURL(), s.ReplicaURL(), s.Redis.URL(), s.NATS.URL(),
		filepath.Join(s.Dir, "logs"), token, s.Edge.URL(), s.Edge.URL(), s.Edge.URL(), s.Edge.URL(), s.Edge.URL())
	<-ctx.Done()
	return nil
}
