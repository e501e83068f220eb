// Package pgtest gives tests a fresh, migrated database of their own on a
// private Postgres server, and the events its outbox holds.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/outbox"
	"github.com/sprockets-api/sprockets/internal/postgres"
)

var next atomic.Int64

// Fresh creates a database on server, migrates it and returns it with its
// name; it is closed when the test ends.
func Fresh(t testing.TB, server *devstack.Postgres) (*sqlx.DB, string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("t%d_%d", time.Now().UnixNano(), next.Add(1))
	if err := server.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(ctx, server.URL(name), 8, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := postgres.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db, name
}

// Store returns a store writing to db.
func Store(t testing.TB, db *sqlx.DB) *postgres.Store {
	t.Helper()
	s, err := postgres.NewStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Events returns the events db's outbox holds after sequence number *after,
// in order, and moves *after past them.
func Events(t testing.TB, db *sqlx.DB, after *int64) []events.Envelope {
	t.Helper()
	rows, err := outbox.Read(context.Background(), db, *after)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]events.Envelope, len(rows))
	for i, r := range rows {
		if r.Subject != r.Envelope().Subject() {
			t.Errorf("row %d: subject %s, its envelope says %s", r.Seq, r.Subject, r.Envelope().Subject())
		}
		out[i] = r.Envelope()
		*after = r.Seq
	}
	return out
}

// Main runs a package's tests against a private Postgres leader (and, with
// replica, a streaming replica), which it hands to use before the tests run
// and stops after; it returns the exit code for os.Exit. A server that
// cannot start fails the run: these tests never skip.
func Main(m *testing.M, replica bool, use func(leader, replica *devstack.Postgres)) int {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	leader, standby, err := devstack.StartPostgres(context.Background(), dir, replica)
	if err != nil {
		fmt.Fprintln(os.Stderr, "a real Postgres is required:", err)
		return 1
	}
	defer leader.Stop()
	if standby != nil {
		defer standby.Stop()
	}
	use(leader, standby)
	return m.Run()
}
