package rediscache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

var server *devstack.Redis

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rediscache-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if server, err = devstack.StartRedis(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "a real Redis is required:", err)
		return 1
	}
	defer server.Stop()
	return m.Run()
}

func newCache(t *testing.T) (*Cache, *redis.Client) {
	t.Helper()
	rdb, err := Connect(server.URL(), 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return New(rdb), rdb
}

func rec(key string, version int64, body string) readmodel.Record {
	return readmodel.Record{Key: key, Entry: readmodel.Entry{Body: []byte(body), ETag: `"e"`, Version: version, Org: 1}}
}

// The guard rules, each against what a key holds.
func TestGuardRules(t *testing.T) {
	tests := []struct {
		name     string
		held     int64 // 0: the key is missing
		rule     readmodel.Rule
		version  int64
		expected int64
		want     int
	}{
		{"next onto a missing key", 0, readmodel.Next, 1, 0, readmodel.Written},
		{"next onto the version before", 4, readmodel.Next, 5, 0, readmodel.Written},
		{"next, a duplicate", 5, readmodel.Next, 5, 0, readmodel.Dropped},
		{"next, an old event", 5, readmodel.Next, 3, 0, readmodel.Dropped},
		{"next, a gap", 2, readmodel.Next, 5, 0, readmodel.Refused},
		{"next, a gap over a missing key", 0, readmodel.Next, 2, 0, readmodel.Refused},
		{"newer onto older", 3, readmodel.Newer, 5, 0, readmodel.Written},
		{"newer onto equal", 5, readmodel.Newer, 5, 0, readmodel.Written},
		{"newer onto newer", 7, readmodel.Newer, 5, 0, readmodel.Dropped},
		{"exact onto what was read", 3, readmodel.Exact, 5, 3, readmodel.Written},
		{"exact after someone else wrote", 4, readmodel.Exact, 5, 3, readmodel.Refused},
		{"exact after a newer write", 6, readmodel.Exact, 5, 3, readmodel.Dropped},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCache(t)
			if tc.held > 0 {
				if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec("k", tc.held, "old")}}); err != nil {
					t.Fatal(err)
				}
			}
			res, err := c.Apply(ctx, readmodel.Write{Rule: tc.rule, Records: []readmodel.Record{rec("k", tc.version, "new")},
				Expected: []int64{tc.expected}})
			if err != nil {
				t.Fatal(err)
			}
			if res[0][0] != tc.want {
				t.Fatalf("result %d, want %d", res[0][0], tc.want)
			}
			e, ok, err := c.Get(ctx, "k", false)
			if err != nil {
				t.Fatal(err)
			}
			wantBody, wantVersion := "old", tc.held
			if tc.want == readmodel.Written {
				wantBody, wantVersion = "new", tc.version
			}
			if tc.want != readmodel.Written && tc.held == 0 {
				if ok {
					t.Fatalf("a refused write created the key: %+v", e)
				}
				return
			}
			if string(e.Body) != wantBody || e.Version != wantVersion {
				t.Fatalf("key holds %q v%d, want %q v%d", e.Body, e.Version, wantBody, wantVersion)
			}
		})
	}
}

