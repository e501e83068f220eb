package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Cache holds grants where every instance sees them at once (Redis). A
// revoked grant must never be replaced by a valid one.
type Cache interface {
	Grant(ctx context.Context, hash []byte) (g domain.Grant, ok bool, err error)
	PutGrant(ctx context.Context, hash []byte, g domain.Grant) error
}

// Store is the system of record for grants (Postgres). Grant returns an
// ENOTFOUND *domain.Error for an unknown hash; GrantRepairs the hashes of
// revoked tokens that Redis may still hold as valid (see Repairer).
type Store interface {
	Grant(ctx context.Context, hash []byte) (domain.Grant, error)
	GrantRepairs(ctx context.Context, limit int) ([][]byte, error)
}

// Freshness says whether the feed that carries revocations is fresh: every
// revocation published more than its bound ago has arrived (Forget).
type Freshness interface {
	Fresh() bool
}

// ErrUnauthenticated means a request carried no valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator checks bearer tokens. It holds the grants it has read in
// memory, and uses them only while the feed is fresh: a revocation is
// published on the feed, which makes every instance Forget, and whoever
// revokes waits out the feed's bound before saying it is done. While the
// feed is not fresh, every request reads its grant from Redis (or
// Postgres), so a revocation is never missed, only slower to check.
//
// A revocation that could not reach Redis is a grant repair in Postgres
// until it does; RunRepairWatch reads the repairs, and a token that has one
// is looked up in Postgres on every request, never in memory or Redis.
type Authenticator struct {
	cache Cache
	store Store
	feed  Freshness
	now   func() time.Time

	mu   sync.Mutex
	held map[string]domain.Grant
	// forgotten counts the times everything held was forgotten: a grant
	// read before one of them may be from before a revocation, and is not
	// held.
	forgotten uint64
	// unknown remembers hashes the store does not know, so that a made-up
	// token costs one lookup however often it is sent. A token is random:
	// one that was unknown cannot become valid later.
	unknown *recent
	// repairing holds the hashes with a grant repair, as last read, when
	// that read started (unix nanoseconds), and how often it is read.
	repairing     atomic.Pointer[repairSet]
	repairsReadAt atomic.Int64
	repairEvery   atomic.Int64

	lookups           prometheus.Counter
	repairs           prometheus.Gauge
	repairReadsFailed prometheus.Counter
}

// repairSet is the tokens with a grant repair; all is set when there were
// more than maxRepairs, and then no token is read from memory or Redis.
type repairSet struct {
	hashes map[string]bool
	all    bool
}

func (r *repairSet) has(key string) bool { return r != nil && (r.all || r.hashes[key]) }

// NewAuthenticator returns an Authenticator that holds grants while feed
// is fresh. Its metrics are registered with reg.
func NewAuthenticator(cache Cache, store Store, feed Freshness, reg prometheus.Registerer) *Authenticator {
	a := &Authenticator{cache: cache, store: store, feed: feed, now: time.Now,
		held: make(map[string]domain.Grant), unknown: newRecent(maxEntries),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_auth_store_lookups_total", Help: "Grants looked up in Postgres: tokens neither held nor in Redis.",
		}),
		repairs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_auth_grant_repairs", Help: "Revoked tokens that Redis may still hold as valid, as last read from Postgres.",
		}),
		repairReadsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_auth_repair_reads_failed_total", Help: "Reads of the grant repairs that failed or timed out: held grants are not used while they fail.",
		}),
	}
	reg.MustRegister(a.lookups, a.repairs, a.repairReadsFailed)
	return a
}

// Admit is asked before a token is looked up in Postgres, the one costly
// step of an authentication: an error it returns (the client address's
// budget is spent) is returned instead.
type Admit func() error

// Authenticate returns the principal a token acts as. An unknown, malformed,
// revoked or expired token, or one of a deleted organization, gives
// ErrUnauthenticated; a failure of both cache and store gives an
// EUNAVAILABLE *domain.Error; admit's error is returned as it is.
func (a *Authenticator) Authenticate(ctx context.Context, token string, admit Admit) (domain.Principal, error) {
	if !WellFormed(token) {
		return domain.Principal{}, ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:]) // the one allocation; sum stays on the stack, and the slow paths copy key
	if a.repairing.Load().has(key) {
		g, err := a.lookUp(ctx, []byte(key), admit)
		if err != nil {
			return domain.Principal{}, err
		}
		return a.principal(g)
	}
	fresh := a.feed.Fresh() && a.repairsRead()
	a.mu.Lock()
	g, ok := a.held[key]
	forgotten := a.forgotten
	a.mu.Unlock()
	if ok && fresh {
		return a.principal(g)
	}
	g, err := a.read(ctx, []byte(key), admit)
	if err != nil {
		return domain.Principal{}, err
	}
	if fresh {
		a.hold(key, g, forgotten)
	}
	return a.principal(g)
}

// Forget drops every grant held: one of them may have been revoked. The
// feed calls it on every revocation, and when it was lost.
func (a *Authenticator) Forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.held)
	a.forgotten++
}

