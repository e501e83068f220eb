package rediscache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// The feed is Redis pub/sub. Every guarded write of the read model
// publishes the keys it wrote, with their versions, from inside its script:
// a change is published if and only if its write committed, at that very
// moment, and Redis delivers it to every subscriber in publish order.
// Revocations and budget changes publish on the auth channel. Each
// subscriber also publishes heartbeats to a channel of its own: a heartbeat
// it receives proves that it received everything published before it, on
// any channel, so the feed is fresh "as of" the heartbeat's sending.
const (
	// ChangesChannel carries read-model changes: lines "key version", a
	// version of -1 for a deleted key. guard.lua publishes on it by name.
	ChangesChannel = readmodel.Prefix + "changes"
	// AuthChannel says that grants held in memory must be read again.
	AuthChannel = "auth:changes"
	beatPrefix  = "feed:beat:"
)

// Feed follows the changes published in Redis for one instance. It is
// fresh while its last heartbeat was sent at most its bound ago.
type Feed struct {
	rdb   redis.UniversalClient
	bound time.Duration
	every time.Duration
	log   *slog.Logger
	start time.Time
	beat  string // this instance's heartbeat channel

	// What to tell, set before Run: see OnChange, OnAuthChange, OnLost.
	onChange []func(key string, version int64)
	onAuth   []func()
	onLost   []func(reason string)

	// freshAsOf is when the last heartbeat received was sent, in
	// nanoseconds since start; 0 while the feed is not fresh.
	freshAsOf atomic.Int64
	mu        sync.Mutex       // serializes what handlers are told
	sent      [64]atomic.Int64 // when heartbeat seq was sent, at seq%64
	seq       atomic.Uint64

	fresh prometheus.Gauge
	lost  *prometheus.CounterVec
	age   prometheus.Histogram
}

// NewFeed returns a feed that is fresh while its heartbeats come back
// within bound. Say what it should tell, and to whom, with OnChange,
// OnAuthChange and OnLost before Run. Its metrics are registered with reg.
func (c *Cache) NewFeed(bound time.Duration, log *slog.Logger, reg prometheus.Registerer) *Feed {
	var id [8]byte
	_, _ = rand.Read(id[:])
	f := &Feed{
		rdb: c.rdb, bound: bound, every: max(bound/5, time.Millisecond), log: log,
		start: time.Now(), beat: beatPrefix + hex.EncodeToString(id[:]),
		fresh: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_feed_fresh", Help: "1 while the feed of changes is fresh: memory may be used.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_feed_lost_total", Help: "Times the feed of changes was lost or went stale, by reason.",
		}, []string{"reason"}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sprockets_feed_heartbeat_seconds",
			Help:    "Time from sending a heartbeat to receiving it: how far behind the feed runs.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	reg.MustRegister(f.fresh, f.lost, f.age)
	return f
}

// OnChange asks the feed to tell fn of every change of the read model: key
// now holds version (-1: deleted).
func (f *Feed) OnChange(fn func(key string, version int64)) { f.onChange = append(f.onChange, fn) }

// OnAuthChange asks the feed to tell fn when a grant was revoked or
// changed.
func (f *Feed) OnAuthChange(fn func()) { f.onAuth = append(f.onAuth, fn) }

// OnLost asks the feed to tell fn when changes may have been missed (the
// subscription failed, or the feed went stale): everything learnt from it
// must be forgotten.
func (f *Feed) OnLost(fn func(reason string)) { f.onLost = append(f.onLost, fn) }

// Fresh reports whether every change published more than the bound ago
// has reached the handlers.
func (f *Feed) Fresh() bool {
	asOf := f.freshAsOf.Load()
	return asOf > 0 && time.Since(f.start)-time.Duration(asOf) <= f.bound
}

// Run follows the feed until ctx is done: it subscribes, sends heartbeats,
// and subscribes again whenever the subscription fails or stays silent
// for the bound. It returns ctx's error.
func (f *Feed) Run(ctx context.Context) error {
	go f.beats(ctx)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		f.forget("subscription " + reason(err))
		f.log.Warn("feed of changes lost, subscribing again", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	return ctx.Err()
}

// reason labels a lost subscription in the metric.
func reason(err error) string {
	if errors.Is(err, errSilent) {
		return "silent"
	}
	return "failed"
}

var errSilent = errors.New("no message within the staleness bound")

// follow subscribes and hands messages to the handlers until the
// subscription fails or is silent for its bound (heartbeats come every fifth of
// it, so silence means a dead connection).
func (f *Feed) follow(ctx context.Context) error {
	channels := []string{f.beat}
	if len(f.onChange) > 0 {
		channels = append(channels, ChangesChannel)
	}
	if len(f.onAuth) > 0 {
		channels = append(channels, AuthChannel)
	}
	ps := f.rdb.Subscribe(ctx, channels...)
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { ps.Close() }) // a receive in progress returns at once
	defer stop()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, f.bound)
		if err != nil {
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				return errSilent
			}
			return err
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue // subscription confirmations, pongs
		}
		f.handle(m)
	}
	return ctx.Err()
}

func (f *Feed) handle(m *redis.Message) {
	switch m.Channel {
	case f.beat:
		seq, err := strconv.ParseUint(m.Payload, 10, 64)
		if err != nil {
			return
		}
		sentAt := time.Duration(f.sent[seq%uint64(len(f.sent))].Load())
		now := time.Since(f.start)
		if now-sentAt > f.bound || seq+uint64(len(f.sent)) <= f.seq.Load() {
			return // too old to vouch for anything
		}
		f.age.Observe((now - sentAt).Seconds())
		f.freshAsOf.Store(int64(max(sentAt, 1)))
		f.fresh.Set(1)
	case AuthChannel:
		f.mu.Lock()
		for _, fn := range f.onAuth {
			fn()
		}
		f.mu.Unlock()
	default:
		f.mu.Lock()
		for _, line := range strings.Split(m.Payload, "\n") {
			key, v, ok := strings.Cut(line, " ")
			version, err := strconv.ParseInt(v, 10, 64)
			if !ok || err != nil {
				continue
			}
			for _, fn := range f.onChange {
				fn(key, version)
			}
		}
		f.mu.Unlock()
	}
}

// beats sends a heartbeat every fifth of its bound, and tells the handlers when
// the feed went stale (its last heartbeat older than the bound).
func (f *Feed) beats(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f.freshAsOf.Load() > 0 && !f.Fresh() {
			f.forget("stale")
		}
		seq := f.seq.Add(1)
		f.sent[seq%uint64(len(f.sent))].Store(int64(time.Since(f.start)))
		pctx, cancel := context.WithTimeout(ctx, f.bound)
		if err := f.rdb.Publish(pctx, f.beat, seq).Err(); err != nil && ctx.Err() == nil {
			f.log.Debug("feed heartbeat", "err", err)
		}
		cancel()
	}
}

// forget marks the feed not fresh and tells the handlers to forget what
// they learnt from it.
func (f *Feed) forget(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.freshAsOf.Swap(0) == 0 {
		return // already forgotten, and nothing learnt since
	}
	f.fresh.Set(0)
	f.lost.WithLabelValues(reason).Inc()
	for _, fn := range f.onLost {
		fn(reason)
	}
}

// publishChanges publishes, in pipe, the change of each key to version.
func publishChanges(ctx context.Context, pipe redis.Pipeliner, changes map[string]int64) {
	if len(changes) == 0 {
		return
	}
	var b strings.Builder
	for k, v := range changes {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s %d", k, v)
	}
	pipe.Publish(ctx, ChangesChannel, b.String())
}