// A write replaces the whole entry, tombstones included, in one step with
// its dirty marks.
func TestEntriesAndMarks(t *testing.T) {
	ctx := context.Background()
	c, rdb := newCache(t)
	first, last := int64(10), int64(20)
	full := readmodel.Entry{Body: []byte(`{"a":1}`), ETag: `"1"`, Version: 1, Org: 7, First: &first, Last: &last,
		Members: readmodel.EncodeMembers(map[int64]int64{3: 4})}
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Next, Records: []readmodel.Record{{Key: "k", Entry: full}},
		Dirty: []string{"sprockets:7", "factory:2"}}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, "k", true)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if string(got.Body) != `{"a":1}` || got.ETag != `"1"` || got.Org != 7 || *got.First != 10 || *got.Last != 20 || got.Members.Version(3) != 4 {
		t.Fatalf("entry %+v", got)
	}
	if noMembers, _, _ := c.Get(ctx, "k", false); noMembers.Members != nil {
		t.Errorf("members read when not asked for")
	}
	tomb := readmodel.Entry{Version: 2, Org: 7, Deleted: true}
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Next, Records: []readmodel.Record{{Key: "k", Entry: tomb}}}); err != nil {
		t.Fatal(err)
	}
	got, _, _ = c.Get(ctx, "k", true)
	if !got.Deleted || got.Body != nil || got.First != nil || got.Members != nil {
		t.Errorf("the tombstone kept old fields: %+v", got)
	}
	marks, err := c.Dirty(ctx)
	if err != nil || len(marks) != 2 || marks["sprockets:7"] != "1" {
		t.Fatalf("marks %v %v", marks, err)
	}
	if _, err := c.Apply(ctx, readmodel.Write{Dirty: []string{"sprockets:7"}}); err != nil {
		t.Fatal(err)
	}
	// A mark read before it was marked again is not cleared.
	if err := c.Clear(ctx, map[string]string{"sprockets:7": "1", "factory:2": "1"}); err != nil {
		t.Fatal(err)
	}
	if marks, _ = c.Dirty(ctx); len(marks) != 1 || marks["sprockets:7"] != "2" {
		t.Fatalf("marks after clearing %v", marks)
	}
	// A member mark marks its body too, and each is cleared on its own.
	for _, id := range []int64{3, 4, 3} {
		if _, err := c.Apply(ctx, readmodel.Write{Dirty: []string{readmodel.MemberMark("sprockets:7", id)}}); err != nil {
			t.Fatal(err)
		}
	}
	marks, _ = c.Dirty(ctx)
	if want := map[string]string{"sprockets:7": "5", "sprockets:7|3": "2", "sprockets:7|4": "1"}; fmt.Sprint(marks) != fmt.Sprint(want) {
		t.Fatalf("member marks %v, want %v", marks, want)
	}
	if err := c.Clear(ctx, map[string]string{"sprockets:7": "5", "sprockets:7|3": "1", "sprockets:7|4": "1"}); err != nil {
		t.Fatal(err)
	}
	if marks, _ = c.Dirty(ctx); fmt.Sprint(marks) != fmt.Sprint(map[string]string{"sprockets:7|3": "2"}) {
		t.Fatalf("marks after clearing members %v", marks)
	}
	// The script is reloaded when Redis forgets it.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec("k2", 1, "x")}}); err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
}

func TestGetManyAndKeys(t *testing.T) {
	ctx := context.Background()
	c, _ := newCache(t)
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec("rm:a", 1, "A"), rec("rm:c", 2, "C")}}); err != nil {
		t.Fatal(err)
	}
	entries, oks, err := c.GetMany(ctx, []string{"rm:a", "rm:b", "rm:c"})
	if err != nil {
		t.Fatal(err)
	}
	if !oks[0] || oks[1] || !oks[2] || string(entries[0].Body) != "A" || string(entries[2].Body) != "C" {
		t.Fatalf("GetMany %v %+v", oks, entries)
	}
	if err := c.MarkBuilt(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v %v (bookkeeping keys must not be listed)", keys, err)
	}
	if built, err := c.Built(ctx); !built || err != nil {
		t.Errorf("built %v %v", built, err)
	}
}

