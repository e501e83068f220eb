package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// keyClaim is an idempotency key to record, with the resource its request
// created.
type keyClaim struct {
	org      int64
	idem     domain.Idempotency
	kind     string
	resource any
}

// keyLifetime is how long an idempotency key answers with what its first
// request created; after it, the key is free for a new request (Stripe
// keeps keys as long).
const keyLifetime = 24 * time.Hour

// claimKeys records each key as answered by its resource, in the creating
// transaction, in one statement, and returns the indexes of the claims
// whose key is taken (by a request within keyLifetime). A concurrent
// request with the same key waits for the first to commit, then finds it
// taken: one of them creates, and the other replays. Keys must be
// distinct.
func claimKeys(ctx context.Context, tx *sqlx.Tx, claims []keyClaim) (taken []int, err error) {
	if len(claims) == 0 {
		return nil, nil
	}
	// In one order, whoever sends them: two writers claiming the same
	// keys in opposite orders would deadlock on them.
	order := make([]int, len(claims))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		ca, cb := claims[order[a]], claims[order[b]]
		return ca.org < cb.org || ca.org == cb.org && ca.idem.Key < cb.idem.Key
	})
	n := len(claims)
	orgs, keys, kinds, resources, hashes := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([][]byte, n)
	for i, at := range order {
		c := claims[at]
		raw, err := json.Marshal(c.resource)
		if err != nil {
			return nil, fmt.Errorf("encode idempotent resource: %w", err)
		}
		orgs[i], keys[i], kinds[i], resources[i], hashes[i] = c.org, c.idem.Key, c.kind, string(raw), c.idem.Hash
		if hashes[i] == nil {
			hashes[i] = []byte{}
		}
	}
	var won []int64 // ordinals of the claims written
	if err := tx.SelectContext(ctx, &won, `
		WITH u AS (
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::jsonb[])
			       WITH ORDINALITY AS u(org_id, key, request_hash, resource_type, resource, n)),
		k AS (
			INSERT INTO idempotency_keys AS k (org_id, key, request_hash, resource_type, resource)
			SELECT org_id, key, request_hash, resource_type, resource FROM u ORDER BY n
			ON CONFLICT (org_id, key) DO UPDATE
			SET request_hash = EXCLUDED.request_hash, resource_type = EXCLUDED.resource_type,
			    resource = EXCLUDED.resource, created_at = now()
			WHERE k.created_at < now() - make_interval(secs => $6)
			RETURNING org_id, key)
		SELECT u.n FROM u JOIN k USING (org_id, key)`,
		pq.Array(orgs), pq.Array(keys), pq.ByteaArray(hashes), pq.Array(kinds), pq.Array(resources),
		keyLifetime.Seconds()); err != nil {
		return nil, fmt.Errorf("claim idempotency keys: %w", err)
	}
	written := make(map[int64]bool, len(won))
	for _, w := range won {
		written[w] = true
	}
	for n, at := range order {
		if !written[int64(n+1)] {
			taken = append(taken, at)
		}
	}
	sort.Ints(taken)
	return taken, nil
}

// errKeyTaken says that a create's idempotency key was taken: the create
// wrote nothing, and the earlier request's answer is replayed.
var errKeyTaken = errors.New("idempotency key taken")

// isKeyTaken reports whether err says a create's idempotency key was taken.
func isKeyTaken(err error) bool { return errors.Is(err, errKeyTaken) }

// replayKey finds a live idempotency key and what it answers, with the
// leader's insert position now (a consistency token past the commit that
// took the key, as commitLSN), in one round trip.
const replayKey = `SELECT request_hash, resource_type, resource, pg_current_wal_insert_lsn()::text AS lsn
	FROM idempotency_keys
	WHERE org_id = $1 AND key = $2 AND created_at >= now() - make_interval(secs => $3)`

// replay loads the resource an earlier request with the same key created,
// into into; found is false when the key answers nothing (never used, or
// older than keyLifetime). It returns an EKEYREUSED *domain.Error when that
// request was another one. Creates call it before anything else: a
// client that repeats a key is answered with one indexed read, outside the
// transactions (and the create batches) that other requests wait for.
func (s *Store) replay(ctx context.Context, org int64, idem domain.Idempotency, kind string, into any) (r domain.Receipt, found bool, err error) {
	var row struct {
		Hash     []byte `db:"request_hash"`
		Kind     string `db:"resource_type"`
		Resource []byte `db:"resource"`
		LSN      string `db:"lsn"`
	}
	err = s.stmts[replayKey].GetContext(ctx, &row, org, idem.Key, keyLifetime.Seconds())
	if isNoRows(err) {
		return domain.Receipt{}, false, nil
	}
	if err != nil {
		return domain.Receipt{}, false, unavailable(fmt.Errorf("load idempotency key: %w", err))
	}
	if row.Kind != kind || !bytes.Equal(row.Hash, idem.Hash) {
		return domain.Receipt{}, true, domain.Errorf(domain.EKEYREUSED,
			"Idempotency-Key %q was already used for a different request", idem.Key)
	}
	if err := json.Unmarshal(row.Resource, into); err != nil {
		return domain.Receipt{}, true, fmt.Errorf("decode idempotent resource: %w", err)
	}
	return domain.Receipt{LSN: row.LSN, Replayed: true}, true, nil
}

// replayTaken replays a key a create found taken: the request that took it
// committed, so its answer is there (unless it expired in between).
func (s *Store) replayTaken(ctx context.Context, org int64, idem domain.Idempotency, kind string, into any) (domain.Receipt, error) {
	r, found, err := s.replay(ctx, org, idem, kind, into)
	if err == nil && !found {
		err = unavailable(fmt.Errorf("idempotency key %q taken, then gone", idem.Key))
	}
	return r, err
}

// ForgetOldKeys deletes the idempotency keys older than keyLifetime, which
// answer nothing any more, a thousand at a time (short transactions, by
// the index on created_at), and returns how many went.
func (s *Store) ForgetOldKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, `
			DELETE FROM idempotency_keys WHERE (org_id, key) IN (
				SELECT org_id, key FROM idempotency_keys
				WHERE created_at < now() - make_interval(secs => $1) LIMIT 1000)`, keyLifetime.Seconds())
		if err != nil {
			return total, unavailable(fmt.Errorf("forget old idempotency keys: %w", err))
		}
		n, err := res.RowsAffected()
		if err != nil || n == 0 {
			return total, err
		}
		total += n
	}
}

// RunKeyExpiry calls ForgetOldKeys every interval until ctx is done; a
// failure is logged and tried again at the next round.
func (s *Store) RunKeyExpiry(ctx context.Context, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if n, err := s.ForgetOldKeys(ctx); err != nil && ctx.Err() == nil {
			log.Warn("idempotency keys", "err", err)
		} else if n > 0 {
			log.Info("idempotency keys forgotten", "count", n)
		}
	}
}
