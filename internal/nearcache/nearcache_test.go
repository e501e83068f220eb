package nearcache

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

type feed struct{ stale atomic.Bool }

func (f *feed) Fresh() bool { return !f.stale.Load() }

func entry(version int64, body string) readmodel.Entry {
	return readmodel.Entry{Version: version, Body: []byte(body), ETag: `"` + strconv.FormatInt(version, 10) + `"`, Org: 1}
}

func newCache(budget int64) (*Cache, *feed) {
	f := &feed{}
	return New(budget, f, prometheus.NewRegistry()), f
}

// held returns the version held for key, 0 for none.
func held(c *Cache, key string) int64 {
	e, ok := c.Get(key)
	if !ok {
		return 0
	}
	return e.Version
}

func TestFillAndChange(t *testing.T) {
	tests := []struct {
		name string
		run  func(c *Cache)
		want int64
	}{
		{"a fill is kept", func(c *Cache) {
			c.Fill("k", entry(5, "five"), c.Ticket())
		}, 5},
		{"a change at a newer version drops it", func(c *Cache) {
			c.Fill("k", entry(5, "five"), c.Ticket())
			c.Changed("k", 6)
		}, 0},
		{"a change at the same version drops it (a repair rewrites a body)", func(c *Cache) {
			c.Fill("k", entry(5, "five"), c.Ticket())
			c.Changed("k", 5)
		}, 0},
		{"a late change of an older version keeps the newer entry", func(c *Cache) {
			c.Fill("k", entry(7, "seven"), c.Ticket())
			c.Changed("k", 6)
		}, 7},
		{"a deletion drops it", func(c *Cache) {
			c.Fill("k", entry(5, "five"), c.Ticket())
			c.Changed("k", -1)
		}, 0},
		{"a fill read before a change is refused", func(c *Cache) {
			tk := c.Ticket()
			c.Changed("k", 6) // the projector wrote 6 while 5 was being read
			c.Fill("k", entry(5, "five"), tk)
		}, 0},
		{"a fill read after the change is kept", func(c *Cache) {
			c.Changed("k", 6)
			c.Fill("k", entry(6, "six"), c.Ticket())
		}, 6},
		{"an older fill never replaces a newer entry", func(c *Cache) {
			old := c.Ticket()
			c.Fill("k", entry(7, "seven"), c.Ticket())
			c.Fill("k", entry(6, "six"), old)
		}, 7},
		{"a change of another key does not refuse the fill", func(c *Cache) {
			other := "other"
			for c.slot(other) == c.slot("k") { // keys that share a slot do refuse each other's fills
				other += "!"
			}
			tk := c.Ticket()
			c.Changed(other, 3)
			c.Fill("k", entry(5, "five"), tk)
		}, 5},
		{"a fill read before a flush is refused", func(c *Cache) {
			tk := c.Ticket()
			c.Flush("test")
			c.Fill("k", entry(5, "five"), tk)
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCache(1 << 20)
			tc.run(c)
			if got := held(c, "k"); got != tc.want {
				t.Errorf("holds version %d, want %d", got, tc.want)
			}
		})
	}
}

// Nothing is served, or kept, while the feed is not fresh; a flush drops
// everything.
func TestServesOnlyWhileFresh(t *testing.T) {
	c, f := newCache(1 << 20)
	c.Fill("k", entry(1, "one"), c.Ticket())
	f.stale.Store(true)
	if _, ok := c.Get("k"); ok {
		t.Errorf("served while the feed is stale")
	}
	c.Fill("j", entry(1, "one"), c.Ticket())
	f.stale.Store(false)
	if held(c, "j") != 0 {
		t.Errorf("kept a fill whose ticket was taken while the feed was stale")
	}
	c.Flush("test")
	if held(c, "k") != 0 {
		t.Errorf("an entry survived a flush")
	}
}

// The budget is kept, least recently used out first; an entry over a
// quarter of the budget is not kept; a budget of 0 keeps nothing.
func TestBudget(t *testing.T) {
	body := string(make([]byte, 1000))
	c, _ := newCache(10 * (1000 + 1 + 3 + itemOverhead)) // ten entries of one-character keys, ETag `"1"`
	for i := range 10 {
		c.Fill(strconv.Itoa(i), entry(1, body), c.Ticket())
	}
	held(c, "0") // used: "1" is now the oldest
	c.Fill("10", entry(1, body), c.Ticket())
	if held(c, "1") != 0 || held(c, "0") == 0 || held(c, "10") == 0 {
		t.Errorf("evicted the wrong entry")
	}
	if c.bytes > c.budget {
		t.Errorf("holds %d bytes of a budget of %d", c.bytes, c.budget)
	}
	c.Fill("big", entry(1, string(make([]byte, c.budget/4))), c.Ticket())
	if held(c, "big") != 0 {
		t.Errorf("kept an entry over a quarter of the budget")
	}
	off, _ := newCache(0)
	off.Fill("k", entry(1, "one"), off.Ticket())
	if held(off, "k") != 0 {
		t.Errorf("a cache of 0 bytes kept an entry")
	}
}

// A collection's member list stays in Redis.
func TestMembersAreNotKept(t *testing.T) {
	c, _ := newCache(1 << 20)
	e := entry(3, "list")
	e.Members = make(readmodel.Members, 32)
	c.Fill("k", e, c.Ticket())
	if got, ok := c.Get("k"); !ok || got.Members != nil {
		t.Errorf("got %+v, %v", got, ok)
	}
}
