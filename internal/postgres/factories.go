package postgres

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

type factoryRow struct {
	ID          int64      `db:"id"`
	OrgID       int64      `db:"org_id"`
	Version     int64      `db:"version"`
	Name        string     `db:"name"`
	SampleCount int64      `db:"sample_count"`
	FirstTime   *int64     `db:"first_time"`
	LastTime    *int64     `db:"last_time"`
	CreatedAt   time.Time  `db:"created_at"`
	UpdatedAt   time.Time  `db:"updated_at"`
	DeletedAt   *time.Time `db:"deleted_at"`
}

const factoryColumns = `id, org_id, version, name, sample_count, first_time, last_time, created_at, updated_at, deleted_at`

func (r factoryRow) domain() domain.Factory {
	return domain.Factory{
		ID: r.ID, OrgID: r.OrgID, Version: r.Version, Name: r.Name,
		SampleCount: r.SampleCount, FirstTime: r.FirstTime, LastTime: r.LastTime,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), DeletedAt: utcPtr(r.DeletedAt),
	}
}

// CreateFactory stores a new factory with its initial samples (which may be
// empty) and its created event. Idempotency works as for CreateSprocket.
// spec and samples must be valid.
func (s *Store) CreateFactory(ctx context.Context, actor domain.Actor, spec domain.FactorySpec, samples []domain.Sample, idem domain.Idempotency) (domain.Factory, domain.Receipt, error) {
	org := actor.OrgID
	var earlier domain.Factory
	if idem.Key != "" {
		if r, found, err := s.replay(ctx, org, idem, events.Factory, &earlier); err != nil || found {
			r.Version = earlier.Version
			return earlier, r, err
		}
	}
	samples = sortedSamples(samples)
	var f domain.Factory
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		f = domain.Factory{OrgID: org, Version: 1, Name: spec.Name, CreatedAt: rec.at, UpdatedAt: rec.at}
		extend(&f, samples)
		// The organization's row is held (FOR KEY SHARE) until the commit,
		// as for a group of sprocket creates: see liveOrgsAndIDs.
		err := tx.GetContext(ctx, &f.ID, `
			INSERT INTO factories (org_id, name, sample_count, first_time, last_time, created_at, updated_at)
			SELECT o.id, $2, $3, $4, $5, $6, $6
			FROM (SELECT id FROM organizations WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE SKIP LOCKED) o
			RETURNING id`,
			org, f.Name, f.SampleCount, f.FirstTime, f.LastTime, rec.at)
		if isNoRows(err) {
			return domain.Errorf(domain.EUNAUTHENTICATED, "the token's organization was deleted")
		}
		if err != nil {
			return fmt.Errorf("insert factory: %w", err)
		}
		if _, err := insertSamples(ctx, tx, f.ID, f.Version, samples); err != nil {
			return err
		}
		if idem.Key != "" {
			taken, err := claimKeys(ctx, tx, []keyClaim{{org: org, idem: idem, kind: events.Factory, resource: f}})
			if err != nil {
				return err
			}
			if len(taken) > 0 {
				return errKeyTaken
			}
		}
		return rec.record(events.Created, events.Factory, f.ID, org, f.Version,
			events.FactoryPayload{Factory: f, Samples: samples})
	})
	if isKeyTaken(err) {
		r, err := s.replayTaken(ctx, org, idem, events.Factory, &earlier)
		r.Version = earlier.Version
		return earlier, r, err
	}
	if err != nil {
		return domain.Factory{}, domain.Receipt{}, err
	}
	return f, domain.Receipt{Version: f.Version, LSN: lsn}, nil
}

// UpdateFactory applies change to the live factory id of org.
// Errors: ENOTFOUND, ESTALE, EINVALID.
func (s *Store) UpdateFactory(ctx context.Context, actor domain.Actor, id, ifVersion int64, change func(domain.FactorySpec) domain.FactorySpec) (domain.Factory, domain.Receipt, error) {
	org := actor.OrgID
	var f domain.Factory
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		cur, err := lockFactory(ctx, tx, org, id, ifVersion)
		if err != nil {
			return err
		}
		f = cur
		next := change(domain.FactorySpec{Name: cur.Name})
		if err := next.Validate(); err != nil {
			return err
		}
		if next.Name == cur.Name {
			return nil
		}
		f.Name, f.Version, f.UpdatedAt = next.Name, cur.Version+1, rec.at
		if _, err := tx.ExecContext(ctx,
			`UPDATE factories SET name = $1, version = $2, updated_at = $3 WHERE id = $4`,
			f.Name, f.Version, rec.at, id); err != nil {
			return fmt.Errorf("update factory: %w", err)
		}
		return rec.record(events.Updated, events.Factory, id, org, f.Version, events.FactoryPayload{Factory: f})
	})
	if err != nil {
		return domain.Factory{}, domain.Receipt{}, err
	}
	return f, domain.Receipt{Version: f.Version, LSN: lsn}, nil
}

