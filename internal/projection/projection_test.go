package projection

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/postgres/pgtest"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
	"github.com/sprockets-api/sprockets/internal/rediscache"
)

var (
	pg    *devstack.Postgres
	redis *devstack.Redis
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// ids makes the /v1 ids of the bodies the tests build.
var ids = func() *publicid.Codec {
	c, err := publicid.New("the key of this package's tests, 32+ bytes")
	if err != nil {
		panic(err)
	}
	return c
}()

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "projection-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if redis, err = devstack.StartRedis(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "a real Redis is required:", err)
		return 1
	}
	defer redis.Stop()
	return pgtest.Main(m, false, func(leader, _ *devstack.Postgres) { pg = leader })
}

// world is a fresh database and an empty Redis, with a store to write
// through and a projector to apply what it recorded.
type world struct {
	store *postgres.Store
	db    *sqlx.DB
	rdb   *goredis.Client
	cache *rediscache.Cache
	proj  *Projector
	seen  int64 // outbox rows already taken
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	db, _ := pgtest.Fresh(t, pg)
	rdb, err := rediscache.Connect(redis.URL(), 8, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	cache := rediscache.New(rdb)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &world{store: pgtest.Store(t, db), db: db, rdb: rdb, cache: cache,
		proj: New(postgres.NewReads(db), cache, ids, log, prometheus.NewRegistry())}
}

// take returns the events recorded since the last take, in order.
func (w *world) take(t *testing.T) []events.Envelope {
	t.Helper()
	return pgtest.Events(t, w.db, &w.seen)
}

func (w *world) apply(t *testing.T, e events.Envelope, want string) {
	t.Helper()
	got, err := w.proj.Apply(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%s v%d: outcome %s, want %s", e.Subject(), e.Version, got, want)
	}
}

// verify fails the test unless every key matches Postgres.
func (w *world) verify(t *testing.T) {
	t.Helper()
	if _, err := w.proj.RebuildDirty(context.Background()); err != nil {
		t.Fatal(err)
	}
	drifts, err := w.proj.Verify(context.Background(), time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(drifts) > 0 {
		t.Fatalf("drift: %v", drifts)
	}
}

var spec = domain.SprocketSpec{Teeth: 5, PitchDiameter: 5, OutsideDiameter: 6, Pitch: 1}

func bump(s domain.SprocketSpec) domain.SprocketSpec { s.Teeth++; return s }

func TestSprocketVersionRule(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	sp, _, err := w.store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := w.store.UpdateSprocket(ctx, domain.System(1, "test"), sp.ID, 0, bump); err != nil {
			t.Fatal(err)
		}
	}
	evs := w.take(t) // versions 1..4
	w.apply(t, evs[0], Applied)
	w.apply(t, evs[0], Duplicate) // redelivered
	w.apply(t, evs[2], Rebuilt)   // v3 over v1: a gap, rebuilt from Postgres (now at v4)
	w.apply(t, evs[1], Duplicate) // v2 arrives late: it must not roll the key back
	w.apply(t, evs[3], Duplicate) // the rebuild already reflects v4
	e, _, _ := w.cache.Get(ctx, readmodel.SprocketKey(sp.ID), false)
	if e.Version != 4 {
		t.Fatalf("key at v%d, want v4", e.Version)
	}
	if _, err := w.store.DeleteSprocket(ctx, domain.System(1, "test"), sp.ID, 0); err != nil {
		t.Fatal(err)
	}
	w.apply(t, w.take(t)[0], Applied)
	if e, _, _ := w.cache.Get(ctx, readmodel.SprocketCompatKey(sp.ID), false); !e.Deleted || e.Version != 5 {
		t.Fatalf("compat key after the delete: %+v", e)
	}
	w.apply(t, evs[0], Duplicate) // a very late creation event does not resurrect it
	w.verify(t)
}

// sample is a sample of time tm whose actual is a and goal 1.
func sample(tm, a int64) domain.Sample { return domain.Sample{Time: tm, Actual: a, Goal: 1} }

// newFactory creates a factory of organization 1 with samples at 10 and
// 3610, projects its creation, and returns it and that event.
func (w *world) newFactory(t *testing.T) (domain.Factory, events.Envelope) {
	t.Helper()
	f, _, err := w.store.CreateFactory(context.Background(), domain.System(1, "test"), domain.FactorySpec{Name: "F"},
		[]domain.Sample{sample(10, 1), sample(3610, 2)}, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	created := w.take(t)[0]
	w.apply(t, created, Applied)
	return f, created
}

func TestFactoryHistoryProjection(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	s := sample
	f, created := w.newFactory(t)
	w.verify(t)
	// Appends merge into their buckets; a redelivery changes nothing.
	if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{s(20, 3), s(7300, 4)}); err != nil {
		t.Fatal(err)
	}
	e := w.take(t)[0]
	w.apply(t, e, Applied)
	w.apply(t, e, Duplicate)
	w.verify(t)
	// Missed appends: only the buckets they touched are rebuilt.
	for _, tm := range []int64{30, 40} {
		if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{s(tm, 5)}); err != nil {
			t.Fatal(err)
		}
	}
	missed := w.take(t)
	w.apply(t, missed[1], Rebuilt)
	w.apply(t, missed[0], Duplicate)
	w.verify(t)
	b, _, _ := w.cache.Get(ctx, readmodel.ChartBucketKey(f.ID, 0), false)
	if string(b.Body) != `[[10,1,1],[20,3,1],[30,5,1],[40,5,1]]` {
		t.Errorf("bucket 0 holds %s", b.Body)
	}
	// Deleting drops the buckets and the history's segments, and leaves
	// tombstones.
	if _, err := w.store.DeleteFactory(ctx, domain.System(1, "test"), f.ID, 0); err != nil {
		t.Fatal(err)
	}
	w.apply(t, w.take(t)[0], Applied)
	if _, ok, _ := w.cache.Get(ctx, readmodel.ChartBucketKey(f.ID, 2), false); ok {
		t.Errorf("a deleted factory's bucket is still there")
	}
	if _, ok, _ := w.cache.Get(ctx, readmodel.HistorySegmentKey(f.ID, readmodel.HeadSegment), false); ok {
		t.Errorf("a deleted factory's history segment is still there")
	}
	if m, ok, _ := w.cache.Get(ctx, readmodel.HistoryKey(f.ID), false); !ok || !m.Deleted {
		t.Errorf("a deleted factory's manifest: %+v, %v", m, ok)
	}
	w.verify(t)
	// A late redelivery of the creation brings back nothing.
	w.apply(t, created, Duplicate)
	if _, ok, _ := w.cache.Get(ctx, readmodel.HistorySegmentKey(f.ID, readmodel.HeadSegment), false); ok {
		t.Errorf("a late creation brought a segment back")
	}
	w.verify(t)
}

