// Package budget charges requests to rate budgets that every instance
// shares, without a round trip to the shared store per request: an
// instance takes part of a budget at once (a lease) and spends it in
// memory.
//
// Every request is charged before it is served. What an instance admits
// was taken from the shared budget first, so over any interval all
// instances together admit at most what one exact limiter would, plus the
// leases they held when the interval began: at most one per instance, of at
// most a tenth of the per-second budget (and at least one request). Leases
// are sized to what the instance spends in about a tenth of a second, so an
// instance that is nearly idle takes one request at a time and holds back
// nothing from the others. When the store cannot be reached, each instance
// keeps the limit on its own (at the whole budget: with N instances a key
// may then get N times its budget), rather than letting everything through.
package budget

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Store holds the budgets every instance shares (redis_rate's GCRA in
// Redis).
type Store interface {
	// Take takes up to n requests' worth of key's budget of perSecond (a
	// burst of one second) and says how many it got.
	Take(ctx context.Context, key string, perSecond, n int) (Taken, error)
}

// Taken is what a Store gave.
type Taken struct {
	Got        int
	Remaining  int           // what is left of the shared budget
	RetryAfter time.Duration // when Got is 0: how long until one more
	ResetAfter time.Duration // until the budget is whole again
}

// Decision is the charge of one request.
type Decision struct {
	Allowed    bool
	PerSecond  int
	Remaining  int           // about what is left: the shared budget and this instance's lease
	RetryAfter time.Duration // when refused
	ResetAfter time.Duration
	// Local says the store could not be reached: the request was charged
	// to this instance's own limiter.
	Local bool
}

// leaseTTL bounds how long a lease may be spent: what a quiet instance
// holds goes back to nobody, but may not be saved up.
const leaseTTL = time.Second

// leaseWindow is how much of an instance's spending one lease covers.
const leaseWindow = 100 * time.Millisecond

// storeRetry is how long after a failure the store is asked again.
const storeRetry = time.Second

// maxAccounts bounds the keys held in memory; past it, those with nothing
// left to spend are dropped.
const maxAccounts = 100_000

// Budgets charges requests, per key, to leases of shared budgets.
type Budgets struct {
	store Store
	now   func() time.Time

	mu       sync.Mutex
	accounts map[string]*account
	local    map[string]*rate.Limiter
	// storeDown is when the store last failed, in unix nanoseconds: for a
	// second after, requests are charged locally without asking it, so that
	// an outage costs one timeout, not one per request.
	storeDown atomic.Int64

	leases, refused, locally prometheus.Counter
}

// account is an instance's part of one key's budget.
type account struct {
	mu        sync.Mutex
	perSecond int
	tokens    int       // left to spend of the lease
	expires   time.Time // of the lease
	size      int       // of the last lease
	taken     time.Time // when the last lease was taken
	closed    time.Time // the store said nothing is left until then
	remaining int       // of the shared budget, at the last lease
	reset     time.Time
	fetching  chan struct{} // closed when the lease being taken arrives
}

// New returns Budgets over store. Its metrics are registered with reg.
func New(store Store, reg prometheus.Registerer) *Budgets {
	b := &Budgets{
		store: store, now: time.Now,
		accounts: make(map[string]*account), local: make(map[string]*rate.Limiter),
		leases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_ratelimit_leases_total", Help: "Parts of shared budgets taken from Redis at once.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_ratelimited_total", Help: "Requests refused with 429.",
		}),
		locally: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_ratelimit_errors_total", Help: "Requests charged to this instance's own limiter because Redis could not lease a budget.",
		}),
	}
	reg.MustRegister(b.leases, b.refused, b.locally)
	return b
}

