// Package nearcache keeps, in a reader's memory, the read-model entries it
// served from Redis, so that a read of a hot key touches neither Redis nor
// Postgres. It is only as good as the feed of changes that keeps it honest
// (see rediscache.Feed): every entry is dropped when a change of its key at
// the same or a newer version arrives, everything is dropped when the feed
// is lost, and nothing is served while the feed is not fresh.
//
// A fill races the changes: a reader may read version 5 of a key from
// Redis, the projector write version 6 and its change arrive, and only then
// the reader install version 5. So every fill carries a Ticket taken before
// its read, and is refused when a change of its key (or a flush) was
// applied since.
package nearcache

import (
	"container/list"
	"hash/maphash"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Freshness says whether the feed of changes is fresh: whether every
// change committed more than the staleness bound ago has been applied.
type Freshness interface {
	Fresh() bool
}

// Cache holds entries up to a budget of bytes, least recently used out
// first. Its methods are safe for concurrent use.
type Cache struct {
	feed   Freshness
	budget int64

	mu      sync.Mutex
	entries map[string]*list.Element // of *item
	lru     list.List                // most recently used at the front
	bytes   int64
	gen     uint64 // bumped by every flush: tickets taken before are void
	seq     uint64 // changes applied
	// recent holds, per slot of a key's hash, the seq of the last change
	// applied to a key in that slot: a fill whose ticket is older is
	// refused. Keys that share a slot refuse each other's fills now and
	// then, which costs a read of Redis, never a stale entry.
	recent [recentSlots]uint64
	seed   maphash.Seed

	hits, misses, refused prometheus.Counter
	flushes               *prometheus.CounterVec
	size, count           prometheus.Gauge
}

const recentSlots = 4096

type item struct {
	key   string
	entry readmodel.Entry
	size  int64
}

// itemOverhead is about what an entry costs beyond its bytes: the map
// slot, the list element, the strings' headers.
const itemOverhead = 160

// New returns a Cache of budget bytes that serves only while feed is
// fresh; a budget of 0 turns it off (nothing is kept). Its metrics are
// registered with reg.
func New(budget int64, feed Freshness, reg prometheus.Registerer) *Cache {
	c := &Cache{
		feed: feed, budget: budget, entries: make(map[string]*list.Element), seed: maphash.MakeSeed(),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_nearcache_hits_total", Help: "Reads answered from the reader's memory.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_nearcache_misses_total", Help: "Reads the reader's memory could not answer (absent, or the feed not fresh).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_nearcache_fills_refused_total", Help: "Entries read from Redis and not kept: a change of the key, or a flush, came first.",
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_nearcache_flushes_total", Help: "Times the reader dropped everything it held, by reason.",
		}, []string{"reason"}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_nearcache_bytes", Help: "Bytes the reader's memory holds, about.",
		}),
		count: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_nearcache_entries", Help: "Entries the reader's memory holds.",
		}),
	}
	reg.MustRegister(c.hits, c.misses, c.refused, c.flushes, c.size, c.count)
	return c
}

// Get returns the entry held for key, when the feed is fresh.
func (c *Cache) Get(key string) (readmodel.Entry, bool) {
	if c.budget > 0 && c.feed.Fresh() {
		c.mu.Lock()
		el, ok := c.entries[key]
		if ok {
			c.lru.MoveToFront(el)
			e := el.Value.(*item).entry
			c.mu.Unlock()
			c.hits.Inc()
			return e, true
		}
		c.mu.Unlock()
	}
	c.misses.Inc()
	return readmodel.Entry{}, false
}

// Ticket is taken before a read of Redis whose result may be kept.
type Ticket struct {
	gen, seq uint64
	ok       bool // the feed was fresh: a fill may be kept
}

// Ticket returns a ticket for a fill about to be read.
func (c *Cache) Ticket() Ticket {
	if c.budget == 0 || !c.feed.Fresh() {
		return Ticket{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return Ticket{gen: c.gen, seq: c.seq, ok: true}
}

// Fill keeps e, read from Redis under ticket t, unless a change of key or a
// flush was applied since the ticket was taken, the entry is too large for
// the budget, or a newer version is held. A collection's member list is not
// kept: a read that needs it goes to Redis.
func (c *Cache) Fill(key string, e readmodel.Entry, t Ticket) {
	if !t.ok {
		return
	}
	e.Members = nil
	size := int64(len(key)+len(e.Body)+len(e.ETag)) + itemOverhead
	if size > c.budget/4 {
		return // one entry may not push out most of the others
	}
	slot := c.slot(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.gen != c.gen || c.recent[slot] > t.seq {
		c.refused.Inc()
		return
	}
	if el, ok := c.entries[key]; ok {
		it := el.Value.(*item)
		if it.entry.Version > e.Version {
			return
		}
		c.remove(el)
	}
	c.entries[key] = c.lru.PushFront(&item{key: key, entry: e, size: size})
	c.bytes += size
	for c.bytes > c.budget {
		c.remove(c.lru.Back())
	}
	c.gauges()
}

// Changed applies a change of key to version (negative: the key was
// deleted): an entry at that version or older is dropped, and a fill of the
// key read before now will be refused.
func (c *Cache) Changed(key string, version int64) {
	if c.budget == 0 {
		return
	}
	slot := c.slot(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.recent[slot] = c.seq
	if el, ok := c.entries[key]; ok && (version < 0 || el.Value.(*item).entry.Version <= version) {
		c.remove(el)
		c.gauges()
	}
}

// Flush drops everything held and voids every ticket: the feed was lost or
// went stale, so changes may have been missed. reason labels the metric.
func (c *Cache) Flush(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.lru.Init()
	c.bytes = 0
	c.gauges()
	c.flushes.WithLabelValues(reason).Inc()
}

func (c *Cache) remove(el *list.Element) {
	it := c.lru.Remove(el).(*item)
	delete(c.entries, it.key)
	c.bytes -= it.size
}

func (c *Cache) gauges() {
	c.size.Set(float64(c.bytes))
	c.count.Set(float64(len(c.entries)))
}

func (c *Cache) slot(key string) uint64 {
	return maphash.String(c.seed, key) % recentSlots
}
