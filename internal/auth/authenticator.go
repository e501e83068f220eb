package auth

import (
	"context"
	"errors"
	"sync"
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

// Store is the system of record for grants (Postgres). It returns an
// ENOTFOUND *domain.Error for an unknown hash.
type Store interface {
	Grant(ctx context.Context, hash []byte) (domain.Grant, error)
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

	lookups prometheus.Counter
}

// NewAuthenticator returns an Authenticator that holds grants while feed
// is fresh. Its metrics are registered with reg.
func NewAuthenticator(cache Cache, store Store, feed Freshness, reg prometheus.Registerer) *Authenticator {
	a := &Authenticator{cache: cache, store: store, feed: feed, now: time.Now,
		held: make(map[string]domain.Grant), unknown: newRecent(maxEntries),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_auth_store_lookups_total", Help: "Grants looked up in Postgres: tokens neither held nor in Redis.",
		}),
	}
	reg.MustRegister(a.lookups)
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
	hash := Hash(token)
	key := string(hash)
	fresh := a.feed.Fresh()
	a.mu.Lock()
	g, ok := a.held[key]
	forgotten := a.forgotten
	a.mu.Unlock()
	if ok && fresh {
		return a.principal(g)
	}
	g, err := a.read(ctx, hash, admit)
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
	if cerr == nil {
		// The cache lacked it: store it there (a grant revoked meanwhile
		// stays revoked, see Cache).
		_ = a.cache.PutGrant(ctx, hash, g)
	}
	return g, nil
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
