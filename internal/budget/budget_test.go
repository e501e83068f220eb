package budget

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pool is a store with a fixed number of requests to give, and no refill:
// enough to check what Budgets takes and spends.
type pool struct {
	mu    sync.Mutex
	left  int
	takes []int // the n of each Take
	down  bool
}

func (p *pool) Take(_ context.Context, _ string, _, n int) (Taken, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return Taken{}, errors.New("down")
	}
	p.takes = append(p.takes, n)
	got := min(n, p.left)
	p.left -= got
	return Taken{Got: got, Remaining: p.left, RetryAfter: 50 * time.Millisecond, ResetAfter: time.Second}, nil
}

// clock is a time the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newBudgets(store Store) (*Budgets, *clock) {
	clk := &clock{now: time.Unix(1700000000, 0)}
	b := New(store, prometheus.NewRegistry())
	b.now = clk.Now
	return b, clk
}

// Leases grow with how fast they are spent, up to a tenth of the budget
// per second: a busy key costs the store one round trip per lease, not per
// request; nothing is admitted that the store did not give.
func TestLeasesGrowWithSpending(t *testing.T) {
	p := &pool{left: 10_000}
	b, clk := newBudgets(p)
	allowed := 0
	for range 2000 {
		if b.Charge(context.Background(), "k", 1000).Allowed {
			allowed++
		}
		clk.Add(100 * time.Microsecond) // 10,000 requests a second
	}
	if allowed != 2000 {
		t.Fatalf("%d of 2000 allowed with plenty of budget", allowed)
	}
	if len(p.takes) > 40 {
		t.Errorf("%d takes from the store for 2000 requests: %v", len(p.takes), p.takes)
	}
	for _, n := range p.takes {
		if n > 100 {
			t.Errorf("a lease of %d, over a tenth of the budget of 1000/s", n)
		}
	}
	if got := 10_000 - p.left; got < allowed || got > allowed+100 {
		t.Errorf("took %d from the store and admitted %d: at most one lease of 100 may be left over", got, allowed)
	}
}

// A nearly idle key takes one request at a time: it holds back nothing
// that other instances could spend.
func TestQuietKeysTakeOneAtATime(t *testing.T) {
	p := &pool{left: 1000}
	b, clk := newBudgets(p)
	for range 10 {
		b.Charge(context.Background(), "k", 1000)
		clk.Add(500 * time.Millisecond)
	}
	for _, n := range p.takes {
		if n != 1 {
			t.Fatalf("leases %v for a request every half second", p.takes)
		}
	}
}

// When the store has nothing left, requests are refused without asking it
// again until a lease's worth has come back; the refusal says when.
func TestRefusalsAreRemembered(t *testing.T) {
	p := &pool{left: 3}
	b, clk := newBudgets(p)
	ctx := context.Background()
	allowed := 0
	var last Decision
	for range 50 {
		if last = b.Charge(ctx, "k", 10); last.Allowed {
			allowed++
		}
	}
	if allowed != 3 || last.RetryAfter <= 0 || last.PerSecond != 10 {
		t.Errorf("%d allowed of a store of 3; the last refusal %+v", allowed, last)
	}
	if len(p.takes) > 4 {
		t.Errorf("the store was asked %d times: %v", len(p.takes), p.takes)
	}
	clk.Add(time.Second)
	b.Charge(ctx, "k", 10)
	if len(p.takes) < 3 {
		t.Errorf("the store was not asked again once the refusal ran out: %v", p.takes)
	}
}

// Requests that arrive while a lease is being taken wait for it and share
// it: one round trip for all of them.
func TestConcurrentChargesShareALease(t *testing.T) {
	p := &pool{left: 1000}
	b, _ := newBudgets(p)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Charge(context.Background(), "k", 100)
		}()
	}
	wg.Wait()
	if taken := 1000 - p.left; taken < 50 || len(p.takes) > 50 {
		t.Errorf("50 concurrent requests took %d in %d takes", taken, len(p.takes))
	}
}

// A refund (a 304) goes back to the lease; a lease cannot be saved up past
// its lifetime.
func TestRefundsAndExpiry(t *testing.T) {
	p := &pool{left: 1}
	b, clk := newBudgets(p)
	ctx := context.Background()
	if !b.Charge(ctx, "k", 5).Allowed {
		t.Fatal("the first request was refused")
	}
	b.Refund("k")
	if !b.Charge(ctx, "k", 5).Allowed {
		t.Fatal("a refunded request's share was not spent again")
	}
	b.Refund("k")
	clk.Add(2 * leaseTTL)
	if b.Charge(ctx, "k", 5).Allowed {
		t.Error("a refund outlived its lease")
	}
}

// Without the store, each instance keeps the limit on its own, and asks
// the store again only a second after it failed.
func TestLocalLimitWhenTheStoreIsDown(t *testing.T) {
	p := &pool{down: true}
	b, clk := newBudgets(p)
	asked := 0
	b.store = storeFunc(func(ctx context.Context, key string, perSecond, n int) (Taken, error) {
		asked++
		return p.Take(ctx, key, perSecond, n)
	})
	allowed, local := 0, 0
	for range 20 {
		d := b.Charge(context.Background(), "k", 5)
		if d.Allowed {
			allowed++
		}
		if d.Local {
			local++
		}
	}
	if allowed != 5 || local != 20 || asked != 1 {
		t.Errorf("with the store down, %d of 20 allowed at 5/s (%d decided locally, the store asked %d times)", allowed, local, asked)
	}
	clk.Add(storeRetry)
	b.Charge(context.Background(), "k", 5)
	if asked != 2 {
		t.Errorf("the store was not asked again a second after it failed")
	}
}

type storeFunc func(ctx context.Context, key string, perSecond, n int) (Taken, error)

func (f storeFunc) Take(ctx context.Context, key string, perSecond, n int) (Taken, error) {
	return f(ctx, key, perSecond, n)
}
