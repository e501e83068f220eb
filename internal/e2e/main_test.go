// Package e2e tests the whole service as its users see it: the three
// programs built from source and run as processes against a private Postgres
// leader and streaming replica, Redis and NATS JetStream.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// binDir holds the writer, projector and reader built for this run.
var binDir string

// repoRoot is the module's root directory.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(file), "..", "..")
	dir, err := os.MkdirTemp("", "sprockets-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	// With E2E_RACE=1 (make test) the programs run with the race detector,
	// and a race they report fails the test that ran them.
	race := os.Getenv("E2E_RACE") == "1"
	if race {
		// A program built with the race detector sleeps a second before it
		// exits (ThreadSanitizer's atexit_sleep_ms, for C++ destructors):
		// every stack's stop and every command a test runs waited it out.
		// 50 ms still lets goroutines still running at exit race and be
		// reported.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=50"))
	}
	if err := devstack.Build(context.Background(), repoRoot, binDir, race, "./cmd/writer", "./cmd/projector", "./cmd/reader"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// stackOptions tune a test stack.
type stackOptions struct {
	embeddedNATS bool
	noSeed       bool
	env          []string
	readers      int  // how many readers (default one)
	edge         bool // HAProxy in front, as in make run
}

// newStack starts a private topology with the programs running and the
// seeds loaded, and stops it when the test ends. Logs are kept for a
// failing test.
func newStack(t *testing.T, opts stackOptions) *devstack.Stack {
	t.Helper()
	ctx := context.Background()
	env := append([]string{
		"LOG_LEVEL=warn", "ACCESS_LOG=false", "REPLICA_CHECK_INTERVAL=100ms",
		"COALESCE_INTERVAL=50ms", "FETCH_WAIT=1s", "RELAY_POLL=200ms", "VERIFY_SETTLE=500ms",
		// Tests that load the service are not about budgets; those that are
		// set their own.
		"RATE_LIMIT=1000000",
	}, opts.env...)
	s, err := devstack.Start(ctx, devstack.Config{
		BinDir: binDir, Replica: true, EmbeddedNATS: opts.embeddedNATS, Env: env,
		Readers: opts.readers, Edge: opts.edge,
	})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		s.Stop() // the logs are read below, then removed with the stack
		defer s.Close()
		for _, p := range append([]*devstack.Program{s.Writer, s.Projector}, s.Readers...) {
			b, _ := os.ReadFile(p.LogFile())
			if i := strings.Index(string(b), "WARNING: DATA RACE"); i >= 0 {
				t.Errorf("%s reported a data race:\n%s", p.Name, tailBytes(b[i:], 6000))
			}
			if t.Failed() && len(b) > 0 {
				t.Logf("---- %s log (tail) ----\n%s", p.Name, tailBytes(b, 4000))
			}
		}
	})
	seeds := filepath.Join(repoRoot, "seeds")
	if opts.noSeed {
		seeds = ""
	}
	if err := s.Migrate(ctx, seeds); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := s.StartPrograms(ctx); err != nil {
		t.Fatalf("start programs: %v", err)
	}
	token, err := s.CreateToken(ctx, "default", "read,write,admin", "--name", t.Name())
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	authenticate(t, s, token)
	return s
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
