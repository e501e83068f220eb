// Package outbox relays events that the writer committed to its outbox table
// to the message broker: it claims rows by deleting them in a transaction,
// publishes each with its event id as the de-duplication id, commits once
// the broker stored them (the stream keeps the events), and backs off while
// the broker is down. Writes never wait for it.
package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/progress"
)

// Publisher sends events and reports, for each, nil once the broker has
// stored it.
type Publisher interface {
	PublishAll(ctx context.Context, msgs []events.Outgoing) []error
}

// Config tunes a Relay.
type Config struct {
	Batch int           // rows claimed per transaction
	Poll  time.Duration // how often to look for rows nobody nudged about
	// DeleteAfter is how long the rows of published events may wait to be
	// deleted together; 0 means 50ms.
	DeleteAfter time.Duration
	// StuckAfter is how long a row may wait in the outbox before the relay
	// calls the pipeline stuck (Stuck); 0 means a minute.
	StuckAfter time.Duration
}

// Relay publishes committed outbox rows.
type Relay struct {
	db    *sqlx.DB
	pub   Publisher
	log   *slog.Logger
	cfg   Config
	nudge chan struct{} // wakes Run; holds at most one signal
	claim *sqlx.Stmt    // claimRows, prepared on first use

	mu        sync.Mutex
	handed    []events.Envelope // committed, not yet published: see Committed
	claimSoon bool              // a claim was asked for: see Nudge

	// Handed events the broker stored, whose rows are not deleted yet; only
	// Run uses them. See deleteSent.
	sent      []uuid.UUID
	sentSince time.Time // when the oldest of sent was published

	backlog   prometheus.Gauge
	published prometheus.Counter
	failures  prometheus.Counter
	progress  *progress.Watch
}

// New returns a relay over the outbox table in db. Its metrics are
// registered with reg.
func New(db *sqlx.DB, pub Publisher, log *slog.Logger, cfg Config, reg prometheus.Registerer) *Relay {
	if cfg.DeleteAfter <= 0 {
		cfg.DeleteAfter = defaultDeleteAfter
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = time.Minute
	}
	r := &Relay{
		db: db, pub: pub, log: log, cfg: cfg, nudge: make(chan struct{}, 1),
		progress: progress.New("relay", cfg.StuckAfter, reg),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_outbox_backlog", Help: "Outbox rows: committed events not yet published to the broker (and, briefly, published ones not yet deleted).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_outbox_published_total", Help: "Events published by the relay.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_outbox_publish_failures_total", Help: "Relay rounds that failed to publish.",
		}),
	}
	reg.MustRegister(r.backlog, r.published, r.failures)
	return r
}

// Nudge tells the relay that rows were committed that were not handed over
// (Committed): it claims from the outbox at once instead of at its next
// poll. It never blocks.
func (r *Relay) Nudge() {
	r.mu.Lock()
	r.claimSoon = true
	r.mu.Unlock()
	r.wake()
}

// maxHanded bounds the events waiting for the relay in memory. Past it,
// events are left to the claims: their rows are in the outbox anyway.
const maxHanded = 4096

// The rows of published events are deleted together, in one statement, once
// the oldest has waited Config.DeleteAfter or deleteMax are waiting, before
// any claim (so that a claim never takes a row this relay has published) and
// when Run returns. A deletion per hand-off cost about as much as the rest
// of the relay.
const (
	defaultDeleteAfter = 50 * time.Millisecond
	deleteMax          = 4096
	// keepSentMax bounds the ids kept for another try while deletions fail;
	// past it they are forgotten, and claims publish those events again.
	keepSentMax = 4 * deleteMax
)

// Committed hands the relay events whose outbox rows have just committed,
// so that it publishes them from memory and deletes their rows, without
// reading them back. It never blocks. An event it drops, or fails to
// publish, stays in the outbox for the next claim.
func (r *Relay) Committed(envs []events.Envelope) {
	r.mu.Lock()
	if len(r.handed)+len(envs) <= maxHanded {
		r.handed = append(r.handed, envs...)
	} else {
		r.claimSoon = true
	}
	r.mu.Unlock()
	r.wake()
}

