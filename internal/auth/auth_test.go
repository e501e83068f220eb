package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
)

func TestSecrets(t *testing.T) {
	a, ha, da := NewSecret()
	b, _, _ := NewSecret()
	if a == b || !strings.HasPrefix(a, Prefix) || len(a) != len(Prefix)+43 || !WellFormed(a) {
		t.Fatalf("secrets %q %q", a, b)
	}
	if string(Hash(a)) != string(ha) || len(ha) != 32 || !strings.HasPrefix(a, da) || len(da) >= len(a) {
		t.Errorf("hash or display of %q", a)
	}
	for _, bad := range []string{"", "spk_short", strings.Replace(a, "spk_", "xyz_", 1), a + "x", a[:len(a)-1] + "!"} {
		if WellFormed(bad) {
			t.Errorf("%q is well formed", bad)
		}
	}
	for header, want := range map[string]string{"Bearer " + a: a, "bearer  " + a: a, "Basic abc": "", a: "", "": ""} {
		if got := Bearer(header); got != want {
			t.Errorf("Bearer(%q) = %q", header, got)
		}
	}
}

type fakeCache struct {
	grants map[string]domain.Grant
	down   bool
	puts   int
	gets   int
	// during, when set, runs in the middle of a read: what happens on the
	// feed meanwhile.
	during func()
}

func (c *fakeCache) Grant(_ context.Context, h []byte) (domain.Grant, bool, error) {
	c.gets++
	if c.during != nil {
		c.during()
	}
	if c.down {
		return domain.Grant{}, false, errors.New("redis down")
	}
	g, ok := c.grants[string(h)]
	return g, ok, nil
}

func (c *fakeCache) PutGrant(_ context.Context, h []byte, g domain.Grant) error {
	c.puts++
	if old, ok := c.grants[string(h)]; ok && old.Revoked {
		return nil
	}
	c.grants[string(h)] = g
	return nil
}

type fakeStore struct {
	grants  map[string]domain.Grant
	repairs [][]byte
	lookups int
	down    bool
}

func (s *fakeStore) GrantRepairs(_ context.Context, limit int) ([][]byte, error) {
	if s.down {
		return nil, errors.New("postgres down")
	}
	return s.repairs[:min(limit, len(s.repairs))], nil
}

func (s *fakeStore) Grant(_ context.Context, h []byte) (domain.Grant, error) {
	s.lookups++
	if s.down {
		return domain.Grant{}, errors.New("postgres down")
	}
	g, ok := s.grants[string(h)]
	if !ok {
		return domain.Grant{}, domain.Errorf(domain.ENOTFOUND, "no such token")
	}
	return g, nil
}

type feed struct{ stale bool }

func admitAll() error { return nil }

func (f *feed) Fresh() bool { return !f.stale }

func TestAuthenticate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	secret := func() (string, []byte) { s, h, _ := NewSecret(); return s, h }
	valid, vh := secret()
	expired, eh := secret()
	revoked, rh := secret()
	later, lh := secret()
	unknown, _ := secret()
	store := &fakeStore{grants: map[string]domain.Grant{
		string(vh): {TokenID: 1, OrgID: 7, Scopes: []string{"read"}, ExpiresAt: &future, RateLimit: 5},
		string(eh): {TokenID: 2, OrgID: 7, Scopes: []string{"read"}, ExpiresAt: &past},
		string(rh): {TokenID: 3, OrgID: 7, Scopes: []string{"read"}, Revoked: true},
		string(lh): {TokenID: 4, OrgID: 7, Scopes: []string{"write"}},
	}}
	cache := &fakeCache{grants: map[string]domain.Grant{}}
	f := &feed{}
	a := NewAuthenticator(cache, store, f, prometheus.NewRegistry())
	watchRepairs(a)
	a.now = func() time.Time { return now }
	ctx := context.Background()

	p, err := a.Authenticate(ctx, valid, admitAll)
	if err != nil || p.OrgID != 7 || p.TokenID != 1 || p.RateLimit != 5 || !p.Can("read") || p.Can("write") || cache.puts != 1 {
		t.Fatalf("valid: %+v %v (%d puts)", p, err, cache.puts)
	}
	gets := cache.gets
	if _, err := a.Authenticate(ctx, valid, admitAll); err != nil || cache.gets != gets || store.lookups != 1 {
		t.Errorf("the second use was not answered from memory (%d reads, %d lookups): %v", cache.gets-gets, store.lookups, err)
	}
	for name, tok := range map[string]string{"expired": expired, "revoked": revoked, "unknown": unknown, "malformed": "spk_nope"} {
		if _, err := a.Authenticate(ctx, tok, admitAll); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v", name, err)
		}
	}
	lookups := store.lookups
	for i := 0; i < 5; i++ {
		_, _ = a.Authenticate(ctx, unknown, admitAll)
	}
	if store.lookups != lookups {
		t.Errorf("an unknown token was looked up again %d times", store.lookups-lookups)
	}

	// A revocation reaches a held grant through the feed: Forget.
	cache.grants[string(vh)] = domain.Grant{Revoked: true}
	if _, err := a.Authenticate(ctx, valid, admitAll); err != nil {
		t.Fatalf("held, before the feed told: %v", err)
	}
	a.Forget()
	if _, err := a.Authenticate(ctx, valid, admitAll); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("after the revocation reached the feed: %v", err)
	}

	// A grant read while a revocation arrives is not held: it may be from
	// before the revocation.
	cache.grants[string(lh)] = domain.Grant{TokenID: 4, OrgID: 7, Scopes: []string{"write"}}
	cache.during = a.Forget
	if _, err := a.Authenticate(ctx, later, admitAll); err != nil {
		t.Fatal(err)
	}
	cache.during = nil
	gets = cache.gets
	_, _ = a.Authenticate(ctx, later, admitAll)
	if cache.gets == gets {
		t.Errorf("a grant read across a Forget was held")
	}

	// While the feed is not fresh nothing held is used, and nothing read
	// is held: every request reads its grant.
	f.stale = true
	gets = cache.gets
	for range 3 {
		if _, err := a.Authenticate(ctx, later, admitAll); err != nil {
			t.Fatal(err)
		}
	}
	if cache.gets-gets != 3 {
		t.Errorf("with the feed stale, 3 requests made %d reads", cache.gets-gets)
	}
	f.stale = false

	// An expiry needs no feed: it is checked on every use, held or not.
	soon := now.Add(time.Minute)
	cache.grants[string(lh)] = domain.Grant{TokenID: 4, OrgID: 7, Scopes: []string{"write"}, ExpiresAt: &soon}
	a.Forget()
	if _, err := a.Authenticate(ctx, later, admitAll); err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return soon }
	if _, err := a.Authenticate(ctx, later, admitAll); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a held grant past its expiry: %v", err)
	}
	a.now = func() time.Time { return now }

	// With Redis down, the store answers; with both down, it is a 503.
	cache.down = true
	a.Forget()
	store.grants[string(lh)] = domain.Grant{TokenID: 4, OrgID: 7, Scopes: []string{"write"}}
	if p, err := a.Authenticate(ctx, later, admitAll); err != nil || p.TokenID != 4 {
		t.Errorf("with the cache down: %+v %v", p, err)
	}
	store.down = true
	a.Forget()
	if _, err := a.Authenticate(ctx, later, admitAll); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("with both down: %v", err)
	}
}

// A lookup in Postgres is admitted first (the client address pays for it);
// grants held or in Redis need no admission; a refusal is returned as is.
func TestLookupsAreAdmitted(t *testing.T) {
	known, kh, _ := NewSecret()
	cached, ch, _ := NewSecret()
	store := &fakeStore{grants: map[string]domain.Grant{string(kh): {TokenID: 1, OrgID: 1, Scopes: []string{"read"}}}}
	cache := &fakeCache{grants: map[string]domain.Grant{string(ch): {TokenID: 2, OrgID: 1, Scopes: []string{"read"}}}}
	a := NewAuthenticator(cache, store, &feed{}, prometheus.NewRegistry())
	watchRepairs(a)
	ctx := context.Background()
	refused := errors.New("over the address's budget")
	admits := 0
	admit := func() error { admits++; return nil }
	if _, err := a.Authenticate(ctx, cached, admit); err != nil || admits != 0 {
		t.Errorf("a grant in Redis: %v, %d admissions", err, admits)
	}
	if _, err := a.Authenticate(ctx, known, admit); err != nil || admits != 1 || store.lookups != 1 {
		t.Errorf("a grant in Postgres: %v, %d admissions, %d lookups", err, admits, store.lookups)
	}
	if _, err := a.Authenticate(ctx, known, admit); err != nil || admits != 1 {
		t.Errorf("a held grant: %v, %d admissions", err, admits)
	}
	made, _, _ := NewSecret()
	if _, err := a.Authenticate(ctx, made, func() error { return refused }); err != refused || store.lookups != 1 {
		t.Errorf("a refused lookup: %v, %d lookups", err, store.lookups)
	}
}

// The set of unknown tokens is bounded: a flood pushes out the oldest, a
// few at a time, and never empties it.
func TestRecentIsBounded(t *testing.T) {
	r := newRecent(3)
	now := time.Now()
	for _, k := range []string{"a", "b", "c", "d"} {
		r.add(k, now)
	}
	if r.has("a", now) || !r.has("b", now) || !r.has("c", now) || !r.has("d", now) || len(r.at) != 3 {
		t.Errorf("after 4 adds to 3: %v", r.at)
	}
	if r.has("b", now.Add(unknownTTL)) {
		t.Errorf("a key outlived its time")
	}
}