// Charge charges one request to key's budget of perSecond and says whether
// it may be served. It waits for a lease when this instance has none left,
// sharing that round trip with the requests that arrive meanwhile.
func (b *Budgets) Charge(ctx context.Context, key string, perSecond int) Decision {
	if b.now().UnixNano()-b.storeDown.Load() < int64(storeRetry) {
		return b.chargeLocally(key, perSecond)
	}
	a := b.account(key, perSecond)
	a.mu.Lock()
	for {
		now := b.now()
		if a.tokens > 0 && now.Before(a.expires) {
			a.tokens--
			d := Decision{Allowed: true, PerSecond: perSecond, Remaining: a.remaining + a.tokens, ResetAfter: a.reset.Sub(now)}
			a.mu.Unlock()
			return d
		}
		if now.Before(a.closed) {
			d := Decision{PerSecond: perSecond, RetryAfter: a.closed.Sub(now), ResetAfter: a.reset.Sub(now)}
			a.mu.Unlock()
			b.refused.Inc()
			return d
		}
		if a.fetching != nil {
			wait := a.fetching
			a.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return Decision{PerSecond: perSecond, RetryAfter: time.Second}
			}
			a.mu.Lock()
			continue
		}
		n := a.nextSize(now)
		done := make(chan struct{})
		a.fetching = done
		a.mu.Unlock()
		t, err := b.store.Take(ctx, key, perSecond, n)
		a.mu.Lock()
		a.fetching = nil
		close(done)
		if err != nil {
			a.mu.Unlock()
			b.storeDown.Store(b.now().UnixNano())
			return b.chargeLocally(key, perSecond)
		}
		b.leases.Inc()
		now = b.now()
		a.tokens, a.expires, a.size, a.taken = t.Got, now.Add(leaseTTL), max(t.Got, 1), now
		a.remaining, a.reset = t.Remaining, now.Add(t.ResetAfter)
		if t.Got == 0 {
			// Nothing left: ask again once a lease's worth has come back,
			// not at every request meanwhile.
			a.closed = now.Add(t.RetryAfter + time.Duration(n-1)*time.Second/time.Duration(perSecond))
		}
	}
}

// Refund gives back what a request was charged, to the lease it was taken
// from: for a request that turned out to cost nothing (a 304).
func (b *Budgets) Refund(key string) {
	b.mu.Lock()
	a := b.accounts[key]
	b.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if b.now().Before(a.expires) && a.tokens < a.size {
		a.tokens++
	}
}

// nextSize is the size of the next lease: how fast the last one was spent
// says how fast this instance spends, and a lease covers leaseWindow of
// it, at least one request and at most a tenth of the per-second budget.
func (a *account) nextSize(now time.Time) int {
	if a.taken.IsZero() {
		return 1
	}
	spent := float64(max(a.size-a.tokens, 0)) / max(now.Sub(a.taken), time.Millisecond).Seconds()
	return min(max(int(spent*leaseWindow.Seconds()+0.5), 1), max(a.perSecond/10, 1))
}

func (b *Budgets) account(key string, perSecond int) *account {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.accounts[key]
	if a == nil || a.perSecond != perSecond {
		if len(b.accounts) >= maxAccounts {
			b.sweep()
		}
		a = &account{perSecond: perSecond}
		b.accounts[key] = a
	}
	return a
}

// sweep drops the accounts with nothing to spend and nothing pending.
func (b *Budgets) sweep() {
	now := b.now()
	for k, a := range b.accounts {
		if a.mu.TryLock() {
			idle := a.fetching == nil && !now.Before(a.expires) && !now.Before(a.closed)
			a.mu.Unlock()
			if idle {
				delete(b.accounts, k)
			}
		}
	}
	for k, l := range b.local {
		if l.Tokens() >= float64(l.Burst()) {
			delete(b.local, k)
		}
	}
}

// chargeLocally charges the request to this instance's own limiter of key,
// for when the store cannot be reached.
func (b *Budgets) chargeLocally(key string, perSecond int) Decision {
	b.locally.Inc()
	b.mu.Lock()
	l := b.local[key]
	if l == nil || l.Burst() != perSecond {
		if len(b.local) >= maxAccounts {
			b.sweep()
		}
		l = rate.NewLimiter(rate.Limit(perSecond), perSecond)
		b.local[key] = l
	}
	b.mu.Unlock()
	now := b.now()
	if l.AllowN(now, 1) {
		return Decision{Allowed: true, PerSecond: perSecond, Remaining: int(l.TokensAt(now)), Local: true}
	}
	b.refused.Inc()
	return Decision{PerSecond: perSecond, RetryAfter: time.Second / time.Duration(perSecond), Local: true}
}
