package rediscache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// epochKey holds the auth epoch: a random value replaced on every
// revocation and every change of an organization's budget. An instance may
// keep grants in memory only as long as the epoch it read them under is
// still the one in Redis. Random rather than counted, so that a Redis that
// lost its data never shows an old epoch again.
const epochKey = "auth:epoch"

// BumpEpoch replaces the auth epoch: every instance re-reads the grants it
// holds on its next request.
func (c *Cache) BumpEpoch(ctx context.Context) error {
	if err := c.rdb.Set(ctx, epochKey, newEpoch(), 0).Err(); err != nil {
		return fmt.Errorf("bump auth epoch: %w", err)
	}
	return c.AuthChanged(ctx)
}

// AuthChanged tells every instance on the feed to read the grants it holds
// again.
func (c *Cache) AuthChanged(ctx context.Context) error {
	if err := c.rdb.Publish(ctx, AuthChannel, "changed").Err(); err != nil {
		return fmt.Errorf("publish auth change: %w", err)
	}
	return nil
}

func newEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b[:])
}

// epochOf returns the epoch a pipelined GET read. When there is none (a new
// or flushed Redis), it creates one: a missing epoch must not read as a
// value an instance may still hold from before the flush, when the
// revocations made since were lost with it.
func epochOf(ctx context.Context, rdb redis.UniversalClient, get *redis.StringCmd) string {
	if get.Err() != redis.Nil {
		return get.Val() // "" on an error: nothing is held under it
	}
	if err := rdb.SetNX(ctx, epochKey, newEpoch(), 0).Err(); err != nil {
		return ""
	}
	v, _ := rdb.Get(ctx, epochKey).Result()
	return v
}

// Grant reads the grant of a token hash and the auth epoch, in one round
// trip; ok is false when no grant is stored.
func (c *Cache) Grant(ctx context.Context, hash []byte) (g domain.Grant, ok bool, epoch string, err error) {
	pipe := c.rdb.Pipeline()
	ep := pipe.Get(ctx, epochKey)
	m := pipe.HGetAll(ctx, grantKey(hash))
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return g, false, "", fmt.Errorf("get grant: %w", err)
	}
	g, ok = parseGrant(m.Val())
	return g, ok, epochOf(ctx, c.rdb, ep), nil
}

// Limiter is redis_rate's GCRA limiter whose every call also reads the auth
// epoch, in the same round trip: AllowN reports it.
type Limiter struct {
	limiter *redis_rate.Limiter
}

// NewLimiter returns a Limiter over the cache's Redis.
func (c *Cache) NewLimiter() *Limiter {
	return &Limiter{limiter: redis_rate.NewLimiter(&epochReader{UniversalClient: c.rdb})}
}

// AllowN is redis_rate's AllowN; it also returns the auth epoch.
func (l *Limiter) AllowN(ctx context.Context, key string, limit redis_rate.Limit, n int) (*redis_rate.Result, string, error) {
	var epoch string
	res, err := l.limiter.AllowN(context.WithValue(ctx, epochSlot{}, &epoch), key, limit, n)
	return res, epoch, err
}

// epochSlot is where epochReader puts the epoch it read for a call.
type epochSlot struct{}

// epochReader is the client redis_rate runs its script on: it sends the
// script together with a read of the auth epoch, in one pipeline, and hands
// the epoch to the caller through the context.
//
// Every request runs the script, so the calls of concurrent requests share
// pipelines: a call that finds none in flight sends its own at once; calls
// that arrive meanwhile wait, and when it is back the first of them sends
// all of theirs in the next one, with one read of the epoch. Each script
// still runs on its own, atomically, in Redis.
type epochReader struct {
	redis.UniversalClient

	mu      sync.Mutex
	sending bool          // a pipeline is in flight
	waiting []*scriptCall // calls for the next pipeline
}

// maxScriptBatch bounds a shared pipeline, so that it holds Redis up for
// a few milliseconds at most.
const maxScriptBatch = 128

// scriptCall is one call of the script, and what it read.
type scriptCall struct {
	ctx   context.Context
	run   func(redis.Pipeliner) *redis.Cmd
	cmd   *redis.Cmd
	epoch string
	done  chan struct{} // closed once cmd and epoch are set
	lead  chan struct{} // closed when this call is to send the next pipeline
}

func (e *epochReader) withEpoch(ctx context.Context, run func(redis.Pipeliner) *redis.Cmd) *redis.Cmd {
	c := &scriptCall{ctx: ctx, run: run, done: make(chan struct{}), lead: make(chan struct{})}
	e.mu.Lock()
	e.waiting = append(e.waiting, c)
	if e.sending {
		e.mu.Unlock()
		select {
		case <-c.done:
			return e.finish(c)
		case <-c.lead:
		}
		e.mu.Lock()
	}
	e.sending = true
	batch := e.waiting[:min(len(e.waiting), maxScriptBatch)]
	e.waiting = append([]*scriptCall(nil), e.waiting[len(batch):]...)
	e.mu.Unlock()

	e.send(batch)

	e.mu.Lock()
	if len(e.waiting) > 0 {
		close(e.waiting[0].lead)
	} else {
		e.sending = false
	}
	e.mu.Unlock()
	return e.finish(c)
}

// send runs the calls of batch in one pipeline, with one read of the epoch.
// It waits for the round trip whatever the callers' contexts say, so that
// the callers after them get their turn.
func (e *epochReader) send(batch []*scriptCall) {
	ctx := context.WithoutCancel(batch[0].ctx)
	pipe := e.Pipeline()
	ep := pipe.Get(ctx, epochKey)
	for _, c := range batch {
		c.cmd = c.run(pipe)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	epoch := epochOf(ctx, e.UniversalClient, ep)
	for _, c := range batch {
		c.epoch = epoch
		close(c.done)
	}
}

func (e *epochReader) finish(c *scriptCall) *redis.Cmd {
	if slot, ok := c.ctx.Value(epochSlot{}).(*string); ok {
		*slot = c.epoch
	}
	return c.cmd
}

func (e *epochReader) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	return e.withEpoch(ctx, func(p redis.Pipeliner) *redis.Cmd { return p.EvalSha(ctx, sha1, keys, args...) })
}

func (e *epochReader) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	return e.withEpoch(ctx, func(p redis.Pipeliner) *redis.Cmd { return p.Eval(ctx, script, keys, args...) })
}