func (r *Relay) wake() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// take returns the events handed over since the last call, and whether a
// claim was asked for.
func (r *Relay) take() ([]events.Envelope, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	handed, claim := r.handed, r.claimSoon
	r.handed, r.claimSoon = nil, false
	return handed, claim
}

// Run relays until ctx is done: events handed over as they commit, and
// claims from the outbox at start, on each poll, when nudged and while
// claims come back full. Failures are logged and retried with exponential
// backoff, by claims: the events that failed wait in the outbox. Run returns
// only ctx's error.
func (r *Relay) Run(ctx context.Context) error {
	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	deleteDue := time.NewTimer(r.cfg.DeleteAfter)
	defer deleteDue.Stop()
	// The count goes on beside the loop; on return, the published rows
	// are deleted first (the deferred calls run last first).
	var watch sync.WaitGroup
	defer watch.Wait()
	watch.Go(func() { r.watchBacklog(ctx) })
	defer r.deleteOnExit(ctx)
	var (
		backoff time.Duration
		claim   = true // rows may be waiting from before
	)
	for {
		err := r.round(ctx, &claim)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.failures.Inc()
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			r.log.Warn("outbox relay", "err", err, "retry_in", backoff)
			claim = true
		} else {
			backoff = 0
		}
		if backoff > 0 {
			// Publishing just failed: wait it out, however many events are
			// handed over meanwhile, rather than busy loop against a dead
			// broker. The claims after it publish them.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			r.take()
			continue
		}
		if claim {
			continue // more rows are waiting
		}
		var deleteC <-chan time.Time
		if len(r.sent) > 0 {
			deleteDue.Reset(time.Until(r.sentSince.Add(r.cfg.DeleteAfter)))
			deleteC = deleteDue.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.nudge:
		case <-deleteC:
		case <-poll.C:
			claim = true
		}
	}
}

// deleteOnExit deletes the rows of what was published before Run returns,
// so that a relay that stops publishes nothing twice when it starts again.
func (r *Relay) deleteOnExit(ctx context.Context) {
	if len(r.sent) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.deleteSent(dctx); err != nil {
		r.log.Warn("outbox relay: delete published rows", "err", err)
	}
}

// round publishes the events handed over, then claims a batch from the
// outbox if *claim; *claim tells afterwards whether more rows are waiting.
func (r *Relay) round(ctx context.Context, claim *bool) error {
	handed, asked := r.take()
	*claim = *claim || asked
	var pubErr error
	if len(handed) > 0 {
		pubErr = r.publishHanded(ctx, handed)
	}
	if len(r.sent) > 0 && (*claim || pubErr != nil || len(r.sent) >= deleteMax || time.Since(r.sentSince) >= r.cfg.DeleteAfter) {
		if err := r.deleteSent(ctx); err != nil {
			return err
		}
	}
	if pubErr != nil {
		return pubErr
	}
	if !*claim {
		return nil
	}
	n, err := r.relayOnce(ctx)
	*claim = err == nil && n == r.cfg.Batch
	return err
}

// Row is one outbox row: an event waiting to be published.
type Row struct {
	Seq           int64     `db:"id"`
	EventID       string    `db:"event_id"`
	Subject       string    `db:"subject"`
	Type          string    `db:"type"`
	AggregateType string    `db:"aggregate_type"`
	AggregateID   int64     `db:"aggregate_id"`
	OrgID         int64     `db:"org_id"`
	Version       int64     `db:"version"`
	OccurredAt    time.Time `db:"occurred_at"`
	Payload       []byte    `db:"payload"`
}

const columns = `id, event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload`

// Envelope returns the row's event.
func (r Row) Envelope() events.Envelope {
	return events.Envelope{
		ID: r.EventID, Type: r.Type, AggregateType: r.AggregateType, AggregateID: r.AggregateID,
		OrgID: r.OrgID, Version: r.Version, OccurredAt: r.OccurredAt.UTC(), Payload: r.Payload,
	}
}

// outgoing encodes the row's event as published.
func (r Row) outgoing() (events.Outgoing, error) {
	m, err := outgoing(r.Envelope(), r.Subject)
	if err != nil {
		return events.Outgoing{}, fmt.Errorf("outbox row %d: %w", r.Seq, err)
	}
	return m, nil
}

