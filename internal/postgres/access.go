package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

type orgRow struct {
	ID        int64         `db:"id"`
	Name      string        `db:"name"`
	RateLimit sql.NullInt64 `db:"rate_limit"`
	CreatedAt time.Time     `db:"created_at"`
	DeletedAt *time.Time    `db:"deleted_at"`
}

func (r orgRow) domain() domain.Organization {
	o := domain.Organization{ID: r.ID, Name: r.Name, CreatedAt: r.CreatedAt.UTC(), DeletedAt: utcPtr(r.DeletedAt)}
	if r.RateLimit.Valid {
		n := int(r.RateLimit.Int64)
		o.RateLimit = &n
	}
	return o
}

// CreateOrganization adds an organization. Errors: EINVALID for a bad name,
// ECONFLICT when the name is taken.
func (s *Store) CreateOrganization(ctx context.Context, name string, rateLimit *int) (domain.Organization, error) {
	if err := (domain.FactorySpec{Name: name}).Validate(); err != nil {
		return domain.Organization{}, domain.Errorf(domain.EINVALID, "organization name: %s", domain.ErrorMessage(err))
	}
	var row orgRow
	err := s.db.GetContext(ctx, &row, `INSERT INTO organizations (name, rate_limit) VALUES ($1, $2)
		RETURNING id, name, rate_limit, created_at, deleted_at`, name, rateLimit)
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "23505" {
		return domain.Organization{}, domain.Errorf(domain.ECONFLICT, "an organization named %q exists", name)
	}
	if err != nil {
		return domain.Organization{}, fmt.Errorf("create organization: %w", err)
	}
	return row.domain(), nil
}

