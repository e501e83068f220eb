package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

// Store writes to the leader. Each write method runs one transaction that
// changes the rows, bumps the aggregate's version and records the events in
// the outbox; nothing is published from here (the commit hook hands the
// events to whoever publishes them).
type Store struct {
	db       *sqlx.DB
	now      func() time.Time
	newID    func() string
	onCommit func([]events.Envelope)

	// Hot statements, prepared once: planning costs more than running them.
	stmts map[string]*sqlx.Stmt

	creates *creates
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now; tests use it for deterministic timestamps.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithIDs replaces the random event id generator.
func WithIDs(newID func() string) Option { return func(s *Store) { s.newID = newID } }

// WithCommitHook sets a function called after each commit that recorded
// events, with those events, so that the outbox relay can publish them at
// once instead of reading them back on its next poll. It must not block,
// nor keep the slice's elements from being read meanwhile.
func WithCommitHook(fn func([]events.Envelope)) Option { return func(s *Store) { s.onCommit = fn } }

// NewStore returns a Store writing to the leader db, with its hot
// statements prepared.
func NewStore(ctx context.Context, db *sqlx.DB, opts ...Option) (*Store, error) {
	s := &Store{db: db, now: time.Now, newID: uuid.NewString, onCommit: func([]events.Envelope) {}}
	for _, o := range opts {
		o(s)
	}
	s.stmts = map[string]*sqlx.Stmt{}
	for _, q := range []string{commitLSN, insertEvents, lockOrgsTakeIDs, insertSprockets, replayKey} {
		stmt, err := db.PreparexContext(ctx, q)
		if err != nil {
			s.closeStmts()
			return nil, fmt.Errorf("prepare %.40q: %w", q, err)
		}
		s.stmts[q] = stmt
	}
	s.creates = newCreates(s)
	return s, nil
}

// Close waits for the creates being written, fails those still queued, and
// releases the prepared statements.
func (s *Store) Close() error {
	s.creates.close()
	return s.closeStmts()
}

func (s *Store) closeStmts() error {
	var errs []error
	for _, stmt := range s.stmts {
		errs = append(errs, stmt.Close())
	}
	return errors.Join(errs...)
}

// stmt returns the prepared statement of query (one of those NewStore
// prepares), in tx.
func (s *Store) stmt(ctx context.Context, tx *sqlx.Tx, query string) *sqlx.Stmt {
	return tx.StmtxContext(ctx, s.stmts[query])
}

// lsn returns the token of a write just committed: see commitLSN.
func (s *Store) lsn(ctx context.Context) (string, error) {
	var lsn string
	if err := s.stmts[commitLSN].GetContext(ctx, &lsn); err != nil {
		return "", fmt.Errorf("commit lsn: %w", err)
	}
	return lsn, nil
}

// DB returns the leader the store writes to.
func (s *Store) DB() *sqlx.DB { return s.db }

// recorder collects the events of one transaction, and who made each.
type recorder struct {
	store  *Store
	at     time.Time
	actor  domain.Actor // the write's
	events []events.Envelope
	actors []domain.Actor // by event
}

// record records an event made by the write's actor.
func (r *recorder) record(typ, aggregate string, id, org, version int64, payload any) error {
	return r.recordBy(r.actor, typ, aggregate, id, org, version, payload)
}

// recordBy records an event made by actor: the creates of a group each
// have their own.
func (r *recorder) recordBy(actor domain.Actor, typ, aggregate string, id, org, version int64, payload any) error {
	e, err := events.New(r.store.newID(), typ, aggregate, id, org, version, r.at, payload)
	if err != nil {
		return err
	}
	r.events = append(r.events, e)
	r.actors = append(r.actors, actor)
	return nil
}

// insertEvents writes events into the outbox, and their audit rows: the
// i-th element of each array is the i-th event's.
const insertEvents = `
		WITH e AS (
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
			                     $7::bigint[], $8::jsonb[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[])
			AS u(event_id, subject, type, aggregate_type, aggregate_id, org_id, version, payload,
			     token_id, actor, client_addr, user_agent, request_id)),
		o AS (
			INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
			SELECT event_id, subject, type, aggregate_type, aggregate_id, org_id, version, $14, payload FROM e)
		INSERT INTO audit_log (org_id, token_id, actor, client_addr, user_agent, request_id,
		                       action, resource_type, resource_id, version, changes, at)
		SELECT org_id, NULLIF(token_id, 0), actor, client_addr, user_agent, request_id,
		       aggregate_type || '.' || type, aggregate_type, aggregate_id, version, payload, $14 FROM e`

// insert writes the recorded events into the outbox and their audit rows,
// in one statement however many there are.
func (r *recorder) insert(ctx context.Context, tx *sqlx.Tx) error {
	n := len(r.events)
	if n == 0 {
		return nil
	}
	var (
		ids, subjects, types, kinds = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		aggregates, orgs, versions  = make([]int64, n), make([]int64, n), make([]int64, n)
		payloads, tokens            = make([]string, n), make([]int64, n)
		actors, clients             = make([]string, n), make([]string, n)
		agents, requests            = make([]string, n), make([]string, n)
	)
	for i, e := range r.events {
		ids[i], subjects[i], types[i], kinds[i] = e.ID, e.Subject(), e.Type, e.AggregateType
		aggregates[i], orgs[i], versions[i], payloads[i] = e.AggregateID, e.OrgID, e.Version, string(e.Payload)
		a := r.actors[i]
		tokens[i], actors[i], clients[i], agents[i], requests[i] = a.TokenID, a.Kind, a.ClientAddr, a.UserAgent, a.RequestID
	}
	_, err := r.store.stmt(ctx, tx, insertEvents).ExecContext(ctx,
		pq.Array(ids), pq.Array(subjects), pq.Array(types), pq.Array(kinds), pq.Array(aggregates), pq.Array(orgs),
		pq.Array(versions), pq.Array(payloads), pq.Array(tokens), pq.Array(actors), pq.Array(clients),
		pq.Array(agents), pq.Array(requests), r.at)
	if err != nil {
		return fmt.Errorf("insert outbox and audit rows: %w", err)
	}
	return nil
}

// write runs fn in a transaction on the leader, inserts the events fn
// recorded into the outbox with one audit row each (attributed to the actor
// each was recorded by: actor, unless recordBy named another), commits, and
// returns the WAL position after the commit. fn's error rolls everything
// back and is returned as is; a database that cannot answer is an
// EUNAVAILABLE error.
func (s *Store) write(ctx context.Context, actor domain.Actor, fn func(tx *sqlx.Tx, rec *recorder) error) (_ string, err error) {
	defer func() { err = unavailable(err) }()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	rec := &recorder{store: s, at: s.timestamp(), actor: actor}
	if err := fn(tx, rec); err != nil {
		return "", err
	}
	if err := rec.insert(ctx, tx); err != nil {
		return "", err
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	if len(rec.events) > 0 {
		s.onCommit(rec.events)
	}
	lsn, err := s.lsn(ctx)
	if err != nil {
		// Committed all the same: an error would have the client retry a
		// write that is done.
		return unknownLSN, nil
	}
	return lsn, nil
}

// timestamp is now at the precision Postgres stores, so that a value read
// back from a row equals the one sent in the event.
func (s *Store) timestamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }
