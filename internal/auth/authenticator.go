package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Cache holds grants where every instance sees them at once (Redis),
// beside the auth epoch: a value that changes on every revocation. A revoked
// grant must never be replaced by a valid one.
type Cache interface {
	// Grant returns the grant stored for hash and the epoch, read together.
	Grant(ctx context.Context, hash []byte) (g domain.Grant, ok bool, epoch string, err error)
	PutGrant(ctx context.Context, hash []byte, g domain.Grant) error
}

// Store is the system of record for grants (Postgres). It returns an
// ENOTFOUND *domain.Error for an unknown hash.
type Store interface {
	Grant(ctx context.Context, hash []byte) (domain.Grant, error)
}

// ErrUnauthenticated means a request carried no valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator checks bearer tokens. It holds the grants it has read in
// memory, each with the epoch it was read under; a caller that learns the
// current epoch (the rate limiter reads it on every request, in the same
// round trip) re-reads a grant held under another one. So a revocation,
// which changes the epoch, reaches every instance on its next request,
// without a round trip of its own for grants that did not change.
type Authenticator struct {
	cache Cache
	store Store
	now   func() time.Time

	mu   sync.Mutex
	held map[string]held
	// unknown remembers hashes the store does not know, so that a flood of
	// made-up tokens costs one lookup each. A token is random: one that was
	// unknown cannot become valid later.
	unknown map[string]time.Time
}

type held struct {
	grant domain.Grant
	epoch string
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(cache Cache, store Store) *Authenticator {
	return &Authenticator{cache: cache, store: store, now: time.Now,
		held: make(map[string]held), unknown: make(map[string]time.Time)}
}

// Check is an authentication that may rest on a grant held in memory.
type Check struct {
	Principal domain.Principal
	// Epoch is the auth epoch the grant was read under; "" when it could not
	// be read (Redis down, the grant came from Postgres just now).
	Epoch string
	// Held says the grant came from memory: if the current epoch differs
	// from Epoch, call Refresh.
	Held bool
}

// Authenticate returns the principal a token acts as. An unknown, malformed,
// revoked or expired token, or one of a deleted organization, gives
// ErrUnauthenticated; a failure of both cache and store gives an
// EUNAVAILABLE *domain.Error.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Check, error) {
	if !WellFormed(token) {
		return Check{}, ErrUnauthenticated
	}
	hash := Hash(token)
	key := string(hash)
	a.mu.Lock()
	h, ok := a.held[key]
	a.mu.Unlock()
	if ok {
		p, err := a.principal(h.grant)
		return Check{Principal: p, Epoch: h.epoch, Held: true}, err
	}
	g, epoch, err := a.read(ctx, hash)
	if err != nil {
		return Check{}, err
	}
	if epoch != "" {
		a.hold(key, held{g, epoch})
	}
	p, err := a.principal(g)
	return Check{Principal: p, Epoch: epoch}, err
}

// Refresh forgets what is held for token and authenticates it again.
func (a *Authenticator) Refresh(ctx context.Context, token string) (Check, error) {
	a.mu.Lock()
	delete(a.held, string(Hash(token)))
	a.mu.Unlock()
	return a.Authenticate(ctx, token)
}

func (a *Authenticator) principal(g domain.Grant) (domain.Principal, error) {
	if g.Revoked || (g.ExpiresAt != nil && !a.now().Before(*g.ExpiresAt)) {
		return domain.Principal{}, ErrUnauthenticated
	}
	return domain.Principal{OrgID: g.OrgID, TokenID: g.TokenID, Scopes: g.Scopes, RateLimit: g.RateLimit}, nil
}

// read reads a grant from the cache, or the store when the cache does not
// know it (or is down), with the epoch when the cache answered.
func (a *Authenticator) read(ctx context.Context, hash []byte) (domain.Grant, string, error) {
	g, ok, epoch, cerr := a.cache.Grant(ctx, hash)
	if cerr == nil && ok {
		return g, epoch, nil
	}
	key := string(hash)
	if a.knownUnknown(key) {
		return domain.Grant{}, "", ErrUnauthenticated
	}
	g, err := a.store.Grant(ctx, hash)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
		a.rememberUnknown(key)
		return domain.Grant{}, "", ErrUnauthenticated
	case err != nil:
		return domain.Grant{}, "", domain.Errorf(domain.EUNAVAILABLE, "credentials cannot be checked right now; retry shortly")
	}
	if cerr != nil {
		return g, "", nil // Redis is down: use it, hold nothing
	}
	// The cache lacked it: store it there (a grant revoked meanwhile stays
	// revoked, see Cache). It is held under the epoch read before the store
	// was asked, so a revocation since then makes it be read again.
	_ = a.cache.PutGrant(ctx, hash, g)
	return g, epoch, nil
}

const (
	unknownTTL = time.Minute
	maxEntries = 100_000
)

func (a *Authenticator) hold(key string, h held) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.held) >= maxEntries {
		clear(a.held) // bounded; the grants are read again
	}
	a.held[key] = h
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