// historyReads counts the reads of histories from their start, and of
// their later pages.
type historyReads struct {
	Source
	whole, pages int
}

func (r *historyReads) SamplesAsOf(ctx context.Context, id, asOf, after int64, limit int) ([]domain.Sample, error) {
	if after < 0 {
		r.whole++
	} else {
		r.pages++
	}
	return r.Source.SamplesAsOf(ctx, id, asOf, after, limit)
}

// An append to a long history rewrites the segment it falls in and the
// manifest, never reading the history whole; a sample that starts a
// segment splits the one it fell in; and what the appends leave is what a
// rebuild writes (verify compares every segment).
func TestLongHistoryAppends(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	reads := &historyReads{Source: postgres.NewReads(w.db)}
	proj := New(reads, w.cache, ids, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	// Histories are read in pages of 999 samples: the gap's rebuild and
	// verify read this one in about 20.
	proj.historyPage, w.proj.historyPage = 999, 999
	var history []domain.Sample
	for i := int64(0); i < 20_000; i++ {
		history = append(history, domain.Sample{Time: 1_000_000 + 60*i, Actual: i, Goal: 7})
	}
	f, _, err := w.store.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, history[:10_000], domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, history[10_000:]); err != nil {
		t.Fatal(err)
	}
	for _, e := range w.take(t) {
		if outcome, err := proj.Apply(ctx, e); err != nil || outcome != Applied {
			t.Fatalf("%s: %s, %v", e.Type, outcome, err)
		}
	}
	// Appends at the end, one before everything, and one in the middle
	// that starts a segment.
	var starts int64 = -1
	for tm := int64(1_000_030); starts < 0; tm += 60 {
		if readmodel.LayoutsOf(ids).History(f.ID).StartsSegment(tm) {
			starts = tm
		}
	}
	for _, tm := range []int64{1_000_000 + 60*20_000, 1_000_000 + 60*20_001, 5, starts} {
		if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{{Time: tm, Actual: 1, Goal: 2}}); err != nil {
			t.Fatal(err)
		}
		if outcome, err := proj.Apply(ctx, w.take(t)[0]); err != nil || outcome != Applied {
			t.Fatalf("append at %d: %s, %v", tm, outcome, err)
		}
	}
	if reads.whole != 0 {
		t.Errorf("the appends read the whole history %d times", reads.whole)
	}
	// A gap rebuilds the history from Postgres, a page at a time.
	if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{{Time: 1_000_000 + 60*20_002, Actual: 1, Goal: 2}}); err != nil {
		t.Fatal(err)
	}
	w.take(t) // missed
	if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{{Time: 1_000_000 + 60*20_003, Actual: 1, Goal: 2}}); err != nil {
		t.Fatal(err)
	}
	if outcome, err := proj.Apply(ctx, w.take(t)[0]); err != nil || outcome != Rebuilt {
		t.Fatalf("append after a gap: %s, %v", outcome, err)
	}
	if reads.whole == 0 || reads.pages < 20 {
		t.Errorf("the gap read the history from its start %d times, and %d later pages of 999 samples", reads.whole, reads.pages)
	}
	man, _, _ := w.cache.Get(ctx, readmodel.HistoryKey(f.ID), false)
	m, err := readmodel.DecodeManifest(man.Body)
	if err != nil || len(m) < 5 {
		t.Fatalf("manifest of %d segments, %v", len(m), err)
	}
	if _, ok := m.Item(starts); !ok {
		t.Errorf("the sample at %d did not start a segment", starts)
	}
	w.verify(t)
}

