package outbox_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/outbox"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/postgres/pgtest"
)

var pg *devstack.Postgres

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	return pgtest.Main(m, false, func(leader, _ *devstack.Postgres) { pg = leader })
}

// broker is a publisher that can be down, and records what it stored.
type broker struct {
	mu     sync.Mutex
	down   bool
	failAt string // an event id it refuses once
	stored []events.Outgoing
}

func (b *broker) PublishAll(_ context.Context, msgs []events.Outgoing) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		switch {
		case b.down:
			errs[i] = errors.New("broker down")
		case m.ID == b.failAt:
			b.failAt = ""
			errs[i] = errors.New("timeout")
		default:
			b.stored = append(b.stored, m)
		}
	}
	return errs
}

func (b *broker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.stored)
}

func setup(t *testing.T) (*postgres.Store, *sqlx.DB) {
	t.Helper()
	db, _ := pgtest.Fresh(t, pg)
	return pgtest.Store(t, db), db
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Committed events reach the broker exactly once each while it is up; while
// it is down they wait in the outbox, and a failed one is retried.
func TestRelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, db := setup(t)
	b := &broker{down: true}
	relay := outbox.New(db, b, slog.New(slog.NewTextHandler(io.Discard, nil)), outbox.Config{Batch: 4, Poll: 20 * time.Millisecond}, prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()

	spec := domain.SprocketSpec{Teeth: 1, PitchDiameter: 1, OutsideDiameter: 1, Pitch: 1}
	for i := 0; i < 10; i++ {
		if _, _, err := store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n, err := relay.Backlog(ctx); err != nil || n != 10 || b.count() != 0 {
		t.Fatalf("with the broker down: backlog %d (%v), stored %d", n, err, b.count())
	}
	var second string
	if err := db.Get(&second, `SELECT event_id FROM outbox ORDER BY id OFFSET 1 LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.down, b.failAt = false, second
	b.mu.Unlock()
	relay.Nudge()
	waitFor(t, "the backlog to drain", func() bool { n, _ := relay.Backlog(ctx); return n == 0 })
	if b.count() != 10 {
		t.Fatalf("stored %d events, want 10", b.count())
	}
	seen := map[string]bool{}
	for _, m := range b.stored {
		if seen[m.ID] {
			t.Errorf("event %s published twice", m.ID)
		}
		seen[m.ID] = true
		e, err := events.Decode(m.Body)
		if err != nil || e.ID != m.ID || e.Subject() != m.Subject {
			t.Errorf("published %s: %+v %v", m.Subject, e, err)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}

// Events handed over as they commit are published from memory and their
// rows deleted, with no claim; those the broker refuses stay in the outbox
// until a claim publishes them.
func TestRelayPublishesHandedEvents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := pgtest.Fresh(t, pg)
	b := &broker{}
	// Claims happen only at start, on Nudge and after a failure: the poll
	// never comes.
	reg := prometheus.NewRegistry()
	relay := outbox.New(db, b, slog.New(slog.NewTextHandler(io.Discard, nil)), outbox.Config{Batch: 4, Poll: time.Hour}, reg)
	store, err := postgres.NewStore(ctx, db, postgres.WithCommitHook(relay.Committed))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	spec := domain.SprocketSpec{Teeth: 1, PitchDiameter: 1, OutsideDiameter: 1, Pitch: 1}
	create := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if _, _, err := store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	// One event handed over before the relay runs, and one row nobody
	// handed over: the first round publishes the first, then claims the
	// second. Once that is published, the claim has taken its rows: the
	// events handed over after it are not claimed too. (Created while the
	// claim was yet to come, they could be published twice: the broker
	// drops such a duplicate by its id, this one does not.)
	create(1)
	unhandedCopy(t, db)
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	waitFor(t, "the first round", func() bool { return b.count() == 2 })
	create(20)
	waitFor(t, "20 events to be published", func() bool { return b.count() == 22 })
	waitFor(t, "their rows to be deleted", func() bool { n, _ := relay.Backlog(ctx); return n == 0 })

	b.mu.Lock()
	b.down = true
	b.mu.Unlock()
	create(5)
	waitFor(t, "a failed publication", func() bool { return failures(t, reg) > 0 })
	if n, err := relay.Backlog(ctx); err != nil || n != 5 {
		t.Fatalf("with the broker down: backlog %d (%v), want 5", n, err)
	}
	b.mu.Lock()
	b.down = false
	b.mu.Unlock()
	waitFor(t, "the refused events to be claimed and published", func() bool { return b.count() == 27 })
	waitFor(t, "the outbox to drain", func() bool { n, _ := relay.Backlog(ctx); return n == 0 })
	seen := map[string]bool{}
	for _, m := range b.stored {
		if seen[m.ID] {
			t.Errorf("event %s published twice", m.ID)
		}
		seen[m.ID] = true
		if e, err := events.Decode(m.Body); err != nil || e.ID != m.ID || e.Subject() != m.Subject {
			t.Errorf("published %s: %+v %v", m.Subject, e, err)
		}
	}
	cancel()
	<-done
}

// unhandedCopy adds to the outbox, which holds one row, a copy of it under
// another event id: a row nobody handed over, which only a claim publishes.
func unhandedCopy(t *testing.T, db *sqlx.DB) {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
		SELECT gen_random_uuid(), subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload FROM outbox`); err != nil {
		t.Fatal(err)
	}
}

// quietRelay returns a relay to b whose claims happen at start and on
// Nudge only, and whose deletions never fall due.
func quietRelay(db *sqlx.DB, b *broker) *outbox.Relay {
	return outbox.New(db, b, slog.New(slog.NewTextHandler(io.Discard, nil)),
		outbox.Config{Batch: 4, Poll: time.Hour, DeleteAfter: time.Hour}, prometheus.NewRegistry())
}

// The rows of published events are deleted together, later: before the
// next claim, which so never publishes them again, and when Run returns.
func TestRelayDeletesPublishedRowsTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := pgtest.Fresh(t, pg)
	b := &broker{}
	relay := quietRelay(db, b)
	store, err := postgres.NewStore(ctx, db, postgres.WithCommitHook(relay.Committed))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows := func() int {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM outbox`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	spec := domain.SprocketSpec{Teeth: 1, PitchDiameter: 1, OutsideDiameter: 1, Pitch: 1}
	create := func(n int) {
		for range n {
			if _, _, err := store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One event handed over before Run: its first round publishes it, then
	// claims, and that claim must not publish it again; it takes a row
	// nobody handed over instead, whose publication marks the round's end.
	// (Created before that, an event could be claimed before it is handed
	// over, and be published twice: the broker drops such a duplicate by
	// its id, this one does not.)
	create(1)
	unhandedCopy(t, db)
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	waitFor(t, "the first round", func() bool { return b.count() == 2 })

	create(6) // six commits, six hand-offs
	waitFor(t, "6 more events to be published", func() bool { return b.count() == 8 })
	if n := rows(); n != 6 {
		t.Fatalf("%d outbox rows right after publication, want all 6 still there", n)
	}
	relay.Nudge()
	waitFor(t, "the rows to be deleted before the claim", func() bool { return rows() == 0 })
	time.Sleep(100 * time.Millisecond) // for the claim that follows
	if b.count() != 8 {
		t.Fatalf("the claim published %d events again", b.count()-8)
	}

	create(3)
	waitFor(t, "3 more events to be published", func() bool { return b.count() == 11 })
	cancel()
	<-done
	if n := rows(); n != 0 {
		t.Fatalf("%d outbox rows left after Run returned, want 0", n)
	}
}

// The claim must find its rows through the primary key however the outbox
// looked when the claim was first planned. Planned on a table of a page, a
// cached plan scanned the whole table for the ids it had just picked, and
// deleted rows awaiting vacuum made that thousands of pages per batch.
func TestClaimDoesNotScanTheOutbox(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, db := setup(t)
	relayDB, conn := scanCounting(t, db)
	b := &broker{}
	// Claims happen only when nudged: each one is counted.
	relay := outbox.New(relayDB, b, slog.New(slog.NewTextHandler(io.Discard, nil)), outbox.Config{Batch: 4, Poll: time.Hour}, prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()

	// A dozen claims on a table of one page: enough for a plan to be cached.
	spec := domain.SprocketSpec{Teeth: 1, PitchDiameter: 1, OutsideDiameter: 1, Pitch: 1}
	for i := 1; i <= 12; i++ {
		if _, _, err := store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
			t.Fatal(err)
		}
		relay.Nudge()
		waitFor(t, "the event to be published", func() bool { return b.count() == i })
	}
	// Tens of thousands of deleted rows, and 100 to relay in 25 claims.
	bloat(t, conn)
	before := outboxScans(t, conn, relayDB)
	relay.Nudge()
	waitFor(t, "the outbox to drain", func() bool { return b.count() == 112 })
	scans := outboxScans(t, conn, relayDB) - before
	// Nothing of the relay reads it whole, not even the backlog count. (A
	// few scans may come from other sessions of the test whose statistics
	// reach the table late: the schema's own.)
	if scans > 3 {
		t.Errorf("%d whole-table scans of the outbox for 26 claims", scans)
	}
	cancel()
	<-done
}

// Counting the backlog does not read the whole outbox either: between two
// vacuums it is mostly deleted rows.
func TestBacklogDoesNotScanTheOutbox(t *testing.T) {
	ctx := context.Background()
	_, db := setup(t)
	relayDB, conn := scanCounting(t, db)
	relay := quietRelay(relayDB, &broker{})
	bloat(t, conn)
	before := outboxScans(t, conn, relayDB)
	// Ten counts: a count that read the table would be ten scans; a few
	// may come from other sessions of the test whose statistics reach the
	// table late.
	for range 10 {
		if n, err := relay.Backlog(ctx); err != nil || n != 100 {
			t.Fatalf("backlog %d (%v), want 100", n, err)
		}
	}
	if scans := outboxScans(t, conn, relayDB) - before; scans > 3 {
		t.Errorf("%d whole-table scans of the outbox for 10 counts", scans)
	}
}

// scanCounting returns, for outboxScans, a pool of one connection to db
// for a relay, and a connection of the test's own.
func scanCounting(t *testing.T, db *sqlx.DB) (*sqlx.DB, *sqlx.Conn) {
	t.Helper()
	ctx := context.Background()
	relayDB, err := postgres.Open(ctx, pg.URL(dbName(t, db)), 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relayDB.Close() })
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return relayDB, conn
}

// bloat leaves tens of thousands of deleted rows in the outbox, as a load
// does between two vacuums, and 100 live rows after them.
func bloat(t *testing.T, conn *sqlx.Conn) {
	t.Helper()
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, `INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
		SELECT gen_random_uuid(), 'sprockets.sprocket.1', 'sprocket.created', 'sprocket', g, 1, 1, now(), '{}'
		FROM generate_series(1, 30100) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `DELETE FROM outbox WHERE id <= (SELECT max(id) - 100 FROM outbox)`); err != nil {
		t.Fatal(err)
	}
}

// failures returns the relay's count of failed rounds.
func failures(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "sprockets_outbox_publish_failures_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no failure counter")
	return 0
}

