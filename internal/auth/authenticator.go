package auth

import (
	"context"
	"errors"
	"sync"
	"time"

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
	// unknown remembers hashes the store does not know, so that a flood of
	// made-up tokens costs one lookup each. A token is random: one that was
	// unknown cannot become valid later.
	unknown map[string]time.Time
}

// NewAuthenticator returns an Authenticator that holds grants while feed
// is fresh.
func NewAuthenticator(cache Cache, store Store, feed Freshness) *Authenticator {
	return &Authenticator{cache: cache, store: store, feed: feed, now: time.Now,
		held: make(map[string]domain.Grant), unknown: make(map[string]time.Time)}
}

// Authenticate returns the principal a token acts as. An unknown, malformed,
// revoked or expired token, or one of a deleted organization, gives
// ErrUnauthenticated; a failure of both cache and store gives an
// EUNAVAILABLE *domain.Error.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (domain.Principal, error) {
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
	g, err := a.read(ctx, hash)
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
// know it (or is down).
func (a *Authenticator) read(ctx context.Context, hash []byte) (domain.Grant, error) {
	g, ok, cerr := a.cache.Grant(ctx, hash)
	if cerr == nil && ok {
		return g, nil
	}
	key := string(hash)
	if a.knownUnknown(key) {
		return domain.Grant{}, ErrUnauthenticated
	}
	g, err := a.store.Grant(ctx, hash)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
		a.rememberUnknown(key)
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

func (a *Authenticator) knownUnknown(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.unknown[key]
	return ok && a.now().Sub(at) < unknownTTL
}

func (a *Authenticator) rememberUnknown(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.unknown) >= maxEntries {
		clear(a.unknown)
	}
	a.unknown[key] = a.now()
}
