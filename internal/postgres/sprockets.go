package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

type sprocketRow struct {
	ID              int64      `db:"id"`
	OrgID           int64      `db:"org_id"`
	Version         int64      `db:"version"`
	Teeth           int64      `db:"teeth"`
	PitchDiameter   float64    `db:"pitch_diameter"`
	OutsideDiameter float64    `db:"outside_diameter"`
	Pitch           float64    `db:"pitch"`
	CreatedAt       time.Time  `db:"created_at"`
	UpdatedAt       time.Time  `db:"updated_at"`
	DeletedAt       *time.Time `db:"deleted_at"`
}

const sprocketColumns = `id, org_id, version, teeth, pitch_diameter, outside_diameter, pitch, created_at, updated_at, deleted_at`

func (r sprocketRow) domain() domain.Sprocket {
	return domain.Sprocket{
		ID: r.ID, OrgID: r.OrgID, Version: r.Version,
		SprocketSpec: domain.SprocketSpec{
			Teeth: r.Teeth, PitchDiameter: r.PitchDiameter,
			OutsideDiameter: r.OutsideDiameter, Pitch: r.Pitch,
		},
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), DeletedAt: utcPtr(r.DeletedAt),
	}
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// CreateSprocket stores a new sprocket and its created event. With an
// idempotency key already used for the same request it writes nothing and
// returns the sprocket that request created; for another request, an
// EKEYREUSED error. spec must be valid.
func (s *Store) CreateSprocket(ctx context.Context, actor domain.Actor, spec domain.SprocketSpec, idem domain.Idempotency) (domain.Sprocket, domain.Receipt, error) {
	var earlier domain.Sprocket
	if idem.Key != "" {
		if r, found, err := s.replay(ctx, actor.OrgID, idem, events.Sprocket, &earlier); err != nil || found {
			r.Version = earlier.Version
			return earlier, r, err
		}
	}
	req := &createReq{
		ctx: ctx, actor: actor, spec: spec, idem: idem, done: make(chan createResult, 1),
	}
	res := s.creates.do(req)
	if isKeyTaken(res.err) {
		r, err := s.replayTaken(ctx, actor.OrgID, idem, events.Sprocket, &earlier)
		r.Version = earlier.Version
		return earlier, r, err
	}
	if res.err != nil {
		return domain.Sprocket{}, domain.Receipt{}, unavailable(fmt.Errorf("create sprocket: %w", res.err))
	}
	return res.sprocket, domain.Receipt{Version: res.sprocket.Version, LSN: res.lsn}, nil
}

// UpdateSprocket applies change to the live sprocket id of org under a row
// lock. ifVersion, when not zero, must equal the current version or the
// result is an ESTALE error. A change that alters nothing writes nothing.
// Errors: ENOTFOUND, ESTALE, EINVALID (from Validate of the new spec).
func (s *Store) UpdateSprocket(ctx context.Context, actor domain.Actor, id, ifVersion int64, change func(domain.SprocketSpec) domain.SprocketSpec) (domain.Sprocket, domain.Receipt, error) {
	org := actor.OrgID
	var sp domain.Sprocket
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		cur, err := lockSprocket(ctx, tx, org, id, ifVersion)
		if err != nil {
			return err
		}
		sp = cur
		next := change(cur.SprocketSpec)
		if err := next.Validate(); err != nil {
			return err
		}
		if next == cur.SprocketSpec {
			return nil
		}
		sp.SprocketSpec, sp.Version, sp.UpdatedAt = next, cur.Version+1, rec.at
		if _, err := tx.ExecContext(ctx, `
			UPDATE sprockets SET teeth = $1, pitch_diameter = $2, outside_diameter = $3, pitch = $4,
			       version = $5, updated_at = $6
			WHERE id = $7`,
			next.Teeth, next.PitchDiameter, next.OutsideDiameter, next.Pitch, sp.Version, rec.at, id); err != nil {
			return fmt.Errorf("update sprocket: %w", err)
		}
		return rec.record(events.Updated, events.Sprocket, id, org, sp.Version, events.SprocketPayload{Sprocket: sp})
	})
	if err != nil {
		return domain.Sprocket{}, domain.Receipt{}, err
	}
	return sp, domain.Receipt{Version: sp.Version, LSN: lsn}, nil
}

// DeleteSprocket turns the live sprocket id of org into a tombstone.
// Errors: ENOTFOUND, ESTALE.
func (s *Store) DeleteSprocket(ctx context.Context, actor domain.Actor, id, ifVersion int64) (domain.Receipt, error) {
	org := actor.OrgID
	var version int64
	lsn, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		sp, err := lockSprocket(ctx, tx, org, id, ifVersion)
		if err != nil {
			return err
		}
		sp.Version++
		sp.UpdatedAt, sp.DeletedAt = rec.at, &rec.at
		version = sp.Version
		if _, err := tx.ExecContext(ctx,
			`UPDATE sprockets SET version = $1, updated_at = $2, deleted_at = $2 WHERE id = $3`,
			sp.Version, rec.at, id); err != nil {
			return fmt.Errorf("delete sprocket: %w", err)
		}
		return rec.record(events.Deleted, events.Sprocket, id, org, sp.Version, events.SprocketPayload{Sprocket: sp})
	})
	if err != nil {
		return domain.Receipt{}, err
	}
	return domain.Receipt{Version: version, LSN: lsn}, nil
}

