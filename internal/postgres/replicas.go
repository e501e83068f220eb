package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Sources of a read, as reported in responses and metrics.
const (
	FromReplica = "replica"
	FromLeader  = "leader"
)

// ReadPool sends reads to a replica whose lag is within bounds, else to the
// leader. A replica's lag is measured against the leader's own WAL position:
// it is fresh if it has replayed everything the leader had written MaxLag
// ago. A replica that fails a query is taken out until its next good check.
type ReadPool struct {
	leader   *sqlx.DB
	replicas []*replica
	maxLag   time.Duration
	log      *slog.Logger
	next     atomic.Uint64

	mu      sync.Mutex
	history []lsnAt // the leader's WAL position over the last MaxLag and a bit

	lagBytes *prometheus.GaugeVec
	up       *prometheus.GaugeVec
}

type lsnAt struct {
	at  time.Time
	lsn uint64
}

type replica struct {
	name string
	db   *sqlx.DB

	mu     sync.Mutex
	fresh  bool
	replay uint64
}

// NewReadPool returns a pool over the leader and the named replicas; its
// metrics are registered with reg. Call Run to keep the lag current.
func NewReadPool(leader *sqlx.DB, replicas map[string]*sqlx.DB, maxLag time.Duration, log *slog.Logger, reg prometheus.Registerer) *ReadPool {
	p := &ReadPool{
		leader: leader, maxLag: maxLag, log: log,
		lagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sprockets_replica_lag_bytes", Help: "WAL bytes the replica has yet to replay.",
		}, []string{"replica"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sprockets_replica_fresh", Help: "1 when the replica answers and is within the lag bound.",
		}, []string{"replica"}),
	}
	for name, db := range replicas {
		p.replicas = append(p.replicas, &replica{name: name, db: db})
	}
	reg.MustRegister(p.lagBytes, p.up)
	return p
}

// Run checks the replicas every interval until ctx is done.
func (p *ReadPool) Run(ctx context.Context, interval time.Duration) error {
	if len(p.replicas) == 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.Check(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Check measures every replica once.
func (p *ReadPool) Check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	now := time.Now()
	var leaderLSN uint64
	var haveLeader bool
	if lsn, err := CurrentLSN(ctx, p.leader); err == nil {
		if n, err := ParseLSN(lsn); err == nil {
			leaderLSN, haveLeader = n, true
		}
	}
	floor, haveFloor := p.remember(now, leaderLSN, haveLeader)
	for _, r := range p.replicas {
		var replay string
		err := r.db.GetContext(ctx, &replay, `SELECT COALESCE(pg_last_wal_replay_lsn()::text, '')`)
		var n uint64
		if err == nil {
			if replay == "" {
				err = errors.New("not a replica")
			} else {
				n, err = ParseLSN(replay)
			}
		}
		fresh := err == nil && (!haveFloor || n >= floor)
		r.mu.Lock()
		if fresh != r.fresh {
			p.log.Info("replica state", "replica", r.name, "fresh", fresh, "err", err)
		}
		r.fresh, r.replay = fresh, n
		r.mu.Unlock()
		if err == nil && haveLeader && leaderLSN > n {
			p.lagBytes.WithLabelValues(r.name).Set(float64(leaderLSN - n))
		} else {
			p.lagBytes.WithLabelValues(r.name).Set(0)
		}
		p.up.WithLabelValues(r.name).Set(boolGauge(fresh))
	}
}

// remember records the leader's position and returns the floor a fresh
// replica must have replayed: the position the leader had MaxLag ago, or,
// while fewer than MaxLag of history are known, the oldest position known
// (stricter, never looser).
func (p *ReadPool) remember(now time.Time, lsn uint64, ok bool) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.history = append(p.history, lsnAt{now, lsn})
	}
	cut := now.Add(-p.maxLag)
	for len(p.history) > 1 && !p.history[1].at.After(cut) {
		p.history = p.history[1:]
	}
	if len(p.history) == 0 {
		// The leader was never observed: judge by reachability alone, so
		// that reads go on while only replicas answer.
		return 0, false
	}
	return p.history[0].lsn, true
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Do runs fn on a fresh replica, or on the leader when none is fresh. With
// minLSN set (from a consistency token), only a replica that has replayed
// past it qualifies. When fn fails on a replica for a reason other than a
// domain error, the replica is taken out and fn runs again on the leader.
// It returns where fn last ran.
func (p *ReadPool) Do(ctx context.Context, minLSN string, fn func(Reads) error) (string, error) {
	if r := p.pick(ctx, minLSN); r != nil {
		err := fn(NewReads(r.db))
		var de *domain.Error
		if err == nil || errors.As(err, &de) || ctx.Err() != nil {
			return FromReplica, err
		}
		p.log.Warn("replica read failed, using the leader", "replica", r.name, "err", err)
		r.mu.Lock()
		r.fresh = false
		r.mu.Unlock()
	}
	return FromLeader, fn(NewReads(p.leader))
}

func (p *ReadPool) pick(ctx context.Context, minLSN string) *replica {
	if len(p.replicas) == 0 {
		return nil
	}
	var want uint64
	if minLSN != "" {
		n, err := ParseLSN(minLSN)
		if err != nil {
			return nil
		}
		want = n
	}
	start := p.next.Add(1)
	for i := range p.replicas {
		r := p.replicas[(int(start)+i)%len(p.replicas)]
		r.mu.Lock()
		fresh, replay := r.fresh, r.replay
		r.mu.Unlock()
		if !fresh {
			continue
		}
		if replay >= want || r.caughtUp(ctx, minLSN) {
			return r
		}
	}
	return nil
}

// caughtUp asks the replica whether it has replayed past lsn now; the
// monitor's figure may be a few hundred milliseconds old.
func (r *replica) caughtUp(ctx context.Context, lsn string) bool {
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var ok bool
	err := r.db.GetContext(ctx, &ok, `SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn)
	return err == nil && ok
}

// Ping reports whether the leader answers; replicas are optional.
func (p *ReadPool) Ping(ctx context.Context) error {
	if err := p.leader.PingContext(ctx); err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	return nil
}
