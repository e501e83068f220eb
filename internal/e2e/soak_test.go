//go:build soak

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// TestSoak (make soak, not in CI) runs a mixed load of reads and writes
// against a private stack with two readers for SOAK_DURATION (10 minutes by
// default), creates paced and updates and reads as fast as they go, while
// a fault strikes every SOAK_FAULT_EVERY (30 s): each
// program killed and started again, Redis restarted and paused, NATS
// restarted, the leader and the replica restarted. Every create carries an
// Idempotency-Key and is retried with it until acknowledged, as a careful
// client would. Afterwards: no acknowledged create lost or applied twice,
// no answer 5xx but a 503 with Retry-After, `projector verify` clean, and
// the memory and goroutines of every program reported at the start, the
// middle and the end of the load, failing when either grows in the second
// half (the first fills the caches).
func TestSoak(t *testing.T) {
	duration, every := envDuration(t, "SOAK_DURATION", 10*time.Minute), envDuration(t, "SOAK_FAULT_EVERY", 30*time.Second)
	s := newStack(t, stackOptions{readers: 2})
	db := leader(t, s)
	ctx := context.Background()
	var startID int64
	if err := db.Get(&startID, `SELECT coalesce(max(id), 0) FROM sprockets`); err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		answers  = map[string]int{} // "write 201", "read 503"...
		bad      []string
		acked    = map[string]int64{} // idempotency key -> sprocket id
		done     atomic.Bool
		wg       sync.WaitGroup
		keyCount atomic.Int64
	)
	note := func(kind string, r reply, err error) bool {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			answers[kind+" no answer"]++
			return false
		}
		answers[fmt.Sprintf("%s %d", kind, r.Status)]++
		if r.Status >= 500 && (r.Status != 503 || r.Header.Get("Retry-After") == "") && len(bad) < 50 {
			bad = append(bad, kind+": "+r.String())
		}
		return r.Status < 500
	}
	// Creates are paced (20 a second in all), so that the data grows a
	// little and what is measured is the programs, not the organization's
	// size (a collection body grows with it); updates and reads go as fast
	// as they can.
	pace := time.NewTicker(50 * time.Millisecond)
	defer pace.Stop()
	for w := range 4 {
		wg.Add(1)
		go func() { // updates of the three seed sprockets, last writer wins
			defer wg.Done()
			for n := 0; !done.Load(); n++ {
				r, err := call("PUT", fmt.Sprintf("%s/v1/sprockets/%s", s.Writer.URL(), sid(s, int64(1+(w+n)%3))),
					fmt.Sprintf(`{"teeth":%d,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, n%90+1))
				if !note("update", r, err) {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for w := range 2 {
		wg.Add(1)
		go func() { // creates, each retried with its key until acknowledged
			defer wg.Done()
			for !done.Load() {
				<-pace.C
				key := fmt.Sprintf("soak-%d-%d", w, keyCount.Add(1))
				body := fmt.Sprintf(`{"teeth":%d,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, keyCount.Load()%90+1)
				for attempt := 0; ; attempt++ {
					r, err := call("POST", s.Writer.URL()+"/v1/sprockets", body, "Idempotency-Key", key)
					if note("write", r, err) && r.Status/100 == 2 {
						var sp sprocketV1
						if json.Unmarshal(r.Body, &sp) == nil {
							n, _ := s.IDs().Decode(publicid.Sprocket, sp.ID)
							mu.Lock()
							if id, ok := acked[key]; ok && id != n {
								bad = append(bad, fmt.Sprintf("key %s answered sprocket %d, then %d", key, id, n))
							}
							acked[key] = n
							mu.Unlock()
						}
						break
					}
					if done.Load() && attempt > 100 {
						break // the stack is going away: this one stays unacknowledged
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	for i := range 6 {
		wg.Add(1)
		go func() { // reads of every kind, across both readers
			defer wg.Done()
			paths := []string{"/api/sprockets", "/v1/sprockets?limit=20", "/api/factory/1", "/api/factories", "/v1/factories/" + fid(s, 1) + "/chart-data", "/api/sprocket/1"}
			for n := 0; !done.Load(); n++ {
				rd := s.Readers[(i+n)%len(s.Readers)]
				r, err := call("GET", rd.URL()+paths[(i+n)%len(paths)], nil)
				if !note("read", r, err) {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}

	programs := append([]*devstack.Program{s.Writer, s.Projector}, s.Readers...)
	time.Sleep(20 * time.Second) // warm up before the first figures
	before := usage(t, programs)

	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	restart := func(name string, stop func(), start func(context.Context) error) func() error {
		return func() error {
			stop()
			time.Sleep(2 * time.Second)
			if err := start(ctx); err != nil {
				return fmt.Errorf("start %s again: %w", name, err)
			}
			return nil
		}
	}
	faults := []struct {
		name string
		do   func() error
	}{
		{"projector killed", restart("projector", s.Projector.Kill, s.Projector.Start)},
		{"Redis restarted", restart("redis", s.Redis.Stop, s.Redis.Start)},
		{"a reader killed", restart("reader", s.Readers[1].Kill, s.Readers[1].Start)},
		{"NATS restarted", restart("nats", s.NATS.Stop, s.NATS.Start)},
		{"Redis paused 3 s", func() error {
			err := rdb.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err()
			time.Sleep(3 * time.Second)
			return err
		}},
		{"leader restarted", restart("leader", s.Leader.Stop, s.Leader.Start)},
		{"writer killed", restart("writer", s.Writer.Kill, s.Writer.Start)},
		{"replica restarted", restart("replica", s.Replica.Stop, s.Replica.Start)},
	}
	end := time.Now().Add(duration)
	half := time.Now().Add(duration / 2)
	var middle map[string]figures
	struck := map[string]int{}
	for i := 0; time.Now().Add(every).Before(end); i++ {
		time.Sleep(every)
		if middle == nil && time.Now().After(half) {
			middle = usage(t, programs)
		}
		f := faults[i%len(faults)]
		t.Logf("%s: %s", time.Now().Format(time.TimeOnly), f.name)
		if err := f.do(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		struck[f.name]++
	}
	time.Sleep(time.Until(end))
	done.Store(true)
	wg.Wait()
	time.Sleep(10 * time.Second) // the last events settle
	after := usage(t, programs)

	t.Logf("faults: %v", struck)
	t.Logf("answers: %v", answers)
	for _, b := range bad {
		t.Errorf("%s", b)
	}
	verifyConverges(t, s, time.Minute)
	ids := make([]int64, 0, len(acked))
	for _, id := range acked {
		ids = append(ids, id)
	}
	expectInLeader(t, db, ids)
	var written, keys int
	if err := db.Get(&written, `SELECT count(*) FROM sprockets WHERE id > $1`, startID); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&keys, `SELECT count(*) FROM idempotency_keys WHERE key LIKE 'soak-%'`); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d creates acknowledged, %d keys recorded, %d sprockets written", len(acked), keys, written)
	if written != keys {
		t.Errorf("%d sprockets written for %d keys: a create was applied twice, or without its key", written, keys)
	}
	if middle == nil {
		middle = after
	}
	// The first half fills the caches (the near-cache, compressed bodies)
	// up to their budgets; from the middle on, memory and goroutines stay
	// flat, or something leaks. The heap in use includes garbage up to
	// GOGC (400) allows: the bound leaves room for it.
	for _, p := range programs {
		b, m, a := before[p.Name], middle[p.Name], after[p.Name]
		t.Logf("%-10s resident %6.1f -> %6.1f -> %6.1f MB, heap in use %6.1f -> %6.1f -> %6.1f MB (caches %5.1f -> %5.1f -> %5.1f MB), goroutines %4.0f -> %4.0f -> %4.0f",
			p.Name, b.rss/1e6, m.rss/1e6, a.rss/1e6, b.heap/1e6, m.heap/1e6, a.heap/1e6,
			b.caches/1e6, m.caches/1e6, a.caches/1e6, b.goroutines, m.goroutines, a.goroutines)
		if a.rss > 1.5*m.rss+32e6 || a.goroutines > m.goroutines+20 {
			t.Errorf("%s grew in the second half: resident %.1f -> %.1f MB, goroutines %.0f -> %.0f",
				p.Name, m.rss/1e6, a.rss/1e6, m.goroutines, a.goroutines)
		}
	}
}

// figures are what a program uses, from its /metrics. caches is what a
// reader holds by design, bounded by its settings: its near-cache and its
// compressed bodies (0 for the other programs).
type figures struct{ rss, heap, caches, goroutines float64 }

// usage reads each program's figures. A program restarted by a fault is
// measured as it is now: what is compared is where each ends up.
func usage(t *testing.T, programs []*devstack.Program) map[string]figures {
	t.Helper()
	out := map[string]figures{}
	names := []string{}
	for _, p := range programs {
		out[p.Name] = figures{
			rss:        metric(t, p.URL(), "process_resident_memory_bytes"),
			heap:       metric(t, p.URL(), "go_memstats_heap_inuse_bytes"),
			caches:     metric(t, p.URL(), "sprockets_nearcache_bytes") + metric(t, p.URL(), "sprockets_compressed_bytes"),
			goroutines: metric(t, p.URL(), "go_goroutines"),
		}
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return out
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}
