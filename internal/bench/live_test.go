//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// liveStreams is how many streams BenchmarkLiveStreams opens on one
// reader: LIVE_STREAMS, or 5,000.
func liveStreams() int {
	if n, err := strconv.Atoi(os.Getenv("LIVE_STREAMS")); err == nil && n > 0 {
		return n
	}
	return 5000
}

// Streams of changes on one reader: its resident memory per open stream,
// and, at 200 sprocket creates a second, the delay from each create's
// commit (its created_at, set in its transaction) to the event at each
// client. Twice: the streams and the creates spread over 100
// organizations (dashboards of many customers: each stream gets 2 events a
// second), then all of them following one organization that gets every
// create (each stream gets 200 a second, the reader a million). The
// clients run in this process, not the reader's; each only looks for the
// created_at in the events it reads.
func BenchmarkLiveStreams(b *testing.B) {
	for i := 0; i < b.N; i++ {
		measureStreams(b, liveStreams(), 100)
		measureStreams(b, liveStreams(), 1)
	}
}

func measureStreams(b *testing.B, n, orgs int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tokens := make([]string, orgs)
	for i := range tokens {
		org := fmt.Sprintf("live-%d-%d", time.Now().UnixNano(), i)
		if _, err := stack.Writer.Exec(ctx, "org", "create", org); err != nil {
			b.Fatal(err)
		}
		tok, err := stack.CreateToken(ctx, org, "read,write", "--name", "streams")
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok
	}
	measureFrom.Store(time.Now().Add(time.Hour))
	reader := stack.Readers[0]
	before := metricOf(reader.URL(), "process_resident_memory_bytes")
	goroutines := metricOf(reader.URL(), "go_goroutines")

	var (
		ready, ended, received atomic.Int64
		delays                 histogram
		wg                     sync.WaitGroup
	)
	transport := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	client := &http.Client{Transport: transport}
	for i := range n {
		tok := tokens[i%orgs]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ended.Add(1)
			req, _ := http.NewRequestWithContext(ctx, "GET", reader.URL()+"/v1/stream?kinds=sprocket", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				return
			}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Bytes()
				if bytes.HasPrefix(line, []byte("event: ready")) {
					ready.Add(1)
					continue
				}
				i := bytes.Index(line, []byte(`"created_at":"`))
				if !bytes.HasPrefix(line, []byte("data: ")) || i < 0 {
					continue
				}
				rest := line[i+len(`"created_at":"`):]
				j := bytes.IndexByte(rest, '"')
				if j < 0 {
					continue
				}
				at, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
				if err != nil {
					continue
				}
				if at.Before(measureFrom.Load().(time.Time)) {
					continue // a warm-up create
				}
				delays.add(time.Since(at))
				received.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for ready.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if ready.Load() < int64(n) {
		b.Fatalf("%d of %d streams opened (%d ended)", ready.Load(), n, ended.Load())
	}
	time.Sleep(2 * time.Second)
	open := metricOf(reader.URL(), "process_resident_memory_bytes")

	// 200 creates a second for the run's duration, after one create in
	// each organization: without it, the first seconds of writing put
	// events up to seconds late at 5,000 streams (not yet explained), and
	// would fill the tail.
	writer := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, tok := range tokens {
		if resp, body, err := sendAs(writer, tok, "POST", stack.Writer.URL()+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":1}`); err != nil || resp.StatusCode != 201 {
			b.Fatalf("warm-up create: %v %s", err, body)
		}
	}
	time.Sleep(5 * time.Second)
	peaks, stop := watchPeaks(stack.Readers[:1])
	cpu := readProcessTimes()
	measureFrom.Store(time.Now())
	const rate = 200
	var writes, failed atomic.Int64
	var ww sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	end := time.Now().Add(duration)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		tok := tokens[i%orgs]
		ww.Add(1)
		go func() {
			defer ww.Done()
			resp, body, err := sendAs(writer, tok, "POST", stack.Writer.URL()+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":1}`)
			if err != nil || resp.StatusCode != 201 {
				failed.Add(1)
				if failed.Load() == 1 {
					fmt.Printf("  a create failed: %v %s\n", err, body)
				}
				return
			}
			writes.Add(1)
		}()
	}
	tick.Stop()
	ww.Wait()
	time.Sleep(3 * time.Second) // the last events
	used := cpu.since()
	stop()
	stillOpen := int64(n) - ended.Load()
	left := time.Now()
	cancel()
	wg.Wait()
	// How long the reader takes to let go of streams whose clients left,
	// and what it keeps once every stream has ended: its goroutines (one
	// or more per stream while open; the server's idle workers go within
	// seconds) and its heap.
	// (metricOf reads 0 when the reader does not answer: it counts as
	// released only while it has goroutines.)
	for (metricOf(reader.URL(), "sprockets_live_streams") > 0 || metricOf(reader.URL(), "go_goroutines") == 0) && time.Since(left) < time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	stillCounted, gone := metricOf(reader.URL(), "sprockets_live_streams"), time.Since(left)
	closed := metricOf(reader.URL(), "process_resident_memory_bytes")
	goroutinesAfter := metricOf(reader.URL(), "go_goroutines")
	heapAfter := metricOf(reader.URL(), "go_memstats_heap_inuse_bytes")

	perStream := (open - before) / float64(n)
	want := writes.Load() * int64(n) / int64(orgs) // every organization has as many streams
	p50, p99 := delays.quantile(0.50), delays.quantile(0.99)
	b.ReportMetric(perStream/1024, fmt.Sprintf("KB/stream-%dorgs", orgs))
	b.ReportMetric(ms(p50), fmt.Sprintf("p50-ms-%dorgs", orgs))
	b.ReportMetric(ms(p99), fmt.Sprintf("p99-ms-%dorgs", orgs))
	fmt.Printf("\n%d streams on one reader, of %d organizations: resident memory %.0f MB before, %.0f MB open (%.1f KB a stream), peak %.0f MB while writing\n",
		n, orgs, before/1e6, open/1e6, perStream/1024, peaks()[reader.Name]/1e6)
	fmt.Printf("  %d creates at %d/s (%d failed): %d of %d events received (%.2f%%), %d streams still open at the end\n",
		writes.Load(), rate, failed.Load(), received.Load(), want, 100*float64(received.Load())/float64(max(want, 1)), stillOpen)
	fmt.Printf("  commit to event at the client: p50 %.1f ms, p99 %.1f ms\n", ms(p50), ms(p99))
	fmt.Printf("  once the clients left: %.0f streams still counted after %s, %.0f goroutines (%.0f before they opened), heap in use %.0f MB, resident memory %.0f MB\n",
		stillCounted, gone.Round(100*time.Millisecond), goroutinesAfter, goroutines, heapAfter/1e6, closed/1e6)
	fmt.Printf("  CPU while writing, over %s: readers %.1f s, projector %.1f s, writer %.1f s, redis %.1f s, this process (the clients) %.1f s\n",
		duration+3*time.Second, used["reader"].Seconds(), used["projector"].Seconds(), used["writer"].Seconds(), used["redis-server"].Seconds(), used["bench.test"].Seconds())
}

// measureFrom is when the measured creates start: events of creates
// before it are not counted.
var measureFrom atomic.Value

// histogram counts durations in 100 µs steps up to 10 s.
type histogram struct {
	counts [100_001]atomic.Int64
}

func (h *histogram) add(d time.Duration) {
	i := min(max(int(d/(100*time.Microsecond)), 0), len(h.counts)-1)
	h.counts[i].Add(1)
}

func (h *histogram) quantile(q float64) time.Duration {
	total := int64(0)
	for i := range h.counts {
		total += h.counts[i].Load()
	}
	rank, seen := int64(float64(total)*q), int64(0)
	for i := range h.counts {
		if seen += h.counts[i].Load(); seen > rank {
			return time.Duration(i) * 100 * time.Microsecond
		}
	}
	return 0
}
