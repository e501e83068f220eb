package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Reads answers the read side's queries on one database: the leader or a
// replica, or a snapshot of either.
type Reads struct {
	db *sqlx.DB // nil inside a snapshot
	q  Querier
}

// NewReads returns Reads over db.
func NewReads(db *sqlx.DB) Reads { return Reads{db: db, q: db} }

// Snapshot runs fn with Reads inside a read-only REPEATABLE READ
// transaction, so that an answer made of several queries (factories and
// their samples) reflects one state. It works on replicas too. Inside a
// snapshot it just calls fn.
func (r Reads) Snapshot(ctx context.Context, fn func(Reads) error) error {
	if r.db == nil {
		return fn(r)
	}
	tx, err := r.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin snapshot: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only; Commit reports errors
	if err := fn(Reads{q: tx}); err != nil {
		return err
	}
	return tx.Commit()
}

// FactoryHistory returns factory id (tombstones included) and its whole
// history in time order, from one snapshot. The history is read only when
// the factory is live and belongs to org (or org is domain.AnyOrg): a caller of
// another organization costs one row, not a history. Errors: ENOTFOUND.
func (r Reads) FactoryHistory(ctx context.Context, org, id int64) (f domain.Factory, samples []domain.Sample, err error) {
	return r.FactorySamples(ctx, org, id, 0, domain.MaxSampleTime, 0)
}

// FactoryBucketsSince returns factory id and, in time order, every sample of
// each time bucket (of bucketSeconds) in which the factory gained a sample
// after version: what a read model that holds version must rewrite.
// Errors: ENOTFOUND.
func (r Reads) FactoryBucketsSince(ctx context.Context, id, version, bucketSeconds int64) (f domain.Factory, samples []domain.Sample, err error) {
	err = r.Snapshot(ctx, func(r Reads) error {
		if f, err = r.Factory(ctx, id); err != nil {
			return err
		}
		err = r.q.SelectContext(ctx, &samples, `
			SELECT time, actual, goal FROM factory_samples
			WHERE factory_id = $1 AND time / $3 IN (
				SELECT DISTINCT time / $3 FROM factory_samples WHERE factory_id = $1 AND version > $2)
			ORDER BY time`, id, version, bucketSeconds)
		if err != nil {
			return fmt.Errorf("samples of changed buckets: %w", err)
		}
		return nil
	})
	return f, samples, err
}

// FactoriesWithSamples returns every factory org ever had (tombstones
// included) and the histories of the live ones, from one snapshot.
func (r Reads) FactoriesWithSamples(ctx context.Context, org int64) (all []domain.Factory, samples map[int64][]domain.Sample, err error) {
	err = r.Snapshot(ctx, func(r Reads) error {
		if all, err = r.FactoriesOfOrg(ctx, org); err != nil {
			return err
		}
		samples, err = r.SamplesOfOrg(ctx, org)
		return err
	})
	return all, samples, err
}

// FactorySamples returns factory id (tombstones included) and its samples
// with from <= time <= to, the first limit of them (0: all), from one
// snapshot; the samples only when the factory is live and belongs to org
// (or org is domain.AnyOrg). Errors: ENOTFOUND.
func (r Reads) FactorySamples(ctx context.Context, org, id, from, to int64, limit int) (f domain.Factory, samples []domain.Sample, err error) {
	err = r.Snapshot(ctx, func(r Reads) error {
		if f, err = r.Factory(ctx, id); err != nil {
			return err
		}
		if f.Deleted() || (org != domain.AnyOrg && f.OrgID != org) {
			return nil
		}
		samples, err = r.Samples(ctx, id, from, to, limit)
		return err
	})
	return f, samples, err
}