// Whatever an Authorization header holds, the token is found (or not)
// without panicking, and only one of the issued shape is looked up.
func FuzzBearer(f *testing.F) {
	tok, _, _ := NewSecret()
	for _, h := range []string{"Bearer " + tok, "bearer\t" + tok, "Basic abc", "Bearer spk_" + strings.Repeat("!", 43), "", "Bearer"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token := Bearer(header)
		if WellFormed(token) && (len(token) != secretLen || !strings.HasPrefix(token, Prefix) || len(Hash(token)) != 32) {
			t.Fatalf("%q is well formed", token)
		}
		if WellFormed(token) {
			if _, err := base64.RawURLEncoding.DecodeString(token[len(Prefix):]); err != nil {
				t.Fatalf("%q is well formed, but not base64url: %v", token, err)
			}
		}
	})
}

// A token revoked while Redis could not be told is looked up in Postgres,
// whatever memory and Redis hold of it, until its repair is gone; then
// what memory held of it is forgotten.
func TestARepairedTokenIsLookedUpInPostgres(t *testing.T) {
	tok, h, _ := NewSecret()
	other, oh, _ := NewSecret()
	valid := domain.Grant{TokenID: 1, OrgID: 1, Scopes: []string{"read"}}
	store := &fakeStore{grants: map[string]domain.Grant{string(h): valid, string(oh): {TokenID: 2, OrgID: 1, Scopes: []string{"read"}}}}
	cache := &fakeCache{grants: map[string]domain.Grant{}}
	a := NewAuthenticator(cache, store, &feed{}, prometheus.NewRegistry())
	watchRepairs(a)
	ctx := context.Background()
	for _, s := range []string{tok, other} {
		if _, err := a.Authenticate(ctx, s, admitAll); err != nil {
			t.Fatal(err)
		}
	}
	// Revoked in Postgres only: Redis and memory still say valid.
	revoked := valid
	revoked.Revoked = true
	store.grants[string(h)] = revoked
	store.repairs = [][]byte{h}
	a.readRepairs(ctx, time.Second)
	lookups := store.lookups
	if _, err := a.Authenticate(ctx, tok, admitAll); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a token with a repair: %v, want refused", err)
	}
	if store.lookups != lookups+1 {
		t.Fatalf("%d lookups in Postgres, want 1", store.lookups-lookups)
	}
	if _, err := a.Authenticate(ctx, other, admitAll); err != nil || store.lookups != lookups+1 {
		t.Fatalf("another token: %v, %d lookups; it must still come from memory", err, store.lookups-lookups)
	}
	// Postgres cannot be read: the repairs last read stay in force.
	store.down = true
	a.readRepairs(ctx, time.Second)
	if _, err := a.Authenticate(ctx, tok, admitAll); err == nil {
		t.Fatal("a token with a repair was accepted while Postgres was down")
	}
	store.down = false
	// Redis took the revocation (and the feed will say to forget): the
	// repair goes, and memory must not answer with what it held.
	cache.grants[string(h)] = revoked
	store.repairs = nil
	a.readRepairs(ctx, time.Second)
	if _, err := a.Authenticate(ctx, tok, admitAll); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("after the repair: %v, want refused", err)
	}
	// More repairs than an instance reads: every token is looked up.
	store.repairs = make([][]byte, maxRepairs+1)
	for i := range store.repairs {
		store.repairs[i] = []byte{byte(i), byte(i >> 8), 1}
	}
	a.readRepairs(ctx, time.Second)
	lookups = store.lookups
	if _, err := a.Authenticate(ctx, other, admitAll); err != nil || store.lookups != lookups+1 {
		t.Fatalf("past maxRepairs: %v, %d lookups, want 1", err, store.lookups-lookups)
	}
}

// watchRepairs reads the repairs once, as RunRepairWatch does, and counts
// the read good for an hour: held grants may then be used.
func watchRepairs(a *Authenticator) {
	a.repairEvery.Store(int64(time.Hour))
	a.readRepairs(context.Background(), time.Second)
}

// Held grants are used only while the repairs are read: when the reads
// fail, or have not been made, each request reads its grant again.
func TestHeldGrantsNeedTheRepairsRead(t *testing.T) {
	tok, h, _ := NewSecret()
	store := &fakeStore{grants: map[string]domain.Grant{string(h): {TokenID: 1, OrgID: 1, Scopes: []string{"read"}}}}
	cache := &fakeCache{grants: map[string]domain.Grant{}}
	a := NewAuthenticator(cache, store, &feed{}, prometheus.NewRegistry())
	ctx := context.Background()
	reads := func() int {
		before := cache.gets
		if _, err := a.Authenticate(ctx, tok, admitAll); err != nil {
			t.Fatal(err)
		}
		return cache.gets - before
	}
	reads()
	if n := reads(); n != 1 {
		t.Errorf("before the repairs were ever read: %d reads of Redis, want 1", n)
	}
	a.repairEvery.Store(int64(50 * time.Millisecond))
	a.readRepairs(ctx, time.Second)
	reads()
	if n := reads(); n != 0 {
		t.Errorf("with the repairs read: %d reads of Redis, want the grant held", n)
	}
	store.down = true
	time.Sleep(120 * time.Millisecond)
	a.readRepairs(ctx, time.Second)
	if n := reads(); n != 1 {
		t.Errorf("with the repairs not read for two intervals: %d reads of Redis, want 1", n)
	}
}