// A history's segments are pruned only when its manifest does not list
// them at that moment: a rebuild from an older snapshot, or a late
// cleanup, never takes a segment a newer manifest holds. The old shape's
// keys go before a rebuild.
func TestPruneSegments(t *testing.T) {
	ctx := context.Background()
	c, rdb := newCache(t)
	f := domain.Factory{ID: 9, OrgID: 1, Version: 3}
	seg := func(start int64) readmodel.Record {
		r, _ := readmodel.SegmentRecord(f, readmodel.Segment{Start: start, Samples: []domain.Sample{{Time: max(start, 0), Actual: 1, Goal: 2}}})
		return r
	}
	head, listed, unlisted := seg(readmodel.HeadSegment), seg(500), seg(700)
	_, item := readmodel.SegmentRecord(f, readmodel.Segment{Start: 500, Samples: []domain.Sample{{Time: 500, Actual: 1, Goal: 2}}})
	man := readmodel.ManifestRecord(f, readmodel.Manifest{item})
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{head, listed, unlisted, man},
		Index: readmodel.SegmentIndexKey(f.ID)}); err != nil {
		t.Fatal(err)
	}
	all := []string{head.Key, listed.Key, unlisted.Key, man.Key, "rm:factory:90:seg:h"}
	if err := c.PruneSegments(ctx, readmodel.HistoryKey(f.ID), readmodel.SegmentIndexKey(f.ID), all); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{head.Key: false, listed.Key: true, unlisted.Key: false, man.Key: true} {
		if got := rdb.Exists(ctx, key).Val() == 1; got != want {
			t.Errorf("%s exists %v, want %v", key, got, want)
		}
	}
	if idx := rdb.SMembers(ctx, readmodel.SegmentIndexKey(f.ID)).Val(); len(idx) != 2 {
		t.Errorf("index after the prune: %v", idx)
	}
	// A tombstone lists nothing.
	f.Version, f.DeletedAt = 4, &time.Time{}
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.ManifestRecord(f, nil)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.PruneSegments(ctx, readmodel.HistoryKey(f.ID), readmodel.SegmentIndexKey(f.ID), all); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, listed.Key).Val() != 0 || rdb.Exists(ctx, man.Key).Val() != 1 {
		t.Errorf("after the deletion: segment %d, manifest %d", rdb.Exists(ctx, listed.Key).Val(), rdb.Exists(ctx, man.Key).Val())
	}

	for _, old := range []string{"rm:factory:3:compat", "rm:factory:3:compat-chart", "rm:org:1:compat:factories", "rm:org:1:compat:sprockets"} {
		rdb.HSet(ctx, old, "v", 1)
	}
	if err := c.DropOldShapes(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := c.Keys(ctx)
	if !slices.Equal(keys, []string{man.Key}) {
		t.Errorf("keys after dropping the old shapes: %v", keys)
	}
}

// A large collection's member list is one value, whatever its size.
func TestLargeCollection(t *testing.T) {
	ctx := context.Background()
	c, _ := newCache(t)
	versions := make(map[int64]int64, 50_000)
	for i := int64(1); i <= 50_000; i++ {
		versions[i] = i
	}
	e := readmodel.Entry{Body: []byte("[]"), Version: 1, Org: 1, Members: readmodel.EncodeMembers(versions)}
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{{Key: "big", Entry: e}}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Get(ctx, "big", true)
	if err != nil || got.Members.Version(49_999) != 49_999 {
		t.Fatalf("member lookup %v", err)
	}
}

// A revocation is stored where every instance reads grants, tells the
// feed, and can never be undone by a stale grant.
func TestGrants(t *testing.T) {
	ctx := context.Background()
	c, rdb := newCache(t)
	hash := []byte("0123456789abcdef0123456789abcdef")
	valid := domain.Grant{TokenID: 1, OrgID: 2, Scopes: []string{"read", "write"}, RateLimit: 9}
	if err := c.PutGrant(ctx, hash, valid); err != nil {
		t.Fatal(err)
	}
	g, ok, err := c.Grant(ctx, hash)
	if err != nil || !ok || g.TokenID != 1 || g.OrgID != 2 || g.RateLimit != 9 || len(g.Scopes) != 2 {
		t.Fatalf("grant %+v %v %v", g, ok, err)
	}
	sub := rdb.Subscribe(ctx, AuthChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.ReceiveMessage(ctx); err != nil {
		t.Errorf("the revocation was not published: %v", err)
	}
	if err := c.PutGrant(ctx, hash, valid); err != nil { // a stale read arriving late
		t.Fatal(err)
	}
	if g, _, _ := c.Grant(ctx, hash); !g.Revoked {
		t.Errorf("a revoked grant was replaced by a valid one")
	}
}

// A lease takes at most what the shared budget has left, atomically.
func TestLimiterTakes(t *testing.T) {
	ctx := context.Background()
	c, _ := newCache(t)
	limiter := c.NewLimiter()
	var got []int
	for _, n := range []int{3, 4, 4} {
		taken, err := limiter.Take(ctx, "token:1", 10, n)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, taken.Got)
		if taken.Got == 0 && taken.RetryAfter <= 0 {
			t.Errorf("nothing taken, and no time to retry after: %+v", taken)
		}
	}
	if fmt.Sprint(got) != "[3 4 3]" {
		t.Errorf("leases of 3, 4 and 4 from a budget of 10 got %v", got)
	}
}

