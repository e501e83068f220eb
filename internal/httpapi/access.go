package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/admission"
	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/budget"
	"github.com/sprockets-api/sprockets/internal/domain"
)

// Authenticator turns a bearer token into the principal it acts as, or
// returns auth.ErrUnauthenticated.
type Authenticator interface {
	Authenticate(ctx context.Context, token string, admit auth.Admit) (domain.Principal, error)
}

// Budgets charges requests to rate budgets every instance shares
// (budget.Budgets), and gives back what a request that cost nothing was
// charged.
type Budgets interface {
	Charge(ctx context.Context, key string, perSecond int) budget.Decision
	Refund(key string)
}

// AccessConfig says who may do what without a token, and how fast.
type AccessConfig struct {
	// PublicReads lets GET and HEAD without a token read PublicOrg's data.
	PublicReads bool
	PublicOrg   int64
	// RateLimit is a token's requests per second unless its organization
	// sets its own; AnonymousRateLimit is per client address, for requests
	// without a valid token.
	RateLimit          int
	AnonymousRateLimit int
	// PublicPaths answer without credentials, besides the probes, metrics
	// and the API's description: the dashboard's page, which asks for a
	// token itself.
	PublicPaths []string
}

const principalKey = "principal"

// publicPaths answer without credentials: probes, metrics and the API's
// description.
var publicPaths = []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json"}

// Access authenticates every request but the public paths, then charges it
// to its budget: the token's, or the client address's for requests without
// a valid token (a token looked up in Postgres, not held or in Redis, is
// charged to the address first). Every request is charged before it is served; one
// answered 304 is refunded afterwards, so that a conditional request can
// never pass a spent budget. When Redis cannot lease a budget, the
// instance keeps the limit on its own (see budget).
func Access(authn Authenticator, budgets Budgets, cfg AccessConfig, log *slog.Logger) fiber.Handler {
	var lastWarned atomic.Int64 // unix seconds; the metric has every occurrence
	public := map[string]bool{}
	for _, p := range append(slices.Clone(publicPaths), cfg.PublicPaths...) {
		public[p] = true
	}
	charge := func(c *fiber.Ctx, key string, perSecond int) error {
		d := budgets.Charge(c.UserContext(), key, perSecond)
		if d.Local {
			if now := time.Now().Unix(); lastWarned.Swap(now) != now {
				log.Warn("rate limiter unavailable: budgets are kept by each instance on its own")
			}
		}
		setRateHeaders(c, d)
		if !d.Allowed {
			retry := max(d.RetryAfter, time.Second/time.Duration(max(perSecond, 1)))
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(retry.Seconds()))))
			return domain.Errorf(domain.ELIMITED, "too many requests: %d per second allowed; retry after %s", perSecond, retry.Round(time.Millisecond))
		}
		return nil
	}
	return func(c *fiber.Ctx) error {
		if public[c.Path()] {
			return c.Next()
		}
		// A token that must be looked up in Postgres is paid for by the
		// client address first: made-up tokens cost their sender's budget,
		// not a query each.
		address := func() string { return ClientKey(c) }
		charged := false
		p, authErr := authenticate(c, authn, cfg, func() error {
			charged = true
			return charge(c, address(), cfg.AnonymousRateLimit)
		})
		if domain.ErrorCode(authErr) == domain.ELIMITED {
			return authErr
		}
		var key string
		perSecond := cfg.AnonymousRateLimit
		if authErr == nil && p.TokenID != 0 {
			key, perSecond = "token:"+strconv.FormatInt(p.TokenID, 10), cfg.RateLimit
			if p.RateLimit > 0 {
				perSecond = p.RateLimit
			}
		} else {
			key = address()
		}
		if authErr == nil || !charged {
			if err := charge(c, key, perSecond); err != nil {
				return err
			}
		}
		if authErr != nil {
			return authErr
		}
		c.Locals(principalKey, p)
		err := c.Next()
		if err == nil && c.Response().StatusCode() == fiber.StatusNotModified {
			budgets.Refund(key) // a 304 costs nothing
		}
		return err
	}
}

// authenticate returns who the request acts as, or the error to answer
// with; admit is asked before a token is looked up in Postgres.
func authenticate(c *fiber.Ctx, authn Authenticator, cfg AccessConfig, admit auth.Admit) (domain.Principal, error) {
	header := c.Get(fiber.HeaderAuthorization)
	if header == "" {
		if cfg.PublicReads && (c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead) {
			return domain.Principal{OrgID: cfg.PublicOrg, Scopes: []string{domain.ScopeRead}}, nil
		}
		return domain.Principal{}, domain.Errorf(domain.EUNAUTHENTICATED, "send a token: Authorization: Bearer spk_...")
	}
	p, err := authn.Authenticate(c.UserContext(), auth.Bearer(header), admit)
	if errors.Is(err, auth.ErrUnauthenticated) {
		return p, domain.Errorf(domain.EUNAUTHENTICATED, "the token is unknown, revoked or expired")
	}
	return p, err
}

// setRateHeaders describes the budget as draft-ietf-httpapi-ratelimit-headers
// does: the policy, and about what is left of it.
// Every request sets them: they are written into a buffer on the stack,
// and set with their names as sent (see securityHeaderValues).
func setRateHeaders(c *fiber.Ctx, d budget.Decision) {
	h := &c.Response().Header
	var buf [64]byte
	b := append(buf[:0], `"default";q=`...)
	b = strconv.AppendInt(b, int64(d.PerSecond), 10)
	h.SetCanonical(rateLimitPolicyHeader, append(b, ";w=1"...))
	b = append(buf[:0], `"default";r=`...)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, int64(math.Ceil(max(d.ResetAfter, 0).Seconds())), 10)
	h.SetCanonical(rateLimitHeader, b)
}

var rateLimitPolicyHeader, rateLimitHeader = []byte("RateLimit-Policy"), []byte("RateLimit")

// Require lets through only requests whose principal holds scope.
func Require(scope string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !PrincipalOf(c).Can(scope) {
			return domain.Errorf(domain.EFORBIDDEN, "this token does not have the %s scope", scope)
		}
		return c.Next()
	}
}

// PrincipalOf returns who the request acts as (set by Access).
func PrincipalOf(c *fiber.Ctx) domain.Principal {
	p, _ := c.Locals(principalKey).(domain.Principal)
	return p
}

// ActorOf returns who is making a write, for the audit trail.
func ActorOf(c *fiber.Ctx) domain.Actor {
	p := PrincipalOf(c)
	return domain.Actor{OrgID: p.OrgID, TokenID: p.TokenID, Kind: "token",
		ClientAddr: ClientIP(c), UserAgent: UserAgent(c), RequestID: RequestID(c)}
}

// Admit lets a request through gate before its handler runs: one that
// finds no room within the gate's wait is answered 503 with Retry-After
// (see admission).
func Admit(gate *admission.Gate) fiber.Handler {
	return func(c *fiber.Ctx) error {
		leave, err := gate.Enter(c.UserContext())
		if err != nil {
			return err
		}
		defer leave()
		return c.Next()
	}
}