// SetRateLimit changes org's budget (nil: the deployment's default).
// Errors: ENOTFOUND.
func (s *Store) SetRateLimit(ctx context.Context, org int64, limit *int) error {
	res, err := s.db.ExecContext(ctx, `UPDATE organizations SET rate_limit = $1 WHERE id = $2 AND deleted_at IS NULL`, limit, org)
	if err != nil {
		return fmt.Errorf("set rate limit: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return domain.Errorf(domain.ENOTFOUND, "organization %d not found", org)
	}
	return nil
}

// Organization returns the live organization called name. Errors: ENOTFOUND.
func (r Reads) Organization(ctx context.Context, name string) (domain.Organization, error) {
	var row orgRow
	err := r.q.GetContext(ctx, &row, `SELECT id, name, rate_limit, created_at, deleted_at
		FROM organizations WHERE name = $1 AND deleted_at IS NULL`, name)
	if isNoRows(err) {
		return domain.Organization{}, domain.Errorf(domain.ENOTFOUND, "organization %q not found", name)
	}
	if err != nil {
		return domain.Organization{}, fmt.Errorf("organization: %w", err)
	}
	return row.domain(), nil
}

// Organizations returns every live organization.
func (r Reads) Organizations(ctx context.Context) ([]domain.Organization, error) {
	var rows []orgRow
	if err := r.q.SelectContext(ctx, &rows, `SELECT id, name, rate_limit, created_at, deleted_at
		FROM organizations WHERE deleted_at IS NULL ORDER BY id`); err != nil {
		return nil, fmt.Errorf("organizations: %w", err)
	}
	out := make([]domain.Organization, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out, nil
}

// DeletedOrgIDs returns the ids of deleted organizations: nothing of theirs
// may come back into the read model.
func (r Reads) DeletedOrgIDs(ctx context.Context) ([]int64, error) {
	var ids []int64
	if err := r.q.SelectContext(ctx, &ids, `SELECT id FROM organizations WHERE deleted_at IS NOT NULL ORDER BY id`); err != nil {
		return nil, fmt.Errorf("deleted organizations: %w", err)
	}
	return ids, nil
}

type tokenRow struct {
	ID        int64          `db:"id"`
	OrgID     int64          `db:"org_id"`
	Name      string         `db:"name"`
	Prefix    string         `db:"prefix"`
	Scopes    pq.StringArray `db:"scopes"`
	ExpiresAt *time.Time     `db:"expires_at"`
	RevokedAt *time.Time     `db:"revoked_at"`
	CreatedAt time.Time      `db:"created_at"`
}

const tokenColumns = `id, org_id, name, prefix, scopes, expires_at, revoked_at, created_at`

func (r tokenRow) domain() domain.Token {
	return domain.Token{ID: r.ID, OrgID: r.OrgID, Name: r.Name, Prefix: r.Prefix, Scopes: r.Scopes,
		ExpiresAt: utcPtr(r.ExpiresAt), RevokedAt: utcPtr(r.RevokedAt), CreatedAt: r.CreatedAt.UTC()}
}

// CreateToken stores a token of org by the hash of its secret (the secret
// itself is never stored). Errors: ENOTFOUND for a deleted organization.
func (s *Store) CreateToken(ctx context.Context, org int64, name string, hash []byte, prefix string, scopes []string, expires *time.Time) (domain.Token, error) {
	var row tokenRow
	err := s.db.GetContext(ctx, &row, `
		INSERT INTO tokens (org_id, name, hash, prefix, scopes, expires_at)
		SELECT id, $2, $3, $4, $5, $6 FROM organizations WHERE id = $1 AND deleted_at IS NULL
		RETURNING `+tokenColumns, org, name, hash, prefix, pq.StringArray(scopes), expires)
	if isNoRows(err) {
		return domain.Token{}, domain.Errorf(domain.ENOTFOUND, "organization %d not found", org)
	}
	if err != nil {
		return domain.Token{}, fmt.Errorf("create token: %w", err)
	}
	return row.domain(), nil
}

// Tokens lists org's tokens, revoked ones included.
func (r Reads) Tokens(ctx context.Context, org int64) ([]domain.Token, error) {
	var rows []tokenRow
	if err := r.q.SelectContext(ctx, &rows, `SELECT `+tokenColumns+` FROM tokens WHERE org_id = $1 ORDER BY id`, org); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	out := make([]domain.Token, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out, nil
}

// RevokeToken revokes token id, and records its hash as a grant repair in
// the same transaction: until Redis says the token is revoked too
// (ForgetGrantRepairs), every instance looks it up here (see auth.Repairer).
// It returns the token and its hash. Errors: ENOTFOUND.
func (s *Store) RevokeToken(ctx context.Context, id int64) (domain.Token, []byte, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return domain.Token{}, nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	var row struct {
		tokenRow
		Hash []byte `db:"hash"`
	}
	err = tx.GetContext(ctx, &row, `UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
		RETURNING hash, `+tokenColumns, id)
	if isNoRows(err) {
		return domain.Token{}, nil, domain.Errorf(domain.ENOTFOUND, "token %d not found", id)
	}
	if err != nil {
		return domain.Token{}, nil, fmt.Errorf("revoke token: %w", err)
	}
	if err := repairGrants(ctx, tx, [][]byte{row.Hash}); err != nil {
		return domain.Token{}, nil, err
	}
	if err := tx.Commit(); err != nil {
		return domain.Token{}, nil, fmt.Errorf("commit: %w", err)
	}
	return row.tokenRow.domain(), row.Hash, nil
}

// repairGrants records, in tx, that Redis may still hold these tokens as
// valid.
func repairGrants(ctx context.Context, tx *sqlx.Tx, hashes [][]byte) error {
	if len(hashes) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO grant_repairs (hash) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING`,
		pq.ByteaArray(hashes)); err != nil {
		return fmt.Errorf("record grant repairs: %w", err)
	}
	return nil
}

// GrantRepairs returns the hashes of up to limit revoked tokens that Redis
// may still hold as valid, oldest first.
func (r Reads) GrantRepairs(ctx context.Context, limit int) ([][]byte, error) {
	var hashes [][]byte
	if err := r.q.SelectContext(ctx, &hashes, `SELECT hash FROM grant_repairs ORDER BY created_at LIMIT $1`, limit); err != nil {
		return nil, fmt.Errorf("grant repairs: %w", err)
	}
	return hashes, nil
}

// ForgetGrantRepairs removes repairs Redis has taken: it says the tokens
// are revoked.
func (s *Store) ForgetGrantRepairs(ctx context.Context, hashes [][]byte) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM grant_repairs WHERE hash = ANY($1::bytea[])`, pq.ByteaArray(hashes)); err != nil {
		return fmt.Errorf("forget grant repairs: %w", err)
	}
	return nil
}

// Grant returns what the token with hash may do. A token of a deleted
// organization is revoked. Errors: ENOTFOUND.
func (r Reads) Grant(ctx context.Context, hash []byte) (domain.Grant, error) {
	var row struct {
		ID        int64          `db:"id"`
		OrgID     int64          `db:"org_id"`
		Scopes    pq.StringArray `db:"scopes"`
		ExpiresAt *time.Time     `db:"expires_at"`
		Revoked   bool           `db:"revoked"`
		RateLimit sql.NullInt64  `db:"rate_limit"`
	}
	err := r.q.GetContext(ctx, &row, `
		SELECT t.id, t.org_id, t.scopes, t.expires_at,
		       t.revoked_at IS NOT NULL OR o.deleted_at IS NOT NULL AS revoked, o.rate_limit
		FROM tokens t JOIN organizations o ON o.id = t.org_id WHERE t.hash = $1`, hash)
	if isNoRows(err) {
		return domain.Grant{}, domain.Errorf(domain.ENOTFOUND, "no such token")
	}
	if err != nil {
		return domain.Grant{}, fmt.Errorf("grant: %w", err)
	}
	return domain.Grant{TokenID: row.ID, OrgID: row.OrgID, Scopes: row.Scopes, ExpiresAt: utcPtr(row.ExpiresAt),
		Revoked: row.Revoked, RateLimit: int(row.RateLimit.Int64)}, nil
}

// purgeBatch bounds the aggregates one organization-deleted event lists,
// keeping each well under the broker's message size.
const purgeBatch = 5000

// DeleteOrganization deletes org and returns it with the hashes of the
// tokens it had: they are revoked (with grant repairs, as by RevokeToken)
// and removed, its
// factories, samples, sprockets, idempotency keys, audit rows and
// unpublished events are removed, and events listing what it owned let the
// projector remove every key of it (and its events from the stream). The
// organization stays as a deleted row, so that nothing of it can come back.
// Errors: ENOTFOUND.
func (s *Store) DeleteOrganization(ctx context.Context, actor domain.Actor, org int64) (domain.Organization, [][]byte, error) {
	var o domain.Organization
	var hashes [][]byte
	_, err := s.write(ctx, actor, func(tx *sqlx.Tx, rec *recorder) error {
		var row orgRow
		err := tx.GetContext(ctx, &row, `SELECT id, name, rate_limit, created_at, deleted_at
			FROM organizations WHERE id = $1 AND deleted_at IS NULL FOR UPDATE`, org)
		if isNoRows(err) {
			return domain.Errorf(domain.ENOTFOUND, "organization %d not found", org)
		}
		if err != nil {
			return fmt.Errorf("lock organization: %w", err)
		}
		hashes = nil // a retried transaction starts again
		if err := tx.SelectContext(ctx, &hashes, `SELECT hash FROM tokens WHERE org_id = $1 FOR UPDATE`, org); err != nil {
			return fmt.Errorf("tokens of organization: %w", err)
		}
		if err := repairGrants(ctx, tx, hashes); err != nil {
			return err
		}
		var sprockets []int64
		if err := tx.SelectContext(ctx, &sprockets, `DELETE FROM sprockets WHERE org_id = $1 RETURNING id`, org); err != nil {
			return fmt.Errorf("delete sprockets: %w", err)
		}
		var rows []factoryRow
		if err := tx.SelectContext(ctx, &rows, `DELETE FROM factories WHERE org_id = $1 RETURNING `+factoryColumns, org); err != nil {
			return fmt.Errorf("delete factories: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE org_id = $1`, org); err != nil {
			return fmt.Errorf("delete idempotency keys: %w", err)
		}
		// Its trail goes too (resources after each change, client
		// addresses, user agents), its tokens (revoked above, for the
		// instances that hold them) and the events the relay has not yet
		// published; last, so that the rows of a write that held a lock the
		// deletes above waited for are seen and go. What stays is the
		// minimal record: the organization's row, marked deleted, and this
		// deletion's events and audit rows (written after fn returns).
		for _, stmt := range []struct{ what, sql string }{
			{"audit rows", `DELETE FROM audit_log WHERE org_id = $1`},
			{"tokens", `DELETE FROM tokens WHERE org_id = $1`},
			{"unpublished events", `DELETE FROM outbox WHERE org_id = $1`},
		} {
			if _, err := tx.ExecContext(ctx, stmt.sql, org); err != nil {
				return fmt.Errorf("delete %s: %w", stmt.what, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE organizations SET deleted_at = $2 WHERE id = $1`, org, rec.at); err != nil {
			return fmt.Errorf("delete organization: %w", err)
		}
		o = row.domain()
		o.DeletedAt = &rec.at
		factories := factoriesOf(rows)
		for part := int64(1); part == 1 || len(sprockets)+len(factories) > 0; part++ {
			n, m := min(len(sprockets), purgeBatch), min(len(factories), purgeBatch)
			if err := rec.record(events.Deleted, events.Organization, org, org, part,
				events.OrganizationPayload{Organization: o, Sprockets: sprockets[:n], Factories: factories[:m]}); err != nil {
				return err
			}
			sprockets, factories = sprockets[n:], factories[m:]
		}
		return nil
	})
	return o, hashes, err
}
