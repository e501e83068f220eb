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
	Grant(ctx context.Context, hash []byte) (domain.Grant, bool, error)
	PutGrant(ctx context.Context, hash []byte, g domain.Grant) error
}

// Store is the system of record for grants (Postgres). It returns an
// ENOTFOUND *domain.Error for an unknown hash.
type Store interface {
	Grant(ctx context.Context, hash []byte) (domain.Grant, error)
}

// ErrUnauthenticated means a request carried no valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator checks bearer tokens: against the cache, then the store
// when the cache does not know the token (or is down).
type Authenticator struct {
	cache Cache
	store Store
	now   func() time.Time

	// unknown remembers hashes the store does not know, so that a flood of
	// made-up tokens costs one lookup each, not one per request. A token is
	// random: one that was unknown cannot become valid later.
	mu      sync.Mutex
	unknown map[string]time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(cache Cache, store Store) *Authenticator {
	return &Authenticator{cache: cache, store: store, now: time.Now, unknown: make(map[string]time.Time)}
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
	g, err := a.grant(ctx, hash)
	if err != nil {
		return domain.Principal{}, err
	}
	if g.Revoked || (g.ExpiresAt != nil && !a.now().Before(*g.ExpiresAt)) {
		return domain.Principal{}, ErrUnauthenticated
	}
	return domain.Principal{OrgID: g.OrgID, TokenID: g.TokenID, Scopes: g.Scopes, RateLimit: g.RateLimit}, nil
}

func (a *Authenticator) grant(ctx context.Context, hash []byte) (domain.Grant, error) {
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
		// Best effort: the next request finds it in the cache. A grant
		// revoked meanwhile stays revoked there (Cache's contract).
		_ = a.cache.PutGrant(ctx, hash, g)
	}
	return g, nil
}

const (
	unknownTTL = time.Minute
	unknownMax = 10_000
)

func (a *Authenticator) knownUnknown(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.unknown[key]
	return ok && a.now().Sub(at) < unknownTTL
}

func (a *Authenticator) rememberUnknown(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.unknown) >= unknownMax {
		clear(a.unknown) // crude but bounded; a flood just costs lookups again
	}
	a.unknown[key] = a.now()
}