// DeleteFactory turns the live factory id of org into a tombstone; its
// samples stay until the organization is removed. Errors: ENOTFOUND, ESTALE.
func (s *Store) DeleteFactory(ctx context.Context, actor domain.Actor, id, ifVersion int64) (domain.Receipt, error) {
	org := actor.OrgID
	var version int64
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		f, err := lockFactory(ctx, tx, org, id, ifVersion)
		if err != nil {
			return err
		}
		f.Version++
		f.UpdatedAt, f.DeletedAt = rec.at, &rec.at
		version = f.Version
		if _, err := tx.ExecContext(ctx,
			`UPDATE factories SET version = $1, updated_at = $2, deleted_at = $2 WHERE id = $3`,
			f.Version, rec.at, id); err != nil {
			return fmt.Errorf("delete factory: %w", err)
		}
		return rec.record(events.Deleted, events.Factory, id, org, f.Version, events.FactoryPayload{Factory: f})
	})
	if err != nil {
		return domain.Receipt{}, err
	}
	return domain.Receipt{Version: version, LSN: lsn}, nil
}

// AppendSamples adds samples to the history of the live factory id of org.
// A sample whose time is already recorded with the same values is skipped,
// so a retried append is harmless; with other values the whole append is an
// ECONFLICT error. It returns the factory after the append and how many
// samples were new. Errors: ENOTFOUND, ESTALE, ECONFLICT.
func (s *Store) AppendSamples(ctx context.Context, actor domain.Actor, id, ifVersion int64, samples []domain.Sample) (domain.Factory, int, domain.Receipt, error) {
	org := actor.OrgID
	var (
		f     domain.Factory
		added []domain.Sample
	)
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		cur, err := lockFactory(ctx, tx, org, id, ifVersion)
		if err != nil {
			return err
		}
		f = cur
		added, err = insertSamples(ctx, tx, id, cur.Version+1, samples)
		if err != nil {
			return err
		}
		if len(added) < len(samples) {
			if err := checkDuplicates(ctx, tx, id, samples, added); err != nil {
				return err
			}
		}
		if len(added) == 0 {
			return nil
		}
		f.Version, f.UpdatedAt = cur.Version+1, rec.at
		extend(&f, added)
		if _, err := tx.ExecContext(ctx, `
			UPDATE factories SET version = $1, updated_at = $2, sample_count = $3, first_time = $4, last_time = $5
			WHERE id = $6`, f.Version, rec.at, f.SampleCount, f.FirstTime, f.LastTime, id); err != nil {
			return fmt.Errorf("update factory summary: %w", err)
		}
		return rec.record(events.SamplesAppended, events.Factory, id, org, f.Version,
			events.FactoryPayload{Factory: f, Samples: added})
	})
	if err != nil {
		return domain.Factory{}, 0, domain.Receipt{}, err
	}
	return f, len(added), domain.Receipt{Version: f.Version, LSN: lsn}, nil
}

// insertSamples inserts those of samples whose time is new for the factory
// and returns them in time order.
func insertSamples(ctx context.Context, tx *sqlx.Tx, factoryID, version int64, samples []domain.Sample) ([]domain.Sample, error) {
	if len(samples) == 0 {
		return nil, nil
	}
	times, actual, goal := columns(samples)
	var added []domain.Sample
	err := tx.SelectContext(ctx, &added, `
		INSERT INTO factory_samples (factory_id, time, actual, goal, version)
		SELECT $1, t, a, g, $2 FROM unnest($3::bigint[], $4::bigint[], $5::bigint[]) AS u(t, a, g)
		ON CONFLICT (factory_id, time) DO NOTHING
		RETURNING time, actual, goal`,
		factoryID, version, pq.Array(times), pq.Array(actual), pq.Array(goal))
	if err != nil {
		return nil, fmt.Errorf("insert samples: %w", err)
	}
	return sortedSamples(added), nil
}

