//go:build bench

// Package bench measures the service against baselines in the same run, on
// the same machine and leader, as ratios: `make bench`. Nothing here asserts
// a speed; the figures are reported.
package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

var (
	stack    *devstack.Stack
	baseline *devstack.Program
	rdb      *redis.Client
	duration = 10 * time.Second
	// bearer is the Authorization header every request to the service
	// carries: authentication and the rate limiter are part of what is
	// measured (with a budget too high to refuse anything).
	bearer string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// The service runs as a deployment does, but for the budget: its defaults
// (authentication on, the access log on, at level info), two readers, and
// rate limits (per token, and per address for tokens looked up in
// Postgres) too high to refuse anything, so that the budget is not what
// is measured.
func testMain(m *testing.M) int {
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil {
		duration = d
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return fail(fmt.Errorf("wrk is missing: run make deps"))
	}
	ctx := context.Background()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin, err := os.MkdirTemp("", "sprockets-bench-bin-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(bin)
	if err := devstack.Build(ctx, root, bin, false, "./cmd/writer", "./cmd/projector", "./cmd/reader", "./internal/bench/baseline"); err != nil {
		return fail(err)
	}
	stack, err = devstack.Start(ctx, devstack.Config{
		BinDir: bin, Replica: true, Durable: true, Readers: 2,
		// One token, of one organization, holds every stream of
		// BenchmarkLiveStreams' last phase.
		Env: []string{"RATE_LIMIT=10000000", "RATE_LIMIT_ANONYMOUS=10000000", "LIVE_MAX_STREAMS_PER_CLIENT=100000",
			"LIVE_MAX_STREAMS_PER_ORG=100000"},
	})
	if err != nil {
		return fail(err)
	}
	defer stack.Close()
	if err := stack.Migrate(ctx, filepath.Join(root, "seeds")); err != nil {
		return fail(err)
	}
	if err := stack.StartPrograms(ctx); err != nil {
		return fail(err)
	}
	rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", stack.Redis.Port)})
	defer rdb.Close()
	token, err := stack.CreateToken(ctx, "default", "read,write", "--name", "bench")
	if err != nil {
		return fail(err)
	}
	bearer = "Bearer " + token
	// The baseline serves the very bytes the reader serves.
	bodies := filepath.Join(stack.Dir, "constant")
	if err := os.MkdirAll(bodies, 0o755); err != nil {
		return fail(err)
	}
	for name, path := range map[string]string{"factory": "/api/factory/1", "sprocket": "/v1/sprockets/" + stack.IDs().Encode(publicid.Sprocket, 1)} {
		body, err := cachedBody(stack.Reader.URL() + path)
		if err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(bodies, name), body, 0o644); err != nil {
			return fail(err)
		}
	}
	port, err := devstack.FreePort()
	if err != nil {
		return fail(err)
	}
	baseline = stack.NewProgram("baseline", port, "BODY_DIR="+bodies)
	if err := baseline.Start(ctx); err != nil {
		return fail(err)
	}
	defer baseline.Stop()
	return m.Run()
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "bench:", err)
	return 1
}

// get sends an authenticated GET.
func get(client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", bearer)
	return client.Do(req)
}

// fromReadModel reports whether an answer's X-Read-Source is the read
// model: the reader's memory of it, or Redis.
func fromReadModel(source string) bool { return source == "memory" || source == "cache" }