func dbName(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var name string
	if err := db.Get(&name, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	return name
}

// outboxScans returns how many sequential scans of the outbox the server
// has counted, once the sessions of conn and relay have reported theirs
// (relay has a single connection: the relay's own).
func outboxScans(t *testing.T, conn *sqlx.Conn, relay *sqlx.DB) int64 {
	t.Helper()
	ctx := context.Background()
	for _, flush := range []sqlx.ExecerContext{conn, relay} {
		if _, err := flush.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
	}
	// A session flushes what it counted once it goes idle.
	time.Sleep(100 * time.Millisecond)
	var n int64
	if err := conn.GetContext(ctx, &n, `SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'outbox'`); err != nil {
		t.Fatal(err)
	}
	return n
}

// Events handed over are published without waiting for the count of the
// outbox's rows (the backlog gauge, every second): here the count waits on
// a lock, and a handed event goes out all the same.
func TestHandedEventsDoNotWaitForTheBacklogCount(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := pgtest.Fresh(t, pg)
	b := &broker{}
	relay := quietRelay(db, b)
	hand := func(id int64) {
		e, err := events.New(uuid.NewString(), events.Created, events.Sprocket, id, 1, 1, time.Now(), events.SprocketPayload{})
		if err != nil {
			t.Fatal(err)
		}
		relay.Committed([]events.Envelope{e})
	}
	// A row from before the relay runs: once its claim has committed, the
	// relay's first round is over, and nothing of it waits on the lock.
	if _, err := db.ExecContext(ctx, `INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
		VALUES (gen_random_uuid(), 'sprockets.sprocket.1', 'sprocket.created', 'sprocket', 1, 1, 1, now(), '{}')`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	waitFor(t, "the first round", func() bool { n, _ := relay.Backlog(ctx); return b.count() == 1 && n == 0 })

	lock, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, `LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// The count is made after a round (before the fix) or on its own
	// ticker: a second event gets a round going, then the count waits.
	time.Sleep(1100 * time.Millisecond)
	hand(2)
	waitFor(t, "the second event", func() bool { return b.count() == 2 })
	waitFor(t, "the count to wait on the lock", func() bool {
		var n int
		err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%count(*)%' AND query NOT LIKE '%pg_stat_activity%'
			AND wait_event_type = 'Lock'`)
		return err == nil && n == 1
	})
	hand(3)
	waitFor(t, "the third event, while the count waits", func() bool { return b.count() == 3 })
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
}
