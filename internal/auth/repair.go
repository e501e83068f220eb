package auth

import (
	"context"
	"log/slog"
	"time"
)

// Repairer puts into Redis the revocations that Postgres recorded as grant
// repairs: every revocation is one until Redis says the token is revoked,
// for Redis may keep a copy of the grant that says it is valid. Whoever
// revokes repairs at once when Redis answers; a writer repairs what is
// left once it answers again.
type Repairer struct {
	// Pending returns up to limit hashes with a repair, oldest first.
	Pending func(ctx context.Context, limit int) ([][]byte, error)
	// Revoke marks the tokens revoked in Redis and tells every instance on
	// the feed to forget the grants it holds.
	Revoke func(ctx context.Context, hashes ...[]byte) error
	// Forget removes the repairs of these hashes.
	Forget func(ctx context.Context, hashes [][]byte) error
}

// Repair puts the revocation of hashes into Redis, then forgets their
// repairs.
func (r Repairer) Repair(ctx context.Context, hashes [][]byte) error {
	if len(hashes) == 0 {
		return nil
	}
	if err := r.Revoke(ctx, hashes...); err != nil {
		return err
	}
	return r.Forget(ctx, hashes)
}

// repairBatch is how many repairs one round takes at most.
const repairBatch = 1000

// repairAll repairs what waits, a batch at a time, and returns how many.
func (r Repairer) repairAll(ctx context.Context) (int, error) {
	done := 0
	for {
		hashes, err := r.Pending(ctx, repairBatch)
		if err == nil {
			err = r.Repair(ctx, hashes)
		}
		if err != nil {
			return done, err
		}
		done += len(hashes)
		if len(hashes) < repairBatch {
			return done, nil
		}
	}
}

// Run repairs whatever waits, every interval, until ctx is done.
func (r Repairer) Run(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		n, err := r.repairAll(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			log.Warn("revocations wait to be put into Redis: their tokens are looked up in Postgres meanwhile", "err", err)
			failing = true
		case err == nil && n > 0:
			log.Info("revocations put into Redis", "count", n)
			failing = false
		case err == nil:
			failing = false
		}
	}
}