// cachedBody waits until url is served from the read model and returns it.
func cachedBody(url string) ([]byte, error) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := get(http.DefaultClient, url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && fromReadModel(resp.Header.Get("X-Read-Source")) {
				return b, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s never served from the read model", url)
}

// rounds is how many times a comparison alternates between the service and
// its baseline: the machine's speed drifts over minutes, and alternating
// spreads the drift over both sides.
const rounds = 3

// side accumulates one side of a comparison over its rounds.
type side struct {
	name    string
	target  target
	clients int // concurrent connections, set by load
	rounds  []wrkRound
	cpu     cpuTimes // CPU time used during its loads, by process group
	redis   int64    // Redis commands run during its loads
}

// load runs wrk against the side's target for d with clients connections.
func (s *side) load(b *testing.B, d time.Duration, clients int) {
	s.clients = clients
	before, calls := readProcessTimes(), redisCalls(rdb)
	r, err := runWrk(s.target, d, clients)
	if err != nil {
		b.Fatal(err)
	}
	s.redis += redisCalls(rdb) - calls
	s.rounds = append(s.rounds, r)
	if s.cpu == nil {
		s.cpu = cpuTimes{}
	}
	for group, t := range before.since() {
		s.cpu[group] += t
	}
}

// totals returns the side's requests, failures and load time over its
// rounds.
func (s *side) totals() (requests, failed int64, elapsed time.Duration) {
	for _, r := range s.rounds {
		requests, failed, elapsed = requests+r.requests, failed+r.failed, elapsed+r.elapsed
	}
	return requests, failed, elapsed
}

// rps is the side's successful requests per second of load.
func (s *side) rps() float64 {
	requests, failed, elapsed := s.totals()
	return float64(requests-failed) / elapsed.Seconds()
}

// p99 is the worst of its rounds' p99.
func (s *side) p99() time.Duration {
	var worst time.Duration
	for _, r := range s.rounds {
		worst = max(worst, r.p99)
	}
	return worst
}

func (s *side) String() string {
	requests, failed, elapsed := s.totals()
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %9.0f req/s   p99 %7.2fms   failed %d   Redis commands/request %.4f\n",
		s.name, s.rps(), ms(s.p99()), failed, float64(s.redis)/float64(max(requests, 1)))
	for i, r := range s.rounds {
		fmt.Fprintf(&b, "    round %d: %9.0f req/s   p50 %7.2fms   p99 %7.2fms\n", i+1, r.rps(), ms(r.p50), ms(r.p99))
	}
	b.WriteString(cpuReport(s.cpu, elapsed, float64(requests)))
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// compare loads service and base alternately, each for the bench duration in
// all, with clients concurrent connections, and prints both, their ratio per
// round and in all; goal, when not 0, is the ratio aimed at.
func compare(b *testing.B, goal float64, clients int, service, base *side) {
	for range rounds {
		settle(b)
		service.load(b, duration/rounds, clients)
		settle(b)
		base.load(b, duration/rounds, clients)
	}
	aim := ""
	if goal > 0 {
		aim = fmt.Sprintf("   (aim: at least %.2f)", goal)
	}
	var perRound []string
	for i := range service.rounds {
		perRound = append(perRound, fmt.Sprintf("%.2f", service.rounds[i].rps()/base.rounds[i].rps()))
	}
	fmt.Printf("\n%s\n%s\n%-34s %9.2f   by round %s%s\n", service, base, "ratio to baseline",
		service.rps()/base.rps(), strings.Join(perRound, ", "), aim)
}

// report reports a comparison's figures as the benchmark's metrics.
func report(b *testing.B, service, base *side) {
	requests, _, _ := service.totals()
	b.ReportMetric(service.rps(), "req/s")
	b.ReportMetric(base.rps(), "baseline-req/s")
	b.ReportMetric(service.rps()/base.rps(), "ratio")
	b.ReportMetric(ms(service.p99()), "p99-ms")
	b.ReportMetric(float64(service.redis)/float64(max(requests, 1)), "redis-cmds/req")
}

// settle waits until the pipeline has drained what earlier phases wrote: a
// new sprocket is served from the read model only once the projector has
// applied every event before it.
func settle(b *testing.B) {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	for time.Since(start) < 3*time.Minute {
		if _, err := writeThenSee(client); err == nil {
			fmt.Printf("\n(settled in %s)\n", time.Since(start).Round(time.Millisecond))
			return
		}
	}
	b.Fatalf("the pipeline did not drain in 3 minutes")
}

// readClients is the connections a cached-read comparison uses on each
// side: enough to keep both cores busy.
const readClients = 64

// Cached reads of the original single-factory route against a Fiber handler
// that returns the same bytes from memory.
func BenchmarkCachedFactoryRead(b *testing.B) {
	cachedRead(b, "/api/factory/1", "factory")
}

// Cached reads of one /v1 sprocket against the same bytes from memory.
func BenchmarkCachedSprocketRead(b *testing.B) {
	cachedRead(b, "/v1/sprockets/"+stack.IDs().Encode(publicid.Sprocket, 1), "sprocket")
}

func cachedRead(b *testing.B, path, constant string) {
	for i := 0; i < b.N; i++ {
		service := &side{name: "reader GET " + path,
			target: target{method: "GET", url: stack.Reader.URL() + path, header: []string{"Authorization: " + bearer}}}
		base := &side{name: "baseline GET the same bytes",
			target: target{method: "GET", url: baseline.URL() + "/constant/" + constant}}
		compare(b, 0.85, readClients, service, base)
		report(b, service, base)
	}
}

// The delay from a create's answer to every reader serving the new sprocket
// from its read model, at a steady 200 writes per second: on the seeded
// data, and again once the create phase has grown the organization to tens
// of thousands of sprockets, whose compatibility collection is then rebuilt
// (coalesced) while the writes go on.
func BenchmarkWriteToVisible(b *testing.B) {
	for i := 0; i < b.N; i++ {
		settle(b)
		visibility(b, "write-to-visible, seeded data")
	}
}

// Sprocket creates through the writer (validation, transaction with the
// outbox row, consistency token) against a handler doing one plain INSERT on
// the same leader, each at 16, 32 and 64 concurrent clients. Throughput is
// what a side does at its best, so the aim compares the two peaks. The bare
// INSERT peaks early: each request is a commit of its own, and 16 clients
// already keep the two cores busy. The writer commits the creates that wait
// together (group commit), so it needs clients enough to fill its groups:
// at 16 it leaves a core partly idle.
func BenchmarkSprocketCreate(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var peak, basePeak *side
		for _, clients := range []int{16, 32, 64} {
			fmt.Printf("\n--- %d clients", clients)
			service := &side{name: "writer POST /api/sprocket/create",
				target: target{method: "POST", url: stack.Writer.URL() + "/api/sprocket/create/5/6/4/7", header: []string{"Authorization: " + bearer}}}
			base := &side{name: "baseline POST one INSERT",
				target: target{method: "POST", url: baseline.URL() + "/insert"}}
			compare(b, 0, clients, service, base)
			if peak == nil || service.rps() > peak.rps() {
				peak = service
			}
			if basePeak == nil || base.rps() > basePeak.rps() {
				basePeak = base
			}
		}
		report(b, peak, basePeak)
		fmt.Printf("\n%-34s %9.0f req/s at %d clients, baseline %.0f req/s at %d clients: %.2f   (aim: at least 0.70)\n",
			"peak to peak", peak.rps(), peak.clients, basePeak.rps(), basePeak.clients, peak.rps()/basePeak.rps())
	}
}

