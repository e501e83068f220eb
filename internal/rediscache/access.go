package rediscache

import (
	"context"
	_ "embed"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/domain"
)

//go:embed grant.lua
var grantSrc string

// How long grants are kept in Redis. A valid one is cheap to read again
// from Postgres, so it goes soon; a revoked one is kept long enough that no
// grant read before the revocation can still be written back.
const (
	grantTTL   = time.Minute
	revokedTTL = 24 * time.Hour
)

func grantKey(hash []byte) string { return "auth:grant:" + hex.EncodeToString(hash) }

// FenceKey marks a deleted organization: the guard script refuses every
// write of its keys.
func FenceKey(org int64) string { return "fence:org:" + strconv.FormatInt(org, 10) }

func parseGrant(m map[string]string) (domain.Grant, bool) {
	if len(m) == 0 {
		return domain.Grant{}, false
	}
	g := domain.Grant{Revoked: m["revoked"] == "1"}
	g.TokenID, _ = strconv.ParseInt(m["token"], 10, 64)
	g.OrgID, _ = strconv.ParseInt(m["org"], 10, 64)
	g.RateLimit, _ = strconv.Atoi(m["limit"])
	if s := m["scopes"]; s != "" {
		g.Scopes = strings.Split(s, ",")
	}
	if exp, err := strconv.ParseInt(m["expires"], 10, 64); err == nil && exp > 0 {
		t := time.Unix(exp, 0).UTC()
		g.ExpiresAt = &t
	}
	return g, true
}

// PutGrant stores a grant unless a revoked one is stored.
func (c *Cache) PutGrant(ctx context.Context, hash []byte, g domain.Grant) error {
	revoked, ttl := "0", grantTTL
	if g.Revoked {
		revoked, ttl = "1", revokedTTL
	}
	var expires int64
	if g.ExpiresAt != nil {
		expires = g.ExpiresAt.Unix()
	}
	err := c.grant.Run(ctx, c.rdb, []string{grantKey(hash)}, revoked, int64(ttl.Seconds()),
		"token", g.TokenID, "org", g.OrgID, "limit", g.RateLimit,
		"scopes", strings.Join(g.Scopes, ","), "expires", expires).Err()
	if err != nil && err != redis.Nil {
		return fmt.Errorf("put grant: %w", err)
	}
	return nil
}

// Grant reads the grant of a token hash; ok is false when none is stored.
func (c *Cache) Grant(ctx context.Context, hash []byte) (g domain.Grant, ok bool, err error) {
	m, err := c.rdb.HGetAll(ctx, grantKey(hash)).Result()
	if err != nil {
		return g, false, fmt.Errorf("get grant: %w", err)
	}
	g, ok = parseGrant(m)
	return g, ok, nil
}

// Revoke marks the tokens with these hashes revoked, where every instance
// reads grants it does not hold, then tells every instance on the feed to
// forget the grants it holds. It runs after the revocation committed in
// Postgres (see auth.Repairer): a grant an instance read before the commit
// cannot replace the revoked one, and is not held past the message.
func (c *Cache) Revoke(ctx context.Context, hashes ...[]byte) error {
	// In round trips of a thousand: an organization may have many tokens.
	for len(hashes) > 0 {
		n := min(len(hashes), 1000)
		if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range hashes[:n] {
				// EVAL, not EVALSHA: a pipeline cannot retry a script Redis lacks.
				c.grant.Eval(ctx, p, []string{grantKey(h)}, "1", int64(revokedTTL.Seconds()))
			}
			return nil
		}); err != nil && err != redis.Nil {
			return fmt.Errorf("revoke grants: %w", err)
		}
		hashes = hashes[n:]
	}
	return c.AuthChanged(ctx)
}

// Fence marks organizations deleted in the read model.
func (c *Cache) Fence(ctx context.Context, orgs ...int64) error {
	for _, org := range orgs {
		if err := c.rdb.Set(ctx, FenceKey(org), time.Now().UTC().Format(time.RFC3339), 0).Err(); err != nil {
			return fmt.Errorf("fence organization %d: %w", org, err)
		}
	}
	return nil
}