// checkDuplicates returns an ECONFLICT error when a sample that was not
// inserted differs from the one already recorded at its time.
func checkDuplicates(ctx context.Context, tx *sqlx.Tx, factoryID int64, samples, added []domain.Sample) error {
	fresh := make(map[int64]bool, len(added))
	for _, s := range added {
		fresh[s.Time] = true
	}
	var times []int64
	want := make(map[int64]domain.Sample)
	for _, s := range samples {
		if !fresh[s.Time] {
			times = append(times, s.Time)
			want[s.Time] = s
		}
	}
	var stored []domain.Sample
	if err := tx.SelectContext(ctx, &stored,
		`SELECT time, actual, goal FROM factory_samples WHERE factory_id = $1 AND time = ANY($2)`,
		factoryID, pq.Array(times)); err != nil {
		return fmt.Errorf("check duplicate samples: %w", err)
	}
	for _, got := range stored {
		if got != want[got.Time] {
			return domain.Errorf(domain.ECONFLICT,
				"a sample at time %d is already recorded with actual %d and goal %d", got.Time, got.Actual, got.Goal)
		}
	}
	return nil
}

func lockFactory(ctx context.Context, tx *sqlx.Tx, org, id, ifVersion int64) (domain.Factory, error) {
	var row factoryRow
	err := tx.GetContext(ctx, &row, `SELECT `+factoryColumns+` FROM factories
		WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL FOR UPDATE`, id, org)
	if isNoRows(err) {
		return domain.Factory{}, domain.Errorf(domain.ENOTFOUND, "factory %d not found", id)
	}
	if err != nil {
		return domain.Factory{}, fmt.Errorf("lock factory: %w", err)
	}
	if ifVersion != 0 && row.Version != ifVersion {
		return domain.Factory{}, domain.Errorf(domain.ESTALE,
			"the factory is at version %d, not %d", row.Version, ifVersion)
	}
	return row.domain(), nil
}

// extend updates f's history summary with added samples (sorted by time).
func extend(f *domain.Factory, added []domain.Sample) {
	if len(added) == 0 {
		return
	}
	first, last := added[0].Time, added[len(added)-1].Time
	if f.FirstTime == nil || first < *f.FirstTime {
		f.FirstTime = &first
	}
	if f.LastTime == nil || last > *f.LastTime {
		f.LastTime = &last
	}
	f.SampleCount += int64(len(added))
}

func sortedSamples(samples []domain.Sample) []domain.Sample {
	out := append([]domain.Sample(nil), samples...)
	sort.Slice(out, func(i, j int) bool { return out[i].Time < out[j].Time })
	return out
}

func columns(samples []domain.Sample) (times, actual, goal []int64) {
	times = make([]int64, len(samples))
	actual = make([]int64, len(samples))
	goal = make([]int64, len(samples))
	for i, s := range samples {
		times[i], actual[i], goal[i] = s.Time, s.Actual, s.Goal
	}
	return times, actual, goal
}

// GetFactory returns factory id whoever owns it, tombstones included.
// Errors: ENOTFOUND.
func (r Reads) Factory(ctx context.Context, id int64) (domain.Factory, error) {
	var row factoryRow
	err := r.q.GetContext(ctx, &row, `SELECT `+factoryColumns+` FROM factories WHERE id = $1`, id)
	if isNoRows(err) {
		return domain.Factory{}, domain.Errorf(domain.ENOTFOUND, "factory %d not found", id)
	}
	if err != nil {
		return domain.Factory{}, fmt.Errorf("get factory: %w", err)
	}
	return row.domain(), nil
}

// ListFactories returns a page of org's live factories in id order.
func (r Reads) ListFactories(ctx context.Context, org int64, page domain.PageRequest) ([]domain.Factory, error) {
	var rows []factoryRow
	err := r.q.SelectContext(ctx, &rows, `SELECT `+factoryColumns+` FROM factories
		WHERE org_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3`,
		org, page.After, page.Limit)
	if err != nil {
		return nil, fmt.Errorf("list factories: %w", err)
	}
	return factoriesOf(rows), nil
}

// FactoriesOfOrg returns every factory org ever had, tombstones included, in
// id order.
func (r Reads) FactoriesOfOrg(ctx context.Context, org int64) ([]domain.Factory, error) {
	var rows []factoryRow
	err := r.q.SelectContext(ctx, &rows, `SELECT `+factoryColumns+` FROM factories WHERE org_id = $1 ORDER BY id`, org)
	if err != nil {
		return nil, fmt.Errorf("factories of org: %w", err)
	}
	return factoriesOf(rows), nil
}