func (a *Authenticator) principal(g domain.Grant) (domain.Principal, error) {
	if g.Revoked || (g.ExpiresAt != nil && !a.now().Before(*g.ExpiresAt)) {
		return domain.Principal{}, ErrUnauthenticated
	}
	return domain.Principal{OrgID: g.OrgID, TokenID: g.TokenID, Scopes: g.Scopes, RateLimit: g.RateLimit}, nil
}

// read reads a grant from the cache, or the store when the cache does not
// know it (or is down) and admit lets it.
func (a *Authenticator) read(ctx context.Context, hash []byte, admit Admit) (domain.Grant, error) {
	g, ok, cerr := a.cache.Grant(ctx, hash)
	if cerr == nil && ok {
		return g, nil
	}
	g, err := a.lookUp(ctx, hash, admit)
	if err != nil {
		return domain.Grant{}, err
	}
	if cerr == nil {
		// The cache lacked it: store it there (a grant revoked meanwhile
		// stays revoked, see Cache).
		_ = a.cache.PutGrant(ctx, hash, g)
	}
	return g, nil
}

// lookUp reads a grant from the store, if admit lets it.
func (a *Authenticator) lookUp(ctx context.Context, hash []byte, admit Admit) (domain.Grant, error) {
	key := string(hash)
	if a.unknown.has(key, a.now()) {
		return domain.Grant{}, ErrUnauthenticated
	}
	if err := admit(); err != nil {
		return domain.Grant{}, err
	}
	a.lookups.Inc()
	g, err := a.store.Grant(ctx, hash)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
		a.unknown.add(key, a.now())
		return domain.Grant{}, ErrUnauthenticated
	case err != nil:
		return domain.Grant{}, domain.Errorf(domain.EUNAVAILABLE, "credentials cannot be checked right now; retry shortly")
	}
	return g, nil
}

// RunRepairWatch reads the grant repairs every interval until ctx is
// done. A revoker that cannot reach Redis waits out twice the interval
// before it says the token is refused everywhere. A read that fails (or
// takes the interval) leaves the repairs last read in force, and once the
// last good read is older than twice the interval, grants held in memory
// are not used: they are read from Redis (or Postgres) on each request,
// as when the feed is stale. What stays open: an instance that reaches
// Redis but not Postgres cannot learn of a revocation that could not reach
// Redis either.
func (a *Authenticator) RunRepairWatch(ctx context.Context, interval time.Duration) error {
	interval = max(interval, time.Millisecond)
	a.repairEvery.Store(int64(interval))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.readRepairs(ctx, interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// maxRepairs bounds the repairs an instance reads; past it, every token is
// looked up in Postgres until Redis has taken them.
const maxRepairs = 100_000

// repairsRead reports whether the repairs were read well enough lately for
// held grants to be used: the last good read started at most two
// intervals ago.
func (a *Authenticator) repairsRead() bool {
	every := time.Duration(a.repairEvery.Load())
	return every > 0 && time.Since(time.Unix(0, a.repairsReadAt.Load())) <= 2*every
}

func (a *Authenticator) readRepairs(ctx context.Context, timeout time.Duration) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hashes, err := a.store.GrantRepairs(ctx, maxRepairs+1)
	if err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			a.repairReadsFailed.Inc()
		}
		return
	}
	next := &repairSet{hashes: make(map[string]bool, len(hashes)), all: len(hashes) > maxRepairs}
	for _, h := range hashes {
		next.hashes[string(h)] = true
	}
	// A repair is gone once Redis says the token is revoked, and the feed
	// then says to forget it; memory may not have heard that yet. It
	// forgets first: until the swap, the old repairs still send those
	// tokens to Postgres.
	if prev := a.repairing.Load(); prev != nil {
		gone := prev.all && !next.all
		for h := range prev.hashes {
			if !next.hashes[h] {
				gone = true
				break
			}
		}
		if gone {
			a.Forget()
		}
	}
	a.repairing.Store(next)
	a.repairs.Set(float64(len(hashes)))
	a.repairsReadAt.Store(started.UnixNano())
}

const (
	unknownTTL = time.Minute
	maxEntries = 100_000
)

// hold keeps g, read after the forgotten-th Forget, unless everything was
// forgotten again since.
func (a *Authenticator) hold(key string, g domain.Grant, forgotten uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.forgotten != forgotten {
		return
	}
	if len(a.held) >= maxEntries {
		clear(a.held) // bounded; the grants are read again
	}
	a.held[key] = g
}

// recent is a bounded set of keys, each remembered for unknownTTL: when it
// is full, the oldest goes first, so that a flood of new keys pushes out
// old ones a few at a time instead of emptying it.
type recent struct {
	mu    sync.Mutex
	at    map[string]time.Time
	order []string // ring of keys, oldest at next
	next  int
}

func newRecent(size int) *recent {
	return &recent{at: make(map[string]time.Time, size), order: make([]string, 0, size)}
}

func (r *recent) has(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.at[key]
	return ok && now.Sub(at) < unknownTTL
}

func (r *recent) add(key string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.at[key]; ok {
		r.at[key] = now
		return
	}
	if len(r.order) < cap(r.order) {
		r.order = append(r.order, key)
	} else {
		delete(r.at, r.order[r.next])
		r.order[r.next] = key
		r.next = (r.next + 1) % len(r.order)
	}
	r.at[key] = now
}