// Marks are cleared in steps; every step counts.
func TestClearManyMarks(t *testing.T) {
	ctx := context.Background()
	c, _ := newCache(t)
	var dirty []string
	for id := int64(1); id <= 2500; id++ {
		dirty = append(dirty, readmodel.MemberMark("sprockets:1", id))
	}
	if _, err := c.Apply(ctx, readmodel.Write{Dirty: dirty}); err != nil {
		t.Fatal(err)
	}
	marks, err := c.Dirty(ctx)
	if err != nil || len(marks) != 2501 || marks["sprockets:1"] != "2500" {
		t.Fatalf("%d marks, body mark %q, %v", len(marks), marks["sprockets:1"], err)
	}
	if err := c.Clear(ctx, marks); err != nil {
		t.Fatal(err)
	}
	if marks, _ := c.Dirty(ctx); len(marks) != 0 {
		t.Fatalf("%d marks left", len(marks))
	}
}

// Large entries are staged in a hash of their own and renamed over the key
// by the guard script: the rules, the marks and the fence work as for small
// ones, and nothing staged is left behind, written or not.
func TestStagedWrites(t *testing.T) {
	ctx := context.Background()
	c, rdb := newCache(t)
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", stageOver+1)
	staged := func() []string {
		t.Helper()
		keys, err := rdb.Keys(ctx, readmodel.Prefix+"meta:staging:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	apply := func(w readmodel.Write) []int {
		t.Helper()
		res, err := c.Apply(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		if left := staged(); len(left) > 0 {
			t.Fatalf("staged hashes left behind: %v", left)
		}
		return res[0]
	}
	// A large and a small record in one write, with a mark.
	res := apply(readmodel.Write{Org: 1, Rule: readmodel.Next, Records: []readmodel.Record{rec("big", 1, big), rec("small", 1, "s")},
		Dirty: []string{"sprockets:1"}})
	if res[0] != readmodel.Written || res[1] != readmodel.Written {
		t.Fatalf("results %v", res)
	}
	e, ok, err := c.Get(ctx, "big", false)
	if err != nil || !ok || string(e.Body) != big || e.Version != 1 || e.ETag != `"e"` {
		t.Fatalf("the staged entry reads back as v%d, %d bytes (%v %v)", e.Version, len(e.Body), ok, err)
	}
	if stats := rdb.Info(ctx, "commandstats").Val(); !strings.Contains(stats, "cmdstat_rename:calls=1,") {
		t.Errorf("the large entry was not staged and renamed:\n%s", stats)
	}
	if ttl := rdb.TTL(ctx, "big").Val(); ttl != -1 {
		t.Errorf("the written key expires in %s", ttl)
	}
	if marks, _ := c.Dirty(ctx); marks["sprockets:1"] != "1" {
		t.Errorf("marks %v", marks)
	}
	// Refused, dropped, then written under the exact rule.
	if res := apply(readmodel.Write{Rule: readmodel.Next, Records: []readmodel.Record{rec("big", 3, big+"y")}}); res[0] != readmodel.Refused {
		t.Errorf("a gap: %v", res)
	}
	if res := apply(readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec("big", 0, big+"y")}}); res[0] != readmodel.Dropped {
		t.Errorf("an older version: %v", res)
	}
	if res := apply(readmodel.Write{Rule: readmodel.Exact, Records: []readmodel.Record{rec("big", 2, big+"y")}, Expected: []int64{1}}); res[0] != readmodel.Written {
		t.Errorf("exact: %v", res)
	}
	if e, _, _ := c.Get(ctx, "big", false); string(e.Body) != big+"y" || e.Version != 2 {
		t.Errorf("after the exact write: v%d, %d bytes", e.Version, len(e.Body))
	}
	// All or nothing: one record's expectation fails, so neither is
	// written (the staged one is dropped); both met, both are.
	if res := apply(readmodel.Write{Rule: readmodel.AllExact, Records: []readmodel.Record{rec("big", 3, big+"z"), rec("small", 2, "t")},
		Expected: []int64{2, 7}}); res[0] != readmodel.Refused || res[1] != readmodel.Refused {
		t.Errorf("all or nothing, one refused: %v", res)
	}
	if e, _, _ := c.Get(ctx, "big", false); e.Version != 2 {
		t.Errorf("a record of a refused all-or-nothing write landed: v%d", e.Version)
	}
	if res := apply(readmodel.Write{Rule: readmodel.AllExact, Records: []readmodel.Record{rec("big", 3, big+"z"), rec("small", 2, "t")},
		Expected: []int64{2, 1}}); res[0] != readmodel.Written || res[1] != readmodel.Written {
		t.Errorf("all or nothing, both met: %v", res)
	}
	// Made already (a redelivery raced it): dropped, not refused.
	if res := apply(readmodel.Write{Rule: readmodel.AllExact, Records: []readmodel.Record{rec("big", 3, big+"z"), rec("small", 2, "t")},
		Expected: []int64{2, 1}}); res[0] != readmodel.Dropped || res[1] != readmodel.Dropped {
		t.Errorf("all or nothing, made already: %v", res)
	}
	// A fenced organization's large entry is not written.
	if err := c.Fence(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if res := apply(readmodel.Write{Org: 1, Rule: readmodel.Newer, Records: []readmodel.Record{rec("big", 5, big), rec("small", 5, "s")}}); res[0] != readmodel.Fenced || res[1] != readmodel.Fenced {
		t.Errorf("fenced: %v", res)
	}
	if e, _, _ := c.Get(ctx, "big", false); e.Version != 3 {
		t.Errorf("a fenced write landed: v%d", e.Version)
	}
	// When Redis has forgotten the script, the retry uses what was staged.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res := apply(readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec("big2", 1, big)}}); res[0] != readmodel.Written {
		t.Errorf("after SCRIPT FLUSH: %v", res)
	}
	if e, _, _ := c.Get(ctx, "big2", false); string(e.Body) != big {
		t.Errorf("after SCRIPT FLUSH the entry holds %d bytes", len(e.Body))
	}
}