func factoriesOf(rows []factoryRow) []domain.Factory {
	out := make([]domain.Factory, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out
}

// Samples returns the factory's samples with from <= time <= to, in time
// order, the first limit of them (0: all).
func (r Reads) Samples(ctx context.Context, factoryID, from, to int64, limit int) ([]domain.Sample, error) {
	var out []domain.Sample
	var max *int // NULL: LIMIT ALL
	if limit > 0 {
		max = &limit
	}
	err := r.q.SelectContext(ctx, &out, `SELECT time, actual, goal FROM factory_samples
		WHERE factory_id = $1 AND time BETWEEN $2 AND $3 ORDER BY time LIMIT $4`, factoryID, from, to, max)
	if err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	return out, nil
}

// SamplesAsOf returns up to limit of factory factoryID's samples that the
// version asOf or an earlier one added, with times after after, in time
// order: a history as of one version, read a page at a time. A sample is
// never changed once added, so the pages of one version agree however far
// the factory has moved on.
func (r Reads) SamplesAsOf(ctx context.Context, factoryID, asOf, after int64, limit int) ([]domain.Sample, error) {
	var out []domain.Sample
	err := r.q.SelectContext(ctx, &out, `SELECT time, actual, goal FROM factory_samples
		WHERE factory_id = $1 AND time > $2 AND version <= $3 ORDER BY time LIMIT $4`, factoryID, after, asOf, limit)
	if err != nil {
		return nil, fmt.Errorf("samples as of a version: %w", err)
	}
	return out, nil
}

// SampleAggregates returns, per bucket of width seconds (aligned on
// multiples of it), the aggregate of factory factoryID's samples between
// from and to, in time order.
func (r Reads) SampleAggregates(ctx context.Context, factoryID, from, to, width int64) ([]domain.Aggregate, error) {
	var rows []struct {
		Start     int64 `db:"start"`
		Count     int64 `db:"count"`
		SumActual int64 `db:"sum_actual"`
		MinActual int64 `db:"min_actual"`
		MaxActual int64 `db:"max_actual"`
		SumGoal   int64 `db:"sum_goal"`
		MinGoal   int64 `db:"min_goal"`
		MaxGoal   int64 `db:"max_goal"`
	}
	// Sums stop at the largest bigint, as domain.Aggregate's do.
	err := r.q.SelectContext(ctx, &rows, `SELECT time - time % $4 AS start, count(*) AS count,
		least(sum(actual), 9223372036854775807)::bigint AS sum_actual, min(actual) AS min_actual, max(actual) AS max_actual,
		least(sum(goal), 9223372036854775807)::bigint AS sum_goal, min(goal) AS min_goal, max(goal) AS max_goal
		FROM factory_samples WHERE factory_id = $1 AND time BETWEEN $2 AND $3
		GROUP BY 1 ORDER BY 1`, factoryID, from, to, width)
	if err != nil {
		return nil, fmt.Errorf("sample aggregates: %w", err)
	}
	out := make([]domain.Aggregate, len(rows))
	for i, a := range rows {
		out[i] = domain.Aggregate{Start: a.Start, Count: a.Count, SumActual: a.SumActual, MinActual: a.MinActual, MaxActual: a.MaxActual,
			SumGoal: a.SumGoal, MinGoal: a.MinGoal, MaxGoal: a.MaxGoal}
	}
	return out, nil
}

// SamplesOfOrg returns the samples of every live factory of org, grouped by
// factory id and in time order within each.
func (r Reads) SamplesOfOrg(ctx context.Context, org int64) (map[int64][]domain.Sample, error) {
	var rows []struct {
		FactoryID int64 `db:"factory_id"`
		domain.Sample
	}
	err := r.q.SelectContext(ctx, &rows, `SELECT s.factory_id, s.time, s.actual, s.goal
		FROM factory_samples s JOIN factories f ON f.id = s.factory_id
		WHERE f.org_id = $1 AND f.deleted_at IS NULL ORDER BY s.factory_id, s.time`, org)
	if err != nil {
		return nil, fmt.Errorf("samples of org: %w", err)
	}
	out := make(map[int64][]domain.Sample)
	for _, r := range rows {
		out[r.FactoryID] = append(out[r.FactoryID], r.Sample)
	}
	return out, nil
}

// OrgIDs returns the id of every live organization.
func (r Reads) OrgIDs(ctx context.Context) ([]int64, error) {
	var ids []int64
	if err := r.q.SelectContext(ctx, &ids, `SELECT id FROM organizations WHERE deleted_at IS NULL ORDER BY id`); err != nil {
		return nil, fmt.Errorf("org ids: %w", err)
	}
	return ids, nil
}