// Runs after BenchmarkSprocketCreate (benchmarks run in file order).
func BenchmarkWriteToVisibleLargeOrg(b *testing.B) {
	for i := 0; i < b.N; i++ {
		settle(b)
		visibility(b, "write-to-visible, large org")
	}
}

func visibility(b *testing.B, name string) {
	const rate = 200
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	var (
		mu     sync.Mutex
		delays []time.Duration
		failed int
		wg     sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / rate)
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := writeThenSee(client)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			delays = append(delays, d)
		}()
	}
	tick.Stop()
	wg.Wait()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	if len(delays) == 0 {
		b.Fatalf("no write became visible (%d failed)", failed)
	}
	p50, p99 := delays[len(delays)/2], delays[len(delays)*99/100]
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(float64(failed), "failed")
	fmt.Printf("\n%-34s %9d writes at %d/s   p50 %7.2fms   p99 %7.2fms (visible at every reader)   failed %d   org of %d sprockets   (aim: p99 at most 10ms)\n",
		name, len(delays), rate, ms(p50), ms(p99), failed, sprockets(b))
}

// sprockets counts the sprockets of the seeded organization.
func sprockets(b *testing.B) int {
	db, err := sql.Open("postgres", stack.DatabaseURL())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sprockets WHERE org_id = 1`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// writeThenSee creates a sprocket and returns how long after its answer
// every reader served it from the read model.
func writeThenSee(client *http.Client) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, stack.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", bearer)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	var created struct{ ID int64 }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 201 {
		return 0, fmt.Errorf("create: %d %v", resp.StatusCode, err)
	}
	written := time.Now()
	for _, rd := range stack.Readers {
		url := fmt.Sprintf("%s/api/sprocket/%d", rd.URL(), created.ID)
		for {
			if time.Since(written) > 30*time.Second {
				return 0, fmt.Errorf("sprocket %d not visible after 30s", created.ID)
			}
			r, err := get(client, url)
			if err == nil {
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
				if r.StatusCode == 200 && fromReadModel(r.Header.Get("X-Read-Source")) {
					break
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	return time.Since(written), nil
}
