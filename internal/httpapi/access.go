package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/domain"
)

// Authenticator turns a bearer token into the principal it acts as, or
// returns auth.ErrUnauthenticated. A check that rests on a grant held in
// memory is confirmed against the current auth epoch, or refreshed.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Check, error)
	Refresh(ctx context.Context, token string) (auth.Check, error)
}

// Limiter is a GCRA rate limiter shared by every instance (redis_rate) that
// also reports, from the same round trip, the current auth epoch.
type Limiter interface {
	AllowN(ctx context.Context, key string, limit redis_rate.Limit, n int) (*redis_rate.Result, string, error)
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
}

const principalKey = "principal"

// publicPaths answer without credentials: probes, metrics and the API's
// description.
var publicPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/v1/openapi.json": true}

// Access authenticates every request but the public paths, then charges it
// to its budget: the token's, or the client address's for requests without
// a valid token. Every request is charged before it is served; one
// answered 304 is refunded afterwards, so that a conditional request can
// never pass a spent budget. When Redis cannot say, the request is let
// through (and counted): a limiter outage must not become an API outage.
func Access(authn Authenticator, limiter Limiter, cfg AccessConfig, log *slog.Logger, reg prometheus.Registerer) fiber.Handler {
	limiterErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sprockets_ratelimit_errors_total", Help: "Requests let through because the rate limiter could not answer.",
	})
	limited := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sprockets_ratelimited_total", Help: "Requests refused with 429.",
	})
	reg.MustRegister(limiterErrors, limited)
	var lastWarned atomic.Int64 // unix seconds; the counter has every occurrence
	return func(c *fiber.Ctx) error {
		if publicPaths[c.Path()] {
			return c.Next()
		}
		ctx := c.UserContext()
		token := auth.Bearer(c.Get(fiber.HeaderAuthorization))
		check, authErr := authenticate(ctx, c, authn, cfg, token)
		p := check.Principal
		key, perSecond := "ip:"+c.IP(), cfg.AnonymousRateLimit
		if authErr == nil && p.TokenID != 0 {
			key, perSecond = "token:"+strconv.FormatInt(p.TokenID, 10), cfg.RateLimit
			if p.RateLimit > 0 {
				perSecond = p.RateLimit
			}
		}
		limit := redis_rate.Limit{Rate: perSecond, Burst: perSecond, Period: time.Second}
		res, epoch, err := limiter.AllowN(ctx, key, limit, 1)
		if authErr == nil && check.Held && (err != nil || epoch != check.Epoch) {
			// Revocations change the epoch: a grant held under another one
			// (or when the epoch cannot be read) is read again.
			check, authErr = authn.Refresh(ctx, token)
			authErr = clientError(authErr)
			p = check.Principal
		}
		if err != nil {
			limiterErrors.Inc()
			if now := time.Now().Unix(); lastWarned.Swap(now) != now {
				log.Warn("rate limiter unavailable, letting requests through", "err", err)
			}
		} else {
			setRateHeaders(c, res)
			if res.Allowed == 0 {
				limited.Inc()
				retry := max(res.RetryAfter, time.Second/time.Duration(max(perSecond, 1)))
				c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(retry.Seconds()))))
				return domain.Errorf(domain.ELIMITED, "too many requests: %d per second allowed; retry after %s", perSecond, retry.Round(time.Millisecond))
			}
		}
		if authErr != nil {
			return authErr
		}
		c.Locals(principalKey, p)
		err = c.Next()
		if err == nil && c.Response().StatusCode() == fiber.StatusNotModified {
			// A 304 costs nothing: give back what it was charged.
			if _, _, lerr := limiter.AllowN(ctx, key, limit, -1); lerr != nil {
				limiterErrors.Inc()
			}
		}
		return err
	}
}

// authenticate returns who the request acts as, or the error to answer
// with.
func authenticate(ctx context.Context, c *fiber.Ctx, authn Authenticator, cfg AccessConfig, token string) (auth.Check, error) {
	if c.Get(fiber.HeaderAuthorization) == "" {
		if cfg.PublicReads && (c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead) {
			return auth.Check{Principal: domain.Principal{OrgID: cfg.PublicOrg, Scopes: []string{domain.ScopeRead}}}, nil
		}
		return auth.Check{}, domain.Errorf(domain.EUNAUTHENTICATED, "send a token: Authorization: Bearer spk_...")
	}
	check, err := authn.Authenticate(ctx, token)
	return check, clientError(err)
}

// clientError says what a failed authentication means to the client.
func clientError(err error) error {
	if errors.Is(err, auth.ErrUnauthenticated) {
		return domain.Errorf(domain.EUNAUTHENTICATED, "the token is unknown, revoked or expired")
	}
	return err
}

// setRateHeaders describes the budget as draft-ietf-httpapi-ratelimit-headers
// does: the policy, and what is left of it.
func setRateHeaders(c *fiber.Ctx, res *redis_rate.Result) {
	c.Set("RateLimit-Policy", fmt.Sprintf(`"default";q=%d;w=%d`, res.Limit.Rate, int(res.Limit.Period.Seconds())))
	c.Set("RateLimit", fmt.Sprintf(`"default";r=%d;t=%d`, max(res.Remaining, 0), int(math.Ceil(res.ResetAfter.Seconds()))))
}

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
		ClientAddr: strings.TrimSpace(c.IP()), UserAgent: UserAgent(c), RequestID: RequestID(c)}
}