func lockSprocket(ctx context.Context, tx *sqlx.Tx, org, id, ifVersion int64) (domain.Sprocket, error) {
	var row sprocketRow
	err := tx.GetContext(ctx, &row, `SELECT `+sprocketColumns+` FROM sprockets
		WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL FOR UPDATE`, id, org)
	if isNoRows(err) {
		return domain.Sprocket{}, domain.Errorf(domain.ENOTFOUND, "sprocket %d not found", id)
	}
	if err != nil {
		return domain.Sprocket{}, fmt.Errorf("lock sprocket: %w", err)
	}
	if ifVersion != 0 && row.Version != ifVersion {
		return domain.Sprocket{}, domain.Errorf(domain.ESTALE,
			"the sprocket is at version %d, not %d", row.Version, ifVersion)
	}
	return row.domain(), nil
}

// GetSprocket returns sprocket id whoever owns it, tombstones included; the
// caller checks the owner. Errors: ENOTFOUND.
func (r Reads) Sprocket(ctx context.Context, id int64) (domain.Sprocket, error) {
	var row sprocketRow
	err := r.q.GetContext(ctx, &row, `SELECT `+sprocketColumns+` FROM sprockets WHERE id = $1`, id)
	if isNoRows(err) {
		return domain.Sprocket{}, domain.Errorf(domain.ENOTFOUND, "sprocket %d not found", id)
	}
	if err != nil {
		return domain.Sprocket{}, fmt.Errorf("get sprocket: %w", err)
	}
	return row.domain(), nil
}

// ListSprockets returns a page of org's live sprockets in id order.
func (r Reads) ListSprockets(ctx context.Context, org int64, page domain.PageRequest) ([]domain.Sprocket, error) {
	var rows []sprocketRow
	err := r.q.SelectContext(ctx, &rows, `SELECT `+sprocketColumns+` FROM sprockets
		WHERE org_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3`,
		org, page.After, page.Limit)
	if err != nil {
		return nil, fmt.Errorf("list sprockets: %w", err)
	}
	return sprocketsOf(rows), nil
}

// SprocketsOfOrg returns every sprocket org ever had, tombstones included,
// in id order: what the org's collection bodies and their versions are
// built from.
func (r Reads) SprocketsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error) {
	var rows []sprocketRow
	err := r.q.SelectContext(ctx, &rows, `SELECT `+sprocketColumns+` FROM sprockets WHERE org_id = $1 ORDER BY id`, org)
	if err != nil {
		return nil, fmt.Errorf("sprockets of org: %w", err)
	}
	return sprocketsOf(rows), nil
}

func sprocketsOf(rows []sprocketRow) []domain.Sprocket {
	out := make([]domain.Sprocket, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out
}

// SprocketSpecsOfOrg is SprocketsOfOrg for collection bodies, which need
// only ids, versions, specifications and whether each is deleted: it reads
// nothing else (the timestamps are zero, a deleted sprocket's DeletedAt
// the zero time), so that rebuilding a large collection stays cheap.
func (r Reads) SprocketSpecsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error) {
	return r.sprocketSpecs(ctx, org, `SELECT id, version, teeth, pitch_diameter, outside_diameter, pitch, deleted_at IS NOT NULL
		FROM sprockets WHERE org_id = $1 ORDER BY id`, org)
}

// SprocketSpecsInRange is SprocketSpecsOfOrg for the sprockets of org
// with lo <= id < hi: one segment of the organization's sprocket list.
func (r Reads) SprocketSpecsInRange(ctx context.Context, org, lo, hi int64) ([]domain.Sprocket, error) {
	return r.sprocketSpecs(ctx, org, `SELECT id, version, teeth, pitch_diameter, outside_diameter, pitch, deleted_at IS NOT NULL
		FROM sprockets WHERE org_id = $1 AND id >= $2 AND id < $3 ORDER BY id`, org, lo, hi)
}

func (r Reads) sprocketSpecs(ctx context.Context, org int64, query string, args ...any) ([]domain.Sprocket, error) {
	rows, err := r.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sprocket specs of org: %w", err)
	}
	defer rows.Close()
	var (
		out     []domain.Sprocket
		deleted bool
		gone    time.Time
	)
	for rows.Next() {
		s := domain.Sprocket{OrgID: org}
		if err := rows.Scan(&s.ID, &s.Version, &s.Teeth, &s.PitchDiameter, &s.OutsideDiameter, &s.Pitch, &deleted); err != nil {
			return nil, fmt.Errorf("sprocket specs of org: %w", err)
		}
		if deleted {
			s.DeletedAt = &gone
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sprocket specs of org: %w", err)
	}
	return out, nil
}
