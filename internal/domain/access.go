package domain

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Scopes a token can carry. Admin includes read and write.
const (
	ScopeRead  = "read"
	ScopeWrite = "write"
	ScopeAdmin = "admin"
)

// ParseScopes parses a comma-separated list of scopes, or returns an
// EINVALID *Error naming the unknown one.
func ParseScopes(s string) ([]string, error) {
	var out []string
	for _, sc := range strings.Split(s, ",") {
		sc = strings.TrimSpace(sc)
		switch sc {
		case ScopeRead, ScopeWrite, ScopeAdmin:
			if !slices.Contains(out, sc) {
				out = append(out, sc)
			}
		default:
			return nil, Errorf(EINVALID, "unknown scope %q: the scopes are read, write and admin", sc)
		}
	}
	return out, nil
}

// Principal is who a request acts as: an organization, through a token
// (TokenID 0 for anonymous public reads), with its scopes and request
// budget.
type Principal struct {
	OrgID     int64
	TokenID   int64
	Scopes    []string
	RateLimit int // requests per second; 0 means the deployment's default
}

// Can reports whether the principal holds scope (admin holds all).
func (p Principal) Can(scope string) bool {
	return slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin)
}

// Actor is who made a write, as the audit trail records it.
type Actor struct {
	OrgID int64
	// TokenID is the token the request carried; 0 for the command line.
	TokenID int64
	// Kind is "token", "cli" (an operator's command) or "seed".
	Kind       string
	ClientAddr string
	UserAgent  string
	RequestID  string
}

// System returns an actor for writes made by the programs themselves (the
// seed loader, admin commands) on behalf of org.
func System(org int64, kind string) Actor { return Actor{OrgID: org, Kind: kind} }

// Token is a stored API token; its secret is never kept.
type Token struct {
	ID        int64      `json:"id"`
	OrgID     int64      `json:"org_id"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	Scopes    []string   `json:"scopes"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
}

// Usable reports whether the token may be used at now.
func (t Token) Usable(now time.Time) bool {
	return t.RevokedAt == nil && (t.ExpiresAt == nil || now.Before(*t.ExpiresAt))
}

// Organization is a tenant: it owns factories, sprockets and tokens.
type Organization struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	RateLimit *int       `json:"rate_limit,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// AuditEntry is one change as the audit trail recorded it.
type AuditEntry struct {
	ID           int64           `json:"id"`
	OrgID        int64           `json:"org_id"`
	TokenID      *int64          `json:"token_id"`
	Actor        string          `json:"actor"`
	ClientAddr   string          `json:"client_addr"`
	UserAgent    string          `json:"user_agent"`
	RequestID    string          `json:"request_id"`
	Action       string          `json:"action"`
	ResourceType string          `json:"resource_type"`
	ResourceID   int64           `json:"resource_id"`
	Version      int64           `json:"version"`
	Changes      json.RawMessage `json:"changes"`
	At           time.Time       `json:"at"`
}

// Grant is what checking a token needs to know: whose it is, what it may
// do, until when, and whether it was revoked.
type Grant struct {
	TokenID   int64
	OrgID     int64
	Scopes    []string
	ExpiresAt *time.Time
	Revoked   bool
	RateLimit int // the organization's requests per second; 0: the default
}