// outgoing encodes e as published on subject, with its id for the broker
// to drop duplicates by.
func outgoing(e events.Envelope, subject string) (events.Outgoing, error) {
	body, err := e.Encode()
	if err != nil {
		return events.Outgoing{}, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return events.Outgoing{ID: e.ID, Subject: subject, Body: body}, nil
}

// Read returns the rows after sequence number after, in order, without
// claiming them: for tools and tests that inspect what is waiting.
func Read(ctx context.Context, db *sqlx.DB, after int64) ([]Row, error) {
	var rows []Row
	if err := db.SelectContext(ctx, &rows, `SELECT `+columns+` FROM outbox WHERE id > $1 ORDER BY id`, after); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return rows, nil
}

// claimRows deletes the oldest rows no other relay holds, up to a batch,
// and returns them: one statement, whose deletion only commits once the
// broker has stored the events. SKIP LOCKED lets several writer instances
// relay side by side without waiting on each other's batches. The ids go
// through an array so that the delete finds them by the primary key: with
// "id IN (SELECT ...)" the planner hashes the subquery and scans the whole
// table, dead rows and all.
const claimRows = `DELETE FROM outbox WHERE id = ANY(ARRAY(
	SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
	RETURNING ` + columns

// claimSettings tunes the claim's transaction, in one round trip.
//   - The claim need not wait for its commit to reach disk: should a crash
//     lose it, the rows come back and are published again, and the broker
//     (by event id) and the projector (by version) drop the duplicates.
//     Waiting for the flush would hold every event committed meanwhile.
//   - The claim is planned for the outbox as it is now. Its cached generic
//     plan, made when the table was a page or two, scans the whole table to
//     find the ids; as deleted rows pile up until the next vacuum, that
//     scan reads thousands of pages per batch.
const claimSettings = `SELECT set_config('synchronous_commit', 'off', true),
	set_config('plan_cache_mode', 'force_custom_plan', true)`

// relayOnce publishes one batch and returns how many rows it claimed. When
// some of the batch failed, the rows the broker stored are still deleted.
func (r *Relay) relayOnce(ctx context.Context) (int, error) {
	if r.claim == nil {
		stmt, err := r.db.PreparexContext(ctx, claimRows)
		if err != nil {
			return 0, fmt.Errorf("prepare claim: %w", err)
		}
		r.claim = stmt
	}
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.ExecContext(ctx, claimSettings); err != nil {
		return 0, fmt.Errorf("claim settings: %w", err)
	}
	var rows []Row
	if err := tx.StmtxContext(ctx, r.claim).SelectContext(ctx, &rows, r.cfg.Batch); err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	slices.SortFunc(rows, func(a, b Row) int { return cmp.Compare(a.Seq, b.Seq) })
	msgs := make([]events.Outgoing, len(rows))
	for i, m := range rows {
		if msgs[i], err = m.outgoing(); err != nil {
			return 0, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	errs := r.pub.PublishAll(pctx, msgs)
	cancel()
	sent := make([]int64, 0, len(rows))
	var pubErr error
	for i, err := range errs {
		if err != nil {
			pubErr = err
			continue
		}
		sent = append(sent, rows[i].Seq)
	}
	if pubErr == nil {
		if err := tx.Commit(); err != nil {
			return 0, fmt.Errorf("commit sent: %w", err)
		}
		r.published.Add(float64(len(sent)))
		return len(rows), nil
	}
	// Keep the rows that failed: put the batch back, then delete what was
	// sent. Should another relay publish those meanwhile, the broker drops
	// the duplicates by event id.
	if err := tx.Rollback(); err != nil {
		return 0, fmt.Errorf("roll back claim: %w", err)
	}
	if len(sent) > 0 {
		if _, err := r.db.ExecContext(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, pq.Array(sent)); err != nil {
			return 0, fmt.Errorf("delete sent: %w", err)
		}
		r.published.Add(float64(len(sent)))
	}
	return len(rows), pubErr
}

// publishHanded publishes events committed moments ago and keeps the ids
// of those the broker stored, for deleteSent.
func (r *Relay) publishHanded(ctx context.Context, envs []events.Envelope) error {
	msgs := make([]events.Outgoing, len(envs))
	for i, e := range envs {
		var err error
		if msgs[i], err = outgoing(e, e.Subject()); err != nil {
			return err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	errs := r.pub.PublishAll(pctx, msgs)
	cancel()
	var pubErr error
	for i, err := range errs {
		if err != nil {
			pubErr = err
			continue
		}
		r.published.Inc()
		id, err := uuid.Parse(envs[i].ID)
		if err != nil {
			continue // not an outbox row's id: nothing to delete
		}
		if len(r.sent) == 0 {
			r.sentSince = time.Now()
		}
		r.sent = append(r.sent, id)
	}
	return pubErr
}

// deleteSent deletes the rows of the published events in one statement, its
// ids written into its text: a simple query is planned afresh each time, so
// it finds the rows by the event id's index however small the outbox was
// when a prepared plan would have been made. Like a claim, it commits
// without waiting for the flush: a lost deletion only publishes the events
// again. Rows a claim took meanwhile (another writer's) are simply gone.
func (r *Relay) deleteSent(ctx context.Context) error {
	var q strings.Builder
	q.Grow(len(r.sent)*37 + 160)
	q.WriteString(`WITH sent AS (DELETE FROM outbox WHERE event_id = ANY('{`)
	for i, id := range r.sent {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString(id.String())
	}
	q.WriteString(`}'::uuid[]) RETURNING 1)
		SELECT set_config('synchronous_commit', 'off', true), (SELECT count(*) FROM sent)`)
	if _, err := r.db.ExecContext(ctx, q.String()); err != nil {
		if len(r.sent) > keepSentMax {
			r.sent = r.sent[:0]
		}
		return fmt.Errorf("delete published rows: %w", err)
	}
	r.sent = r.sent[:0]
	return nil
}

// Backlog returns how many rows the outbox holds: committed events not yet
// published, and for at most Config.DeleteAfter those published whose rows
// are about to be deleted.
func (r *Relay) Backlog(ctx context.Context) (int64, error) {
	n, _, err := r.backlogSince(ctx)
	return n, err
}

// backlogSince returns the rows in the outbox and when the write of the
// first of them (by id: the head of the queue) began, by its writer's
// clock: every relay sees the same, so that one relay
// idle beside another that publishes everything is not taken for stuck.
//
// Both go by the primary key's index, as the claims do: a count of the
// table itself reads every page of it, and between two vacuums, under a
// few thousand events a second, those are mostly deleted rows (11 to 60
// ms a count, once a second, measured with 240,000 of them; 1 ms by the
// index once a first scan has marked them dead). The planner, which does
// not know the pages are mostly dead, is told not to scan the table.
func (r *Relay) backlogSince(ctx context.Context) (int64, time.Time, error) {
	var row struct {
		N      int64     `db:"n"`
		Oldest time.Time `db:"oldest"`
	}
	tx, err := r.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox backlog: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to keep
	if _, err := tx.ExecContext(ctx, `SELECT set_config('enable_seqscan', 'off', true)`); err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox backlog: %w", err)
	}
	if err := tx.GetContext(ctx, &row, `SELECT
		(SELECT count(*) FROM (SELECT id FROM outbox ORDER BY id) AS live) AS n,
		coalesce((SELECT occurred_at FROM outbox ORDER BY id LIMIT 1), now()) AS oldest`); err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox backlog: %w", err)
	}
	return row.N, row.Oldest, nil
}

// backlogTimeout bounds one count of the outbox's rows.
const backlogTimeout = 2 * time.Second

// watchBacklog counts the outbox's rows every second until ctx is done,
// for the backlog gauge and the readiness check. It runs beside the
// publishing loop, not in it: when it read the whole table, it took 20 to
// 70 ms once deleted rows had piled up under load, and the events handed
// over meanwhile waited for it (write-to-visible p99 32 ms in a large
// organization at 200 writes/s).
//
// A count that takes longer than backlogTimeout (a lock on the table, a
// database away) is given up, and the gauge keeps its last value.
func (r *Relay) watchBacklog(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, backlogTimeout)
		n, oldest, err := r.backlogSince(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.Warn("outbox backlog", "err", err)
		default:
			r.backlog.Set(float64(n))
			r.progress.WaitingSince(n, oldest)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Stuck returns an error while a row has waited in the outbox for longer
// than Config.StuckAfter: a readiness check.
func (r *Relay) Stuck(ctx context.Context) error { return r.progress.Check(ctx) }
