//go:build bench

package bench

import (
	"bufio"
	"database/sql"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Requests at twice a program's capacity, offered at a steady rate whatever
// the answers take (an open loop: a closed-loop generator such as wrk
// slows down with the service and never overloads it). The programs run
// with their defaults: past MAX_IN_FLIGHT writes in the writer, or
// MAX_DB_READS database reads in a reader, a request waits ADMISSION_WAIT
// for room, then is refused with 503. Reported: how the offered requests
// were answered, and the latency of the accepted and of the refused ones,
// from when each was due (waiting for one of the generator's 4096
// connections counts). The generator runs in this process, outside the
// measured ones, but on the same two cores: it is heavier per request than
// wrk, so that twice the capacity wrk measured is more than twice what the
// machine has left for the program. So the program's own time for each
// answer is reported too, from its request histogram: from its first
// middleware to its answer, without the time a request waited to be
// accepted and read.

// Creates, which the writer commits to the leader.
func BenchmarkOverloadedCreates(b *testing.B) {
	overloaded(b, overload{program: "writer", base: stack.Writer.URL(), what: "creates",
		target: target{method: "POST", url: stack.Writer.URL() + "/api/sprocket/create/5/6/4/7", header: []string{"Authorization: " + bearer}},
		route:  "/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", ok: 201})
}

// Reads of a page of sprockets, which a reader always makes on its
// database (a replica within the lag bound): the fallback database slower
// than the load. The table is analyzed first, as autovacuum would have
// done in a deployment up for more than a minute: this stack's tables are
// filled within seconds, and without statistics Postgres sorts the whole
// organization for each page (4 ms a page at 20,000 sprockets instead of
// 0.05 ms).
func BenchmarkOverloadedDatabaseReads(b *testing.B) {
	db, err := sql.Open("postgres", stack.DatabaseURL())
	if err != nil {
		b.Fatal(err)
	}
	_, err = db.Exec(`ANALYZE sprockets`)
	db.Close()
	if err != nil {
		b.Fatal(err)
	}
	overloaded(b, overload{program: "reader", base: stack.Reader.URL(), what: "database reads",
		target: target{method: "GET", url: stack.Reader.URL() + "/v1/sprockets?limit=100", header: []string{"Authorization: " + bearer}},
		route:  "/v1/sprockets", ok: 200})
}

// overload is a request to offer a program twice as often as it can answer.
type overload struct {
	program, base string // its name, and where it listens
	what          string // what it does with the request, for the report
	target        target
	route         string // the request's route in the program's metrics
	ok            int    // the status of an accepted request
}

// overloaded measures what o's program can do of o's request, then offers
// twice that and reports how the requests were answered: accepted, or
// refused.
func overloaded(b *testing.B, o overload) {
	t, ok := o.target, o.ok
	for i := 0; i < b.N; i++ {
		settle(b)
		capacity, err := runWrk(t, 3*time.Second, 64)
		if err != nil {
			b.Fatal(err)
		}
		settle(b)
		rate := 2 * capacity.rps()
		fmt.Printf("\n%s capacity %.0f %s/s (wrk, 64 clients); offering %.0f/s for %s\n", o.program, capacity.rps(), o.what, rate, duration)
		before := durationBuckets(o.base, t.method, o.route)
		r := openLoop(t, rate, duration)
		fmt.Print(r)
		after := durationBuckets(o.base, t.method, o.route)
		for _, status := range []string{strconv.Itoa(ok), "503"} {
			fmt.Printf("    %s in the %s (its histogram): p50 at most %s, p99 at most %s\n", status, o.program,
				after.quantile(before, status, 0.5), after.quantile(before, status, 0.99))
		}
		b.ReportMetric(r.share(503), "refused-share")
		b.ReportMetric(ms(r.p99(ok)), "accepted-p99-ms")
		b.ReportMetric(ms(r.p99(503)), "refused-p99-ms")
		b.ReportMetric(float64(r.failed), "transport-errors")
	}
}

// openLoopResult is how the offered requests were answered.
type openLoopResult struct {
	offered   int
	latencies map[int][]time.Duration // by status
	failed    int                     // transport errors and timeouts
}

func (r openLoopResult) share(status int) float64 {
	return float64(len(r.latencies[status])) / float64(max(r.offered, 1))
}

func (r openLoopResult) p99(status int) time.Duration {
	l := r.latencies[status]
	if len(l) == 0 {
		return 0
	}
	return l[len(l)*99/100]
}

func (r openLoopResult) String() string {
	s := fmt.Sprintf("offered %d requests; transport errors or timeouts (10s) %d\n", r.offered, r.failed)
	var statuses []int
	for st := range r.latencies {
		statuses = append(statuses, st)
	}
	sort.Ints(statuses)
	for _, st := range statuses {
		l := r.latencies[st]
		s += fmt.Sprintf("    %d: %6d (%5.1f%%)   p50 %7.2fms   p99 %7.2fms   max %7.2fms\n",
			st, len(l), 100*r.share(st), ms(l[len(l)/2]), ms(r.p99(st)), ms(l[len(l)-1]))
	}
	return s
}

// openLoop sends t's request at rate per second for d, each on its own
// goroutine, and waits for every answer.
func openLoop(t target, rate float64, d time.Duration) openLoopResult {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 4096}}
	res := openLoopResult{latencies: map[int][]time.Duration{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for next := start; time.Since(start) < d; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		res.offered++
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(t.method, t.url, nil)
			for _, h := range t.header {
				name, value, _ := cutHeader(h)
				req.Header.Set(name, value)
			}
			sent := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			took := time.Since(sent)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.failed++
				return
			}
			res.latencies[resp.StatusCode] = append(res.latencies[resp.StatusCode], took)
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()
	for _, l := range res.latencies {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	return res
}

// cutHeader splits "Name: value".
func cutHeader(h string) (name, value string, ok bool) {
	for i := 0; i+1 < len(h); i++ {
		if h[i] == ':' {
			return h[:i], h[i+2:], true
		}
	}
	return h, "", false
}

// buckets is a request-duration histogram read from /metrics: the count
// of requests at or under each bound, by status, summed over routes.
type buckets map[string]map[float64]float64

// durationBuckets reads the requests of method on route from the program
// at base, with those refused before routing (the route "unmatched"; the
// writer refuses a write it has no room for there) but not the others
// (probes, scrapes).
func durationBuckets(base, method, route string) buckets {
	out := buckets{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "sprockets_http_request_duration_seconds_bucket{") || !strings.Contains(line, `method="`+method+`"`) ||
			(label(line, "route") != route && label(line, "route") != "unmatched") {
			continue
		}
		status, le := label(line, "status"), label(line, "le")
		bound, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			bound, err = math.Inf(1), nil
		}
		n, nerr := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil || nerr != nil {
			continue
		}
		if out[status] == nil {
			out[status] = map[float64]float64{}
		}
		out[status][bound] += n
	}
	return out
}

func label(line, name string) string {
	_, v, _ := strings.Cut(line, name+`="`)
	v, _, _ = strings.Cut(v, `"`)
	return v
}

// quantile returns the bound of the first bucket that holds the q
// quantile of the requests of status counted since before.
func (b buckets) quantile(before buckets, status string, q float64) string {
	bounds := make([]float64, 0, len(b[status]))
	for bound := range b[status] {
		bounds = append(bounds, bound)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return "-"
	}
	total := b[status][math.Inf(1)] - before[status][math.Inf(1)]
	if total <= 0 {
		return "-"
	}
	for _, bound := range bounds {
		if b[status][bound]-before[status][bound] >= q*total {
			if math.IsInf(bound, 1) {
				return "+Inf"
			}
			return (time.Duration(bound * float64(time.Second))).String()
		}
	}
	return "-"
}
