package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

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
	createSprockets *sqlx.Stmt
	commitLSN       *sqlx.Stmt

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
	var err error
	// See the create_sprockets procedure in the schema.
	if s.createSprockets, err = db.PreparexContext(ctx,
		`CALL create_sprockets($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`); err != nil {
		return nil, fmt.Errorf("prepare create sprockets: %w", err)
	}
	if s.commitLSN, err = db.PreparexContext(ctx, commitLSN); err != nil {
		s.createSprockets.Close()
		return nil, fmt.Errorf("prepare commit lsn: %w", err)
	}
	s.creates = newCreates(s.createSprockets, s.timestamp, s.onCommit)
	return s, nil
}

// Close waits for the creates being written, fails those still queued, and
// releases the prepared statements.
func (s *Store) Close() error {
	s.creates.close()
	s.createSprockets.Close()
	return s.commitLSN.Close()
}

// lsn returns the token of a write just committed: see commitLSN.
func (s *Store) lsn(ctx context.Context) (string, error) {
	var lsn string
	if err := s.commitLSN.GetContext(ctx, &lsn); err != nil {
		return "", fmt.Errorf("commit lsn: %w", err)
	}
	return lsn, nil
}

// DB returns the leader the store writes to.
func (s *Store) DB() *sqlx.DB { return s.db }

// recorder collects the events of one transaction.
type recorder struct {
	store  *Store
	at     time.Time
	events []events.Envelope
}

func (r *recorder) record(typ, aggregate string, id, org, version int64, payload any) error {
	e, err := events.New(r.store.newID(), typ, aggregate, id, org, version, r.at, payload)
	if err != nil {
		return err
	}
	r.events = append(r.events, e)
	return nil
}

// write runs fn in a transaction on the leader, inserts the events fn
// recorded into the outbox with one audit row each (attributed to actor),
// commits, and returns the WAL position after the commit. fn's error rolls
// everything back and is returned as is; a database that cannot answer is
// an EUNAVAILABLE error.
func (s *Store) write(ctx context.Context, actor domain.Actor, fn func(tx *sqlx.Tx, rec *recorder) error) (_ string, err error) {
	defer func() { err = unavailable(err) }()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	rec := &recorder{store: s, at: s.timestamp()}
	if err := fn(tx, rec); err != nil {
		return "", err
	}
	for _, e := range rec.events {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			e.ID, e.Subject(), e.Type, e.AggregateType, e.AggregateID, e.OrgID, e.Version, e.OccurredAt, []byte(e.Payload)); err != nil {
			return "", fmt.Errorf("insert outbox: %w", err)
		}
		if err := audit(ctx, tx, actor, e); err != nil {
			return "", err
		}
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
