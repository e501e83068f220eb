package domain

// Page limits for list endpoints.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// PageRequest asks for the items whose id is greater than After, at most
// Limit of them, in id order. Keyset pagination keeps every page an index
// range scan however deep the client pages.
type PageRequest struct {
	After int64
	Limit int
}

// DefaultOrgID is the organization that owns the seed data and, until
// access control assigns callers their own, every request's data.
const DefaultOrgID int64 = 1

// AnyOrg stands, in a read that asks for an organization, for whichever
// one owns the data: for the projector, which serves them all.
const AnyOrg int64 = 0
