//go:build bench

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
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
// Runs last (benchmarks run in file order): the anti-entropy pass reads
// this history from then on.
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
	auth := "Bearer " + tok
	programs := append([]*devstack.Program{stack.Writer, stack.Projector}, stack.Readers...)
	before := map[string]float64{}
	for _, p := range programs {
		before[p.Name] = metricOf(p.URL(), "process_resident_memory_bytes")
	}
	peaks := map[string]float64{}
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // the peaks, from each program's /metrics
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, p := range programs {
				v := metricOf(p.URL(), "process_resident_memory_bytes")
				mu.Lock()
				peaks[p.Name] = max(peaks[p.Name], v)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	client := &http.Client{Timeout: 60 * time.Second}
	send := func(method, url, body string) (*http.Response, []byte, error) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		return resp, out, err
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
	close(stop)
	<-sampled
	fmt.Printf("\n%d samples appended in %d requests in %s; the last one visible on /v1 after %s, on /api/factory/{id}/chart-data after %s (from the first append; -1: not within 5 minutes)\n",
		total, total/batch, appended.Round(time.Millisecond), v1.Round(time.Millisecond), compat.Round(time.Millisecond))
	for _, p := range programs {
		fmt.Printf("    %-22s resident memory before %6.0f MB, peak %6.0f MB\n", p.Name, before[p.Name]/1e6, peaks[p.Name]/1e6)
		b.ReportMetric(peaks[p.Name]/1e6, "peak-MB-"+p.Name)
	}
	b.ReportMetric(compat.Seconds(), "compat-visible-s")
}

// metricOf reads one unlabelled metric from a program's /metrics; 0 when
// it cannot.
func metricOf(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