// Two projectors applying the same events at once, in any interleaving,
// leave exactly what one would.
func TestConcurrentProjectors(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	other := New(postgres.NewReads(w.db), w.cache, ids, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	f, _, err := w.store.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, nil, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := 0; i < 20; i++ {
		sp, _, err := w.store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sp.ID)
		if _, _, err := w.store.UpdateSprocket(ctx, domain.System(1, "test"), sp.ID, 0, bump); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{{Time: int64(i) * 1000, Actual: int64(i), Goal: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	evs := w.take(t)
	var wg sync.WaitGroup
	for _, p := range []*Projector{w.proj, other} {
		wg.Add(1)
		go func(p *Projector) {
			defer wg.Done()
			for i := range evs {
				// One goes forward, the other backward.
				e := evs[i]
				if p == other {
					e = evs[len(evs)-1-i]
				}
				if _, err := p.Apply(ctx, e); err != nil {
					t.Error(err)
				}
			}
		}(p)
	}
	wg.Wait()
	w.verify(t)
}

func TestDerivedBodiesAndVerify(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for i := 0; i < 3; i++ {
		if _, _, err := w.store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := w.store.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, []domain.Sample{{Time: 5, Actual: 1, Goal: 1}}, domain.Idempotency{}); err != nil {
		t.Fatal(err)
	}
	errs := w.proj.HandleBatch(ctx, encodeAll(t, w.take(t)))
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	marks, _ := w.cache.Dirty(ctx)
	if len(marks) != 5 { // the org's sprockets (and which of them changed) and factories
		t.Fatalf("dirty marks %v", marks)
	}
	w.verify(t)
	if marks, _ := w.cache.Dirty(ctx); len(marks) != 0 {
		t.Errorf("marks left after rebuilding: %v", marks)
	}

	// Drift is found, and repaired.
	if err := w.rdb.HSet(ctx, readmodel.SprocketCompatKey(2), "b", `{"id":2,"teeth":999}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.rdb.Del(ctx, readmodel.SprocketListKey(1)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.rdb.HSet(ctx, "rm:sprocket:777:v1", "v", 1).Err(); err != nil {
		t.Fatal(err)
	}
	drifts, err := w.proj.Verify(ctx, time.Millisecond, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "[rm:org:1:sprockets: missing rm:sprocket:2:compat: body differs rm:sprocket:777:v1: key should not exist]"
	if fmt.Sprint(drifts) != want {
		t.Errorf("drifts %v\nwant %s", drifts, want)
	}
	w.verify(t)

	// A flushed read model is rebuilt whole.
	if err := w.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if rebuilt, err := w.proj.EnsureBuilt(ctx); err != nil || !rebuilt {
		t.Fatalf("EnsureBuilt after a flush: rebuilt %v, %v", rebuilt, err)
	}
	if rebuilt, err := w.proj.EnsureBuilt(ctx); err != nil || rebuilt {
		t.Fatalf("EnsureBuilt once built: rebuilt %v, %v", rebuilt, err)
	}
	w.verify(t)
}

func TestPoisonEvents(t *testing.T) {
	w := newWorld(t)
	for _, body := range []string{`not json`, `{"id":"x","type":"exploded","aggregate_type":"sprocket","aggregate_id":1,"org_id":1,"version":1,"payload":{}}`,
		`{"id":"x","type":"created","aggregate_type":"sprocket","aggregate_id":1,"org_id":1,"version":1,"payload":{"sprocket":{"id":2,"version":1}}}`} {
		err := w.proj.HandleBatch(context.Background(), [][]byte{[]byte(body)})[0]
		if domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v, want EINVALID so that it is parked", body, err)
		}
	}
}

// wholeReads counts the reads of a whole organization's sprockets, and
// can act between a patch's reads and its write.
type wholeReads struct {
	Source
	whole   int
	between func()
}

func (r *wholeReads) SprocketSpecsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error) {
	r.whole++
	return r.Source.SprocketSpecsOfOrg(ctx, org)
}

func (r *wholeReads) SprocketSpecsInRange(ctx context.Context, org, lo, hi int64) ([]domain.Sprocket, error) {
	if r.between != nil {
		r.between()
	}
	return r.Source.SprocketSpecsInRange(ctx, org, lo, hi)
}

// A sprocket list is built whole once, then its segments that changed are
// read again; a patch that another projector beat to it is done.
func TestCollectionPatches(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	reads := &wholeReads{Source: postgres.NewReads(w.db)}
	proj := New(reads, w.cache, ids, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	project := func() {
		t.Helper()
		for _, err := range proj.HandleBatch(ctx, encodeAll(t, w.take(t))) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	rebuild := func() {
		t.Helper()
		if _, err := proj.RebuildDirty(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantWhole := func(n int, why string) {
		t.Helper()
		if reads.whole != n {
			t.Fatalf("%d whole reads, want %d: %s", reads.whole, n, why)
		}
	}
	sys := domain.System(1, "test")
	var ids []int64
	for i := 0; i < 5; i++ {
		sp, _, err := w.store.CreateSprocket(ctx, sys, spec, domain.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sp.ID)
	}
	project()
	rebuild()
	wantWhole(1, "a collection that was not there is built whole")
	w.verify(t)

	// An update, a delete and a create: patched in, nothing read whole.
	if _, _, err := w.store.UpdateSprocket(ctx, sys, ids[1], 0, bump); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.DeleteSprocket(ctx, sys, ids[3], 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.store.CreateSprocket(ctx, sys, spec, domain.Idempotency{}); err != nil {
		t.Fatal(err)
	}
	project()
	rebuild()
	wantWhole(1, "the patch reads none")
	if marks, _ := w.cache.Dirty(ctx); len(marks) != 0 {
		t.Fatalf("marks left after patching: %v", marks)
	}
	w.verify(t)

	// Another projector writes the body between this patch's reads and its
	// write: the patch is refused and its marks stay for the next round.
	if _, _, err := w.store.UpdateSprocket(ctx, sys, ids[0], 0, bump); err != nil {
		t.Fatal(err)
	}
	project()
	reads.between = func() {
		reads.between = nil
		if _, _, err := w.store.UpdateSprocket(ctx, sys, ids[2], 0, bump); err != nil {
			t.Fatal(err)
		}
		project()
		all, err := reads.Source.SprocketSpecsOfOrg(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.cache.Apply(ctx, readmodel.Write{Org: 1, Rule: readmodel.Newer,
			Records: readmodel.SprocketListRecords(proj.layouts, 1, all)}); err != nil {
			t.Fatal(err)
		}
	}
	rebuild()
	w.verify(t)
	if marks, _ := w.cache.Dirty(ctx); len(marks) != 0 {
		t.Fatalf("marks left after the round: %v", marks)
	}
	wantWhole(1, "every change is patched in")

	// A create that starts a segment, alone in its round, is listed, and so
	// are the creates after it. (A segment's version was once the sum of
	// its sprockets': the segment before it kept its version, the write
	// was taken for one already made, and the new segment was never
	// listed.)
	for {
		sp, _, err := w.store.CreateSprocket(ctx, sys, spec, domain.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		project()
		rebuild()
		if proj.layouts.Sprockets(1).StartsSegment(sp.ID) {
			break
		}
	}
	for i := 0; i < 3; i++ {
		if _, _, err := w.store.CreateSprocket(ctx, sys, spec, domain.Idempotency{}); err != nil {
			t.Fatal(err)
		}
		project()
		rebuild()
	}
	w.verify(t)

	// Creates, round after round, start new segments at the end of the
	// list: each is written with the manifest that lists it.
	for round := 0; round < 30; round++ {
		for i := 0; i < 50; i++ {
			if _, _, err := w.store.CreateSprocket(ctx, sys, spec, domain.Idempotency{}); err != nil {
				t.Fatal(err)
			}
		}
		project()
		rebuild()
		w.verify(t)
	}
	wantWhole(1, "1,500 creates are patched in")
	man, _, _ := w.cache.Get(ctx, readmodel.SprocketListKey(1), false)
	if m, err := readmodel.DecodeManifest(man.Body); err != nil || len(m) < 3 {
		t.Errorf("1,506 sprockets in %d segments (%v); want several", len(m), err)
	}

	// A manifest that is not one the projector wrote is built whole.
	if err := w.rdb.HSet(ctx, readmodel.SprocketListKey(1), "b", `garbage`).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.store.UpdateSprocket(ctx, sys, ids[4], 0, bump); err != nil {
		t.Fatal(err)
	}
	project()
	rebuild()
	w.verify(t)
	wantWhole(2, "an unreadable manifest is built whole")
}

func encodeAll(t *testing.T, evs []events.Envelope) [][]byte {
	t.Helper()
	out := make([][]byte, len(evs))
	for i, e := range evs {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// Marks of no body this projector knows (another version's, or garbage)
// are dropped, not retried forever, and do not stop the round.
func TestUnknownDirtyMarksAreDropped(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	if err := w.rdb.HSet(ctx, readmodel.Prefix+"dirty", "widgets:1", "1", "sprockets:x", "1", "nocolon", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.proj.RebuildDirty(ctx); err != nil {
		t.Fatal(err)
	}
	if marks, _ := w.cache.Dirty(ctx); len(marks) != 0 {
		t.Errorf("marks left: %v", marks)
	}
}

// failingLog is the read model whose live log cannot be written while
// fail is set.
type failingLog struct {
	*rediscache.Cache
	fail bool
}

func (f *failingLog) LogLive(ctx context.Context, retention time.Duration, most int, changes map[int64][]readmodel.Change) error {
	if f.fail {
		return errors.New("the log is away")
	}
	return f.Cache.LogLive(ctx, retention, most, changes)
}

// Each change is logged once, after its keys are written. When logging
// fails, the event fails (it is delivered again); when a newer change of
// the aggregate is logged before that redelivery, the older one can no
// longer be, and the organization's streams are told to read again.
func TestLiveLogOfChanges(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	cache := &failingLog{Cache: w.cache}
	proj := New(postgres.NewReads(w.db), cache, ids, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	sp, _, err := w.store.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, _, err := w.store.UpdateSprocket(ctx, domain.System(1, "test"), sp.ID, 0, bump); err != nil {
			t.Fatal(err)
		}
	}
	evs := encodeAll(t, w.take(t)) // versions 1..3
	if errs := proj.HandleBatch(ctx, evs[:1]); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if errs := proj.HandleBatch(ctx, evs[:1]); errs[0] != nil { // delivered again: logged once
		t.Fatal(errs[0])
	}
	cache.fail = true
	if errs := proj.HandleBatch(ctx, evs[1:2]); errs[0] == nil {
		t.Fatal("v2 succeeded without its log")
	}
	cache.fail = false
	if errs := proj.HandleBatch(ctx, evs[2:3]); errs[0] != nil { // v3 before v2's redelivery
		t.Fatal(errs[0])
	}
	if errs := proj.HandleBatch(ctx, evs[1:2]); errs[0] != nil {
		t.Fatal(errs[0])
	}
	lg, err := w.cache.ReadLive(ctx, 1, "0-0", 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range lg.Entries {
		got = append(got, fmt.Sprintf("%s@%d", e.Type, e.Version))
	}
	if len(got) != 3 || got[0] != "sprocket.created@1" || !strings.HasPrefix(got[1], "reset@") || got[2] != "sprocket.updated@3" {
		t.Fatalf("logged %v, want the creation, a reset, then v3", got)
	}
}

// appendsAfterRead projects an append to a factory right after each read
// of a factory: the read model moves past what the reader of its history
// saw, as it does when writes go on during a background check.
type appendsAfterRead struct {
	Source
	after func()
}

func (r *appendsAfterRead) Factory(ctx context.Context, id int64) (domain.Factory, error) {
	f, err := r.Source.Factory(ctx, id)
	r.after()
	return f, err
}

// The background check compares the read model with what it read from
// Postgres some time before. A key written since then is ahead of that
// read, not drifted: the check must leave it alone, or it would set the
// read model back and lose the writes in between.
func TestBackgroundCheckLeavesNewerKeysAlone(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	s := sample
	f, _ := w.newFactory(t)
	next := int64(7200)
	src := &appendsAfterRead{Source: w.proj.src}
	src.after = func() {
		next += 60
		if _, _, _, err := w.store.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{s(next, 7)}); err != nil {
			t.Fatal(err)
		}
		for _, e := range w.take(t) {
			w.apply(t, e, Applied)
		}
		if _, err := w.proj.RebuildDirty(ctx); err != nil { // what RunDerived does
			t.Fatal(err)
		}
	}
	src.after()
	w.proj.src = src
	repaired, err := w.proj.healOrg(ctx, f.OrgID, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	w.proj.src = src.Source
	if repaired != 0 {
		t.Errorf("the check rewrote %d keys that were only ahead of its read", repaired)
	}
	w.verify(t)
	// A key ahead of Postgres that nothing writes (a restored database,
	// say) is set back.
	key := readmodel.FactoryKey(f.ID)
	if err := w.rdb.HSet(ctx, key, "v", 999).Err(); err != nil {
		t.Fatal(err)
	}
	if repaired, err := w.proj.healOrg(ctx, f.OrgID, time.Millisecond); err != nil || repaired != 1 {
		t.Fatalf("a key ahead of Postgres: %d repaired, %v", repaired, err)
	}
	w.verify(t)
}

// wholeHistoryWants is what the read model should hold for a factory, made
// from its whole history at once by the functions the event path uses:
// the reference factoryWants must agree with.
func wholeHistoryWants(p *Projector, f domain.Factory, samples []domain.Sample) map[string]want {
	out := map[string]want{}
	add := func(w want) { out[w.Key] = w }
	if !f.Deleted() {
		for b, s := range readmodel.GroupByBucket(samples) {
			add(want{Record: readmodel.BucketRecord(f.ID, f.OrgID, b, f.Version, s), bodyOnly: true, index: readmodel.BucketIndexKey(f.ID)})
		}
		for _, r := range readmodel.AggregateRecords(f, samples) {
			add(want{Record: r, bodyOnly: true, index: readmodel.AggregateIndexKey(f.ID)})
		}
	}
	add(want{Record: readmodel.FactoryRecord(p.ids, f)})
	for _, r := range readmodel.HistoryRecords(p.layouts, f, samples) {
		add(want{Record: r, bodyOnly: r.Key != readmodel.HistoryKey(f.ID), index: readmodel.SegmentIndexKey(f.ID)})
	}
	return out
}

// A history given a page at a time, in pages of any size, makes the
// records its whole makes, each once.
func TestFactoryWantsInPages(t *testing.T) {
	p := New(nil, nil, ids, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 40; round++ {
		var samples []domain.Sample
		tm := rng.Int64N(1 << 20)
		for n := rng.IntN(20_000); len(samples) < n; {
			tm += 1 + rng.Int64N([]int64{5, 600, 86_400}[rng.IntN(3)])
			samples = append(samples, domain.Sample{Time: tm, Actual: rng.Int64N(100), Goal: rng.Int64N(100)})
		}
		f := domain.Factory{ID: 7, OrgID: 3, Version: int64(round + 1)}
		if len(samples) > 0 {
			f.FirstTime, f.LastTime = &samples[0].Time, &samples[len(samples)-1].Time
		}
		if round == 5 {
			now := time.Now()
			f.DeletedAt = &now
		}
		whole := wholeHistoryWants(p, f, samples)
		// Pages of random sizes, the same for every kind of builder.
		var pages [][]domain.Sample
		for rest := samples; len(rest) > 0 && !f.Deleted(); {
			n := min(len(rest), 1+rng.IntN(3000))
			pages, rest = append(pages, rest[:n]), rest[n:]
		}
		for _, parts := range []factoryParts{allParts, historyParts, aggregateParts} {
			b := p.newFactoryWants(f, parts)
			var got []want
			for _, pg := range pages {
				page := slices.Clone(pg) // the builder must not keep a page
				got = append(got, b.add(page)...)
				clear(page)
			}
			got = append(got, b.finish()...)
			checkFactoryWants(t, fmt.Sprintf("round %d, parts %b", round, parts), f, got, whole, parts)
		}
	}
}

// checkFactoryWants checks that got holds exactly the records of whole
// that parts name (and the factory's), each once, in an order a rebuild
// may write: the factory's record after every bucket and aggregate, the
// manifest last.
func checkFactoryWants(t *testing.T, what string, f domain.Factory, got []want, whole map[string]want, parts factoryParts) {
	t.Helper()
	wanted := func(w want) bool {
		switch w.index {
		case readmodel.BucketIndexKey(f.ID):
			return parts&bucketParts != 0
		case readmodel.AggregateIndexKey(f.ID):
			return parts&aggregateParts != 0
		case readmodel.SegmentIndexKey(f.ID):
			return parts&historyParts != 0
		}
		return true // the factory's record
	}
	seen := map[string]bool{}
	factoryAt := -1
	for i, g := range got {
		w, ok := whole[g.Key]
		switch {
		case seen[g.Key]:
			t.Fatalf("%s: %s made twice", what, g.Key)
		case !ok || !wanted(w):
			t.Fatalf("%s: %s made, but not wanted", what, g.Key)
		case !reflect.DeepEqual(g, w):
			t.Fatalf("%s: %s:\n got %+v\nwant %+v", what, g.Key, g, w)
		case g.Key == readmodel.FactoryKey(f.ID):
			factoryAt = i
		case g.Key == readmodel.HistoryKey(f.ID) && i != len(got)-1:
			t.Fatalf("%s: the manifest is not last", what)
		case factoryAt >= 0 && (g.index == readmodel.BucketIndexKey(f.ID) || g.index == readmodel.AggregateIndexKey(f.ID)):
			t.Fatalf("%s: %s comes after the factory's record", what, g.Key)
		}
		seen[g.Key] = true
	}
	for k, w := range whole {
		if wanted(w) && !seen[k] {
			t.Fatalf("%s: %s not made", what, k)
		}
	}
}

// writesBeforeRepair raises the version of each key just before it is
// written (in the check, only by its repair), as a projector writing it
// between the check's comparison and its repair would.
type writesBeforeRepair struct {
	Cache
	rdb *goredis.Client
}

func (c *writesBeforeRepair) Apply(ctx context.Context, writes ...readmodel.Write) ([][]int, error) {
	for _, w := range writes {
		for _, r := range w.Records {
			if err := c.rdb.HIncrBy(ctx, r.Key, "v", 1).Err(); err != nil {
				return nil, err
			}
		}
	}
	return c.Cache.Apply(ctx, writes...)
}

// A key that differed in both comparisons but was written just before its
// repair keeps what was written, and is counted as left alone.
func TestRepairLeavesAKeyWrittenSince(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	f, _ := w.newFactory(t)
	if _, err := w.proj.RebuildDirty(ctx); err != nil {
		t.Fatal(err)
	}
	key := readmodel.FactoryKey(f.ID)
	if err := w.rdb.HSet(ctx, key, "b", `{"drifted":true}`).Err(); err != nil {
		t.Fatal(err)
	}
	w.proj.cache = &writesBeforeRepair{Cache: w.cache, rdb: w.rdb}
	repaired, err := w.proj.healOrg(ctx, f.OrgID, time.Millisecond)
	if err != nil || repaired != 0 {
		t.Fatalf("%d repaired, %v", repaired, err)
	}
	if n := testutil.ToFloat64(w.proj.checks.skipped); n != 1 {
		t.Errorf("%.0f keys counted as left alone, want 1", n)
	}
	if e, _, _ := w.cache.Get(ctx, key, false); string(e.Body) != `{"drifted":true}` {
		t.Errorf("the key written since was rewritten: %s", e.Body)
	}
	w.proj.cache = w.cache
	if repaired, err := w.proj.healOrg(ctx, f.OrgID, time.Millisecond); err != nil || repaired != 1 {
		t.Fatalf("the next check: %d repaired, %v", repaired, err)
	}
	w.verify(t)
}
