package rediscache

import (
	"context"
	"fmt"

	"github.com/go-redis/redis_rate/v10"

	"github.com/sprockets-api/sprockets/internal/budget"
)

// Limiter holds the rate budgets every instance shares: redis_rate's GCRA,
// from which instances take leases (budget.Budgets).
type Limiter struct {
	limiter *redis_rate.Limiter
}

// NewLimiter returns a Limiter over the cache's Redis.
func (c *Cache) NewLimiter() *Limiter {
	return &Limiter{limiter: redis_rate.NewLimiter(c.rdb)}
}

// Take takes up to n requests' worth of key's budget of perSecond, with a
// burst of one second's worth, in one atomic script.
func (l *Limiter) Take(ctx context.Context, key string, perSecond, n int) (budget.Taken, error) {
	res, err := l.limiter.AllowAtMost(ctx, key, redis_rate.PerSecond(perSecond), n)
	if err != nil {
		return budget.Taken{}, fmt.Errorf("take budget: %w", err)
	}
	return budget.Taken{Got: res.Allowed, Remaining: res.Remaining, RetryAfter: res.RetryAfter, ResetAfter: res.ResetAfter}, nil
}

// AuthChanged tells every instance on the feed to forget the grants it
// holds: a token was revoked, or an organization's budget changed.
func (c *Cache) AuthChanged(ctx context.Context) error {
	if err := c.rdb.Publish(ctx, AuthChannel, "changed").Err(); err != nil {
		return fmt.Errorf("publish auth change: %w", err)
	}
	return nil
}
