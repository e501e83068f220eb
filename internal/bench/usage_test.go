//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// A factory of 10^6 samples, in an organization of its own, appended
// through /v1 in batches of 10,000 (the most one request takes). Reported:
// how long until the last sample shows on /v1 and on the original chart
// route, and the peak resident memory of each program meanwhile (sampled
// from /metrics every 100 ms), beside what it used before. The programs
// run without a memory limit here (GOGC 400, no container): the peaks are
// what they take when nothing makes the collector work harder.
// It and BenchmarkThousandOrganizations run last (benchmarks run in the
// order of their files' names): the background check reads their data
// from then on, which would slow the benchmarks after them.
func BenchmarkMillionSamples(b *testing.B) {
	const total, batch = 1_000_000, 10_000
	ctx := context.Background()
	if _, err := stack.Writer.Exec(ctx, "org", "create", "history"); err != nil {
		b.Fatal(err)
	}
	tok, err := stack.CreateToken(ctx, "history", "read,write", "--name", "history")
	if err != nil {
		b.Fatal(err)
	}
	programs := append([]*devstack.Program{stack.Writer, stack.Projector}, stack.Readers...)
	before := residentMemory(programs)
	peaks, stop := watchPeaks(programs)
	client := &http.Client{Timeout: 60 * time.Second}
	send := func(method, url, body string) (*http.Response, []byte, error) {
		return sendAs(client, tok, method, url, body)
	}
	resp, body, err := send("POST", stack.Writer.URL()+"/v1/factories", `{"name":"a million samples"}`)
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("create the factory: %v %s", err, body)
	}
	loc := resp.Header.Get("Location")
	fid, ok := stack.IDs().Decode(publicid.Factory, strings.TrimPrefix(loc, "/v1/factories/"))
	if !ok {
		b.Fatalf("Location %q", loc)
	}
	const t0 = 1_000_000_000 // unix seconds, a sample a minute
	start := time.Now()
	var sb strings.Builder
	for n := 0; n < total; n += batch {
		sb.Reset()
		sb.WriteString(`{"samples":[`)
		for i := n; i < n+batch; i++ {
			if i > n {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"time":%d,"actual":%d,"goal":%d}`, t0+60*i, 40+i%23, 60)
		}
		sb.WriteString(`]}`)
		if resp, body, err := send("POST", stack.Writer.URL()+loc+"/samples", sb.String()); err != nil || resp.StatusCode != 200 {
			b.Fatalf("append at %d: %v %s", n, err, body)
		}
	}
	appended := time.Since(start)
	last := strconv.Itoa(t0 + 60*(total-1))
	// Each poll of the original route reads its whole body (17 MB), so it
	// polls less often.
	visible := func(url, want string, every time.Duration) time.Duration {
		for time.Since(start) < 5*time.Minute {
			if resp, body, err := send("GET", url, ""); err == nil && resp.StatusCode == 200 && strings.Contains(string(body), want) {
				return time.Since(start)
			}
			time.Sleep(every)
		}
		return -1
	}
	v1 := visible(stack.Reader.URL()+loc+"/chart-data?from="+last, `"time":[`+last+`]`, 20*time.Millisecond)
	compat := visible(fmt.Sprintf("%s/api/factory/%d/chart-data", stack.Reader.URL(), fid), last+"]}", 500*time.Millisecond)
	stop()
	fmt.Printf("\n%d samples appended in %d requests in %s; the last one visible on /v1 after %s, on /api/factory/{id}/chart-data after %s (from the first append; -1: not within 5 minutes)\n",
		total, total/batch, appended.Round(time.Millisecond), v1.Round(time.Millisecond), compat.Round(time.Millisecond))
	for _, p := range programs {
		fmt.Printf("    %-22s resident memory before %6.0f MB, peak %6.0f MB\n", p.Name, before[p.Name]/1e6, peaks()[p.Name]/1e6)
		b.ReportMetric(peaks()[p.Name]/1e6, "peak-MB-"+p.Name)
	}
	b.ReportMetric(compat.Seconds(), "compat-visible-s")

	// Appending one sample to the end of the million-sample history,
	// against appending it to a factory of 100 samples, in alternating
	// rounds.
	small := appendTarget{name: "10^2 samples", next: t0 + 60*100}
	small.loc, small.fid = newFactory(b, send, 100, t0)
	big := appendTarget{name: "10^6 samples", loc: loc, fid: fid, next: t0 + 60*total}
	for round := 1; round <= 3; round++ {
		for _, target := range []*appendTarget{&small, &big} {
			fmt.Printf("round %d, appends to a factory of %s:\n%s", round, target.name, target.measure(b, tok, 40))
		}
	}

	// The history's last year in 1,000 points, from the cache (wrk, 32
	// connections, three rounds).
	from := strconv.Itoa(t0 + 60*(total-1) - 365*86400)
	year := target{method: "GET", url: stack.Readers[0].URL() + loc + "/chart-data?from=" + from + "&points=1000",
		header: []string{"Authorization: Bearer " + tok}}
	resp, body, err = send("GET", year.url, "")
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("a year in 1,000 points: %v %s", err, body)
	}
	for round := 1; round <= 3; round++ {
		r, err := runWrk(year, 5*time.Second, 32)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("round %d, a year of the 10^6 samples in 1,000 points (%d bytes, from %s): %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d failed\n",
			round, len(body), resp.Header.Get("X-Read-Source"), r.rps(), ms(r.p50), ms(r.p99), r.failed)
		if round == 3 {
			b.ReportMetric(r.rps(), "year-points-req/s")
			b.ReportMetric(ms(r.p99), "year-points-p99-ms")
		}
	}
}

// appendTarget is a factory appended to one sample at a time, at its end.
type appendTarget struct {
	name string
	loc  string // its /v1 path
	fid  int64
	next int64 // the time of the next sample
}

// newFactory creates a factory of n samples a minute apart from t0, and
// returns its /v1 path and its number.
func newFactory(b *testing.B, send func(method, url, body string) (*http.Response, []byte, error), n int, t0 int64) (string, int64) {
	var sb strings.Builder
	sb.WriteString(`{"name":"appended to","samples":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"time":%d,"actual":%d,"goal":60}`, t0+60*int64(i), i%50)
	}
	sb.WriteString(`]}`)
	resp, body, err := send("POST", stack.Writer.URL()+"/v1/factories", sb.String())
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("create a factory: %v %s", err, body)
	}
	loc := resp.Header.Get("Location")
	fid, ok := stack.IDs().Decode(publicid.Factory, strings.TrimPrefix(loc, "/v1/factories/"))
	if !ok {
		b.Fatalf("Location %q", loc)
	}
	return loc, fid
}

// measure appends n samples one at a time three times: first without
// reading (CPU of the service's processes per append, the readers idle),
// then watching each become visible on /v1 (its chart data from the new
// sample on), then on the original chart route. That route is polled with
// If-None-Match (from the ETag of the body before the first append), so a
// poll costs a 304 until the body changes; it counts
// as visible when the answer's headers come (the reader serves the new
// body from then on), and the body, read whole, must end with the sample.
// It returns the report's lines.
func (a *appendTarget) measure(b *testing.B, tok string, n int) string {
	client := &http.Client{Timeout: 30 * time.Second}
	send := func(method, url, body string) (*http.Response, []byte, error) {
		return sendAs(client, tok, method, url, body)
	}
	appendOne := func() string {
		t := strconv.FormatInt(a.next, 10)
		a.next += 60
		if resp, body, err := send("POST", stack.Writer.URL()+a.loc+"/samples", `{"samples":[{"time":`+t+`,"actual":9,"goal":9}]}`); err != nil || resp.StatusCode != 200 {
			b.Fatalf("append: %v %s", err, body)
		}
		return t
	}
	seenBefore := rebuildSigns()
	before := readProcessTimes()
	for i := 0; i < n; i++ {
		appendOne()
		time.Sleep(20 * time.Millisecond) // projected before the next
	}
	cpu := serviceCPU(before.since())

	// seen reports whether t shows, and when its answer's headers came.
	watch := func(seen func(t string) (bool, time.Time)) []time.Duration {
		var out []time.Duration
		for i := 0; i < n; i++ {
			sent := time.Now()
			t := appendOne()
			took := time.Duration(0) // not within 10 s
			for time.Since(sent) < 10*time.Second {
				if ok, at := seen(t); ok {
					took = at.Sub(sent)
					break
				}
				time.Sleep(time.Millisecond)
			}
			out = append(out, took)
		}
		return out
	}
	v1 := watch(func(t string) (bool, time.Time) {
		resp, body, err := send("GET", stack.Reader.URL()+a.loc+"/chart-data?from="+t, "")
		return err == nil && resp.StatusCode == 200 && strings.Contains(string(body), `"time":[`+t+`]`), time.Now()
	})
	compatURL := fmt.Sprintf("%s/api/factory/%d/chart-data", stack.Reader.URL(), a.fid)
	etag := ""
	var late int
	poll := func(t string) (bool, time.Time) {
		req, _ := http.NewRequest("GET", compatURL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("If-None-Match", etag)
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := client.Do(req)
		at := time.Now()
		if err != nil {
			return false, at
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return false, at
		}
		etag = resp.Header.Get("ETag")
		body, _ := io.ReadAll(resp.Body)
		if !bytes.HasSuffix(body, []byte(t+"]}")) {
			late++
			return false, at
		}
		return true, at
	}
	// The poller starts with the ETag of the body before the first append,
	// the one with the last sample appended so far, as a client that shows
	// the chart holds it: without it, the first append's delay counted the
	// download of a whole older body (17 MB at 10⁶ samples), and was the
	// slowest of every round.
	last := strconv.FormatInt(a.next-60, 10)
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		if ok, _ := poll(last); ok {
			break
		}
		if time.Since(start) > 10*time.Second {
			b.Fatalf("the original route did not show the sample at %s within 10 s", last)
		}
	}
	late = 0
	compat := watch(poll)
	var out strings.Builder
	fmt.Fprintf(&out, "    slowest on the original route: %s; during the round: %s\n", slowest(compat), rebuildSigns().since(seenBefore))
	fmt.Fprintf(&out, "    write-to-visible: /v1 p50 %.1f ms p99 %.1f ms; /api/factory/{id}/chart-data p50 %.1f ms p99 %.1f ms (0: not within 10 s; %d new bodies without the sample)\n",
		ms(quantile(v1, 0.5)), ms(quantile(v1, 0.99)), ms(quantile(compat, 0.5)), ms(quantile(compat, 0.99)), late)
	fmt.Fprintf(&out, "    CPU per append, the service's processes: %.0f µs\n", float64(cpu.Microseconds())/float64(n))
	return out.String()
}

// slowest lists the three longest delays, in the order they came; 0 is
// an append not seen within 10 s, the longest of all.
func slowest(l []time.Duration) string {
	long := func(d time.Duration) time.Duration {
		if d == 0 {
			return time.Duration(math.MaxInt64)
		}
		return d
	}
	var sorted []time.Duration
	for _, d := range l {
		sorted = append(sorted, long(d))
	}
	slices.Sort(sorted)
	if len(sorted) == 0 {
		return "none"
	}
	cut := sorted[max(len(sorted)-3, 0)]
	var out []string
	for i, d := range l {
		switch {
		case long(d) < cut:
		case d == 0:
			out = append(out, fmt.Sprintf("#%d not within 10 s", i+1))
		default:
			out = append(out, fmt.Sprintf("#%d %.1f ms", i+1, ms(d)))
		}
	}
	return strings.Join(out, ", ")
}

// signs are counters that would explain a slow append: the readers
// dropping what they hold, and the projector rebuilding a history whole.
type signs map[string]float64

func rebuildSigns() signs {
	s := signs{"projector history rebuilds": metricOf(stack.Projector.URL(), "sprockets_projector_history_rebuilds_total")}
	for _, r := range stack.Readers {
		s[r.Name+" near-cache flushes"] = metricOf(r.URL(), "sprockets_nearcache_flushes_total")
		s[r.Name+" feed lost"] = metricOf(r.URL(), "sprockets_feed_lost_total")
	}
	return s
}

func (s signs) since(before signs) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		out = append(out, fmt.Sprintf("%s %.0f", k, s[k]-before[k]))
	}
	return strings.Join(out, ", ")
}

// serviceCPU sums what the service's processes used: the programs,
// Postgres, Redis and NATS (not the benchmark, nor the machine's others).
func serviceCPU(used cpuTimes) time.Duration {
	var total time.Duration
	for name, t := range used {
		switch {
		case name == "writer", name == "projector", strings.HasPrefix(name, "reader"),
			strings.HasPrefix(name, "pg "), name == "redis-server", name == "nats-server":
			total += t
		}
	}
	return total
}

// quantile returns the q quantile of l (sorted in place).
func quantile(l []time.Duration, q float64) time.Duration {
	slices.Sort(l)
	return l[min(len(l)-1, int(q*float64(len(l))))]
}

// metricOf reads a metric from a program's /metrics, the sum of its
// series whatever their labels; 0 when it cannot.
func metricOf(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += f
		}
	}
	return sum
}

// A thousand organizations, each with a token, a factory of 24 hourly
// samples and five sprockets, every one of their original and /v1 routes
// read once through each reader. Reported: each program's resident
// memory before and after (and the peak, sampled every 100 ms), so that
// the README can say what a thousand organizations cost. Runs after
// BenchmarkMillionSamples, whose history stays in the read model.
func BenchmarkThousandOrganizations(b *testing.B) {
	const orgs = 1000
	ctx := context.Background()
	programs := append([]*devstack.Program{stack.Writer, stack.Projector}, stack.Readers...)
	before := residentMemory(programs)
	peaks, stop := watchPeaks(programs)
	client := &http.Client{Timeout: 30 * time.Second}
	call := func(method, url, token, body string, want int) string {
		resp, out, err := sendAs(client, token, method, url, body)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != want {
			b.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, out)
		}
		return resp.Header.Get("Location")
	}
	start := time.Now()
	tokens := make([]string, orgs)
	var hourly strings.Builder
	for i := range 24 {
		if i > 0 {
			hourly.WriteByte(',')
		}
		fmt.Fprintf(&hourly, `{"time":%d,"actual":%d,"goal":50}`, 1_700_000_000+3600*i, 40+i)
	}
	factories := make([]string, orgs)
	for i := range orgs {
		name := fmt.Sprintf("tenant-%04d", i)
		if _, err := stack.Writer.Exec(ctx, "org", "create", name); err != nil {
			b.Fatal(err)
		}
		tok, err := stack.CreateToken(ctx, name, "read,write")
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok
		factories[i] = call("POST", stack.Writer.URL()+"/v1/factories", tok, `{"name":"plant","samples":[`+hourly.String()+`]}`, 201)
		for j := range 5 {
			call("POST", fmt.Sprintf("%s/api/sprocket/create/%d/6/4/7", stack.Writer.URL(), 5+j), tok, "", 201)
		}
	}
	created := time.Since(start)
	// Every organization's routes once through each reader, when the
	// projector has caught up with the last organization's writes.
	last := tokens[orgs-1]
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", stack.Reader.URL()+"/api/sprockets", nil)
		req.Header.Set("Authorization", "Bearer "+last)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Count(string(body), `"id":`) == 5 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the last organization's sprockets did not show within a minute")
		}
	}
	for _, rd := range stack.Readers {
		for i, tok := range tokens {
			for _, path := range []string{"/api/sprockets", "/api/factories", "/v1/sprockets", "/v1/factories", factories[i], factories[i] + "/chart-data"} {
				call("GET", rd.URL()+path, tok, "", 200)
			}
		}
	}
	after := residentMemory(programs)
	stop()
	fmt.Printf("\n%d organizations, each with a token, a factory of 24 samples and 5 sprockets, created in %s, then every route of each read through each reader\n",
		orgs, created.Round(time.Millisecond))
	for _, p := range programs {
		fmt.Printf("    %-22s resident memory before %6.0f MB, after %6.0f MB, peak %6.0f MB\n",
			p.Name, before[p.Name]/1e6, after[p.Name]/1e6, peaks()[p.Name]/1e6)
		b.ReportMetric((after[p.Name]-before[p.Name])/1e6, "added-MB-"+p.Name)
	}
}

// sendAs sends a request with token as its bearer and body as JSON, and
// returns the answer with its body read.
func sendAs(client *http.Client, token, method, url, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp, out, err
}

// residentMemory reads each program's resident memory from its /metrics.
func residentMemory(programs []*devstack.Program) map[string]float64 {
	out := map[string]float64{}
	for _, p := range programs {
		out[p.Name] = metricOf(p.URL(), "process_resident_memory_bytes")
	}
	return out
}

// watchPeaks samples each program's resident memory every 100 ms until
// stop is called; peaks returns the highest seen.
func watchPeaks(programs []*devstack.Program) (peaks func() map[string]float64, stop func()) {
	seen := map[string]float64{}
	var mu sync.Mutex
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, p := range programs {
				v := metricOf(p.URL(), "process_resident_memory_bytes")
				mu.Lock()
				seen[p.Name] = max(seen[p.Name], v)
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() map[string]float64 {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(seen)
		}, func() {
			close(done)
			<-finished
		}
}
