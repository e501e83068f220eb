package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// claimKey records key as answered by resource, in the creating
// transaction. A concurrent request with the same key blocks on the insert
// until the first commits, then fails with a unique violation: one of them
// creates, and the other replays.
func claimKey(ctx context.Context, tx *sqlx.Tx, org int64, idem domain.Idempotency, kind string, resource any) error {
	raw, err := json.Marshal(resource)
	if err != nil {
		return fmt.Errorf("encode idempotent resource: %w", err)
	}
	_, err = tx.ExecContext(ctx, `
		INSERT INTO idempotency_keys (org_id, key, request_hash, resource_type, resource)
		VALUES ($1, $2, $3, $4, $5)`, org, idem.Key, idem.Hash, kind, raw)
	if isKeyTaken(err) {
		return errKeyTaken
	}
	if err != nil {
		return fmt.Errorf("claim idempotency key: %w", err)
	}
	return nil
}

var errKeyTaken = errors.New("idempotency key taken")

// isKeyTaken reports whether err is the unique violation of an idempotency
// key already claimed.
func isKeyTaken(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505" && pqErr.Constraint == "idempotency_keys_pkey"
}

// replay loads the resource an earlier request with the same key created.
// It returns an EKEYREUSED *domain.Error when that request was another one.
func (s *Store) replay(ctx context.Context, org int64, idem domain.Idempotency, kind string, into any) (domain.Receipt, error) {
	var row struct {
		Hash     []byte `db:"request_hash"`
		Kind     string `db:"resource_type"`
		Resource []byte `db:"resource"`
	}
	err := s.db.GetContext(ctx, &row, `
		SELECT request_hash, resource_type, resource FROM idempotency_keys
		WHERE org_id = $1 AND key = $2`, org, idem.Key)
	if err != nil {
		return domain.Receipt{}, unavailable(fmt.Errorf("load idempotency key: %w", err))
	}
	if row.Kind != kind || !bytes.Equal(row.Hash, idem.Hash) {
		return domain.Receipt{}, domain.Errorf(domain.EKEYREUSED,
			"Idempotency-Key %q was already used for a different request", idem.Key)
	}
	if err := json.Unmarshal(row.Resource, into); err != nil {
		return domain.Receipt{}, fmt.Errorf("decode idempotent resource: %w", err)
	}
	lsn, err := s.lsn(ctx)
	if err != nil {
		return domain.Receipt{}, unavailable(err)
	}
	return domain.Receipt{LSN: lsn, Replayed: true}, nil
}
