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
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

var (
	stack    *devstack.Stack
	baseline *devstack.Program
	duration = 10 * time.Second
	// bearer is the Authorization header every request to the service
	// carries: authentication and the rate limiter are part of what is
	// measured (with a budget too high to refuse anything).
	bearer http.Header
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil {
		duration = d
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
		BinDir: bin, Replica: true, Durable: true,
		Env: []string{"LOG_LEVEL=warn", "ACCESS_LOG=false", "RATE_LIMIT=10000000"},
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
	token, err := stack.CreateToken(ctx, "default", "read,write", "--name", "bench")
	if err != nil {
		return fail(err)
	}
	bearer = http.Header{"Authorization": {"Bearer " + token}}
	// The baseline serves the very bytes the reader serves for factory 1.
	body, err := cachedBody(stack.Reader.URL() + "/api/factory/1")
	if err != nil {
		return fail(err)
	}
	bodyFile := filepath.Join(stack.Dir, "constant.json")
	if err := os.WriteFile(bodyFile, body, 0o644); err != nil {
		return fail(err)
	}
	port, err := devstack.FreePort()
	if err != nil {
		return fail(err)
	}
	baseline = stack.NewProgram("baseline", port, "BODY_FILE="+bodyFile)
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
	req.Header = bearer.Clone()
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
	target  vegeta.Target
	workers uint64 // concurrent clients, set by load
	metrics vegeta.Metrics
	elapsed time.Duration
	cpu     cpuTimes // CPU time used during its loads, by process group
}

// load runs the side's target as fast as workers allow for d.
func (s *side) load(d time.Duration, workers uint64) {
	s.workers = workers
	atk := vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(workers),
		vegeta.Connections(int(workers)), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
	before, start := readProcessTimes(), time.Now()
	for res := range atk.Attack(vegeta.NewStaticTargeter(s.target), vegeta.Rate{Freq: 0}, d, s.name) {
		s.metrics.Add(res)
	}
	s.elapsed += time.Since(start)
	if s.cpu == nil {
		s.cpu = cpuTimes{}
	}
	for group, t := range before.since() {
		s.cpu[group] += t
	}
}

// rps is the side's successful requests per second of load, once its
// metrics are closed.
func (s *side) rps() float64 {
	return s.metrics.Success * float64(s.metrics.Requests) / s.elapsed.Seconds()
}

func (s *side) String() string {
	return fmt.Sprintf("%-34s %9.0f req/s   p50 %7.2fms   p99 %7.2fms   ok %5.1f%%\n%s",
		s.name, s.rps(), ms(s.metrics.Latencies.P50), ms(s.metrics.Latencies.P99), 100*s.metrics.Success,
		cpuReport(s.cpu, s.elapsed, float64(s.metrics.Requests)))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// compare loads service and base alternately, each for the bench duration in
// all, with as many concurrent clients as workers, and prints both and their
// ratio; goal, when not 0, is the ratio aimed at.
func compare(b *testing.B, goal float64, workers uint64, service, base *side) {
	for range rounds {
		settle(b)
		service.load(duration/rounds, workers)
		settle(b)
		base.load(duration/rounds, workers)
	}
	service.metrics.Close()
	base.metrics.Close()
	ratio := service.rps() / base.rps()
	aim := ""
	if goal > 0 {
		aim = fmt.Sprintf("   (aim: at least %.2f)", goal)
	}
	fmt.Printf("\n%s\n%s\n%-34s %9.2f%s\n", service, base, "ratio to baseline", ratio, aim)
}

// report reports a comparison's figures as the benchmark's metrics.
func report(b *testing.B, service, base *side) {
	b.ReportMetric(service.rps(), "req/s")
	b.ReportMetric(base.rps(), "baseline-req/s")
	b.ReportMetric(service.rps()/base.rps(), "ratio")
	b.ReportMetric(ms(service.metrics.Latencies.P99), "p99-ms")
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

// Cached reads of the original single-factory route against a Fiber handler
// that returns the same bytes from memory.
func BenchmarkCachedFactoryRead(b *testing.B) {
	for i := 0; i < b.N; i++ {
		service := &side{name: "reader GET /api/factory/1 (cache)",
			target: vegeta.Target{Method: "GET", URL: stack.Reader.URL() + "/api/factory/1", Header: bearer}}
		base := &side{name: "baseline GET constant bytes",
			target: vegeta.Target{Method: "GET", URL: baseline.URL() + "/constant"}}
		compare(b, 0.30, 32, service, base)
		report(b, service, base)
	}
}

// The delay from a create's answer to the reader serving the new sprocket
// from its read model, at a steady 200 writes per second: on the seeded data,
// and again once the create phase has grown the organization to tens of
// thousands of sprockets, whose compatibility collection is then rebuilt
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
		for _, clients := range []uint64{16, 32, 64} {
			fmt.Printf("\n--- %d clients", clients)
			service := &side{name: "writer POST /api/sprocket/create",
				target: vegeta.Target{Method: "POST", URL: stack.Writer.URL() + "/api/sprocket/create/5/6/4/7", Header: bearer}}
			base := &side{name: "baseline POST one INSERT",
				target: vegeta.Target{Method: "POST", URL: baseline.URL() + "/insert"}}
			compare(b, 0, clients, service, base)
			if peak == nil || service.rps() > peak.rps() {
				peak = service
			}
			if basePeak == nil || base.rps() > basePeak.rps() {
				basePeak = base
			}
		}
		report(b, peak, basePeak)
		fmt.Printf("\n%-34s %9.0f req/s at %d clients, baseline %.0f req/s at %d clients: %.2f   (aim: at least 0.50)\n",
			"peak to peak", peak.rps(), peak.workers, basePeak.rps(), basePeak.workers, peak.rps()/basePeak.rps())
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
	fmt.Printf("\n%-34s %9d writes at %d/s   p50 %7.2fms   p99 %7.2fms   failed %d   org of %d sprockets   (aim: p99 at most 50ms)\n",
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

// writeThenSee creates a sprocket and returns how long after its answer the
// reader served it from the read model.
func writeThenSee(client *http.Client) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, stack.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil)
	if err != nil {
		return 0, err
	}
	req.Header = bearer.Clone()
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
	url := fmt.Sprintf("%s/api/sprocket/%d", stack.Reader.URL(), created.ID)
	for time.Since(written) < 30*time.Second {
		r, err := get(client, url)
		if err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if r.StatusCode == 200 && fromReadModel(r.Header.Get("X-Read-Source")) {
				return time.Since(written), nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("sprocket %d not visible after 30s", created.ID)
}