// recorder keeps what a feed told it.
type recorder struct {
	mu      sync.Mutex
	changes []string
	auth    int
	lost    []string
}

func (r *recorder) Changed(key string, version int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, fmt.Sprintf("%s %d", key, version))
}

func (r *recorder) AuthChanged() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth++
}

func (r *recorder) Lost(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, reason)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("changes %v, auth %d, lost %v", r.changes, r.auth, r.lost)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The feed carries every committed write of the read model with its
// version, deletions, and auth changes; it is fresh while its heartbeats
// come back, and tells its handlers when its subscription is lost.
func TestFeed(t *testing.T) {
	c, rdb := newCache(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	feed := c.NewFeed(200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	feed.OnChange(rec.Changed)
	feed.OnAuthChange(rec.AuthChanged)
	feed.OnLost(rec.Lost)
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()
	waitFor(t, "a fresh feed", feed.Fresh)

	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec1("rm:a", 3), rec1("rm:b", 4)}}); err != nil {
		t.Fatal(err)
	}
	// Refused and dropped writes change nothing, and say nothing.
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Next, Records: []readmodel.Record{rec1("rm:a", 9), rec1("rm:b", 4)}}); err != nil {
		t.Fatal(err)
	}
	big := rec1("rm:big", 2)
	big.Entry.Body = []byte(strings.Repeat("x", stageOver+1)) // staged, renamed in the script
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{big}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "rm:a"); err != nil {
		t.Fatal(err)
	}
	if err := c.AuthChanged(ctx); err != nil {
		t.Fatal(err)
	}
	want := "changes [rm:a 3 rm:b 4 rm:big 2 rm:a -1], auth 1, lost []"
	waitFor(t, want, func() bool { return rec.String() == want })

	// A killed subscription is lost, then followed again.
	if err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loss", func() bool { return strings.Contains(rec.String(), "lost [subscription failed]") })
	waitFor(t, "a fresh feed again", feed.Fresh)
	if _, err := c.Apply(ctx, readmodel.Write{Rule: readmodel.Newer, Records: []readmodel.Record{rec1("rm:c", 1)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change after the loss", func() bool { return strings.Contains(rec.String(), "rm:c 1") })

	// A Redis that stops answering makes the feed stale, then lost.
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a stale feed", func() bool { return !feed.Fresh() })
	waitFor(t, "the staleness told", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.lost) == 2 // "stale", or "subscription silent" when the receiver saw it first
	})
	waitFor(t, "a fresh feed after the pause", feed.Fresh)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
}

func rec1(key string, version int64) readmodel.Record { return rec(key, version, "body") }
