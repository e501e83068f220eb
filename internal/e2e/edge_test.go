package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The original service's README walkthrough, through the one port of the
// local topology: the edge, with two readers behind it.
func TestOriginalWalkthroughThroughTheEdge(t *testing.T) {
	s := newStack(t, stackOptions{edge: true, readers: 2})
	edge := s.Edge.URL()

	r := eventually(t, edge+"/api/factories", 200, bodyHas(`"id":3`))
	if !strings.HasPrefix(string(r.Body), `{"factories":[{"factory":{"id":1,"chart_data":{"sprocket_production_actual":[32,29,31`) {
		t.Errorf("GET /api/factories: %.120s", r.Body)
	}
	r = do(t, "GET", edge+"/api/factory/1", nil)
	expect(t, r, 200, "GET /api/factory/1")
	r = do(t, "GET", edge+"/api/factory/2/chart-data", nil)
	expect(t, r, 200, "GET /api/factory/2/chart-data")
	if !strings.HasPrefix(string(r.Body), `{"sprocket_production_actual":[32,28,31,30,30`) {
		t.Errorf("factory 2's chart data: %.80s", r.Body)
	}

	r = do(t, "POST", edge+"/api/sprocket/create/5/6/4/7/", nil)
	expect(t, r, 201, "POST /api/sprocket/create/5/6/4/7/")
	var created struct{ ID int64 }
	r.JSON(t, &created)
	r = do(t, "POST", edge+"/api/sprocket/3/update/5/6/4/7/", nil)
	expect(t, r, 200, "POST /api/sprocket/3/update/5/6/4/7/")

	want := `"teeth":5,"pitch_diameter":6,"outside_diameter":4,"pitch":7}`
	eventually(t, fmt.Sprintf("%s/api/sprocket/%d", edge, created.ID), 200, bodyHas(want))
	eventually(t, edge+"/api/sprocket/3", 200, bodyHas(`{"id":3,`+want))
	eventually(t, edge+"/api/sprockets", 200, bodyHas(`{"id":3,`+want, fmt.Sprintf(`{"id":%d,`, created.ID)+want))

	// The edge spreads reads over both readers.
	const served = `sprockets_http_request_duration_seconds_count{method="GET",route="/api/factory/:id",status="200"}`
	before := []float64{metric(t, s.Readers[0].URL(), served), metric(t, s.Readers[1].URL(), served)}
	for i := 0; i < 20; i++ {
		expect(t, do(t, "GET", edge+"/api/factory/1", nil), 200, "GET /api/factory/1")
	}
	for i, r := range s.Readers {
		if n := metric(t, r.URL(), served) - before[i]; n < 5 {
			t.Errorf("reader %d served %v of 20 reads", i+1, n)
		}
	}
	r = do(t, "GET", edge+"/api/sprocket/create/5/6/4/7/", nil)
	if r.Status != 405 || r.Header.Get("Allow") != "POST" {
		t.Errorf("GET on a write route through the edge: %s", r)
	}
}

// With two readers behind the edge, stopping one (gracefully, then by
// killing it) in the middle of a load loses no read: the edge retries a
// read that failed on it against the other.
func TestAReaderStoppedMidLoadLosesNoRequest(t *testing.T) {
	s := newStack(t, stackOptions{edge: true, readers: 2})
	edge := s.Edge.URL()
	eventually(t, edge+"/api/factories", 200, bodyHas(`"id":3`))
	second := s.Readers[1]
	paths := []string{"/api/factories", "/api/factory/1", "/api/factory/2/chart-data", "/api/sprockets",
		"/api/sprocket/2", "/v1/sprockets", "/v1/factories/" + fid(s, 1) + "/chart-data?from=1611194818&to=1611195000"}

	load := func(during func()) (total int64, failures []string) {
		var (
			stop sync.WaitGroup
			done atomic.Bool
			n    atomic.Int64
			mu   sync.Mutex
		)
		for g := 0; g < 4; g++ {
			stop.Add(1)
			go func(g int) {
				defer stop.Done()
				for i := g; !done.Load(); i++ {
					r, err := call("GET", edge+paths[i%len(paths)], nil)
					n.Add(1)
					if err != nil || r.Status != 200 {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s: %v %v", paths[i%len(paths)], err, r))
						mu.Unlock()
					}
				}
			}(g)
		}
		time.Sleep(500 * time.Millisecond)
		during()
		time.Sleep(1500 * time.Millisecond)
		done.Store(true)
		stop.Wait()
		return n.Load(), failures
	}

	total, failures := load(second.Stop)
	t.Logf("reader stopped gracefully: %d reads, %d failed", total, len(failures))
	if len(failures) > 0 {
		t.Errorf("reads lost while a reader stopped: %v", failures[:min(len(failures), 5)])
	}
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the edge's health check brings it back
	total, failures = load(second.Kill)
	t.Logf("reader killed: %d reads, %d failed", total, len(failures))
	if len(failures) > 0 {
		t.Errorf("reads lost while a reader was killed: %v", failures[:min(len(failures), 5)])
	}
}

// Through the edge, the client address is the one the edge saw, whatever
// X-Forwarded-For the client sends: a new address per request does not
// escape the anonymous budget, and the audit trail records the real one.
func TestEdgeDecidesTheClientAddress(t *testing.T) {
	s := newStack(t, stackOptions{edge: true, env: []string{"RATE_LIMIT_ANONYMOUS=5"}})
	db := leader(t, s)
	edge := s.Edge.URL()
	statuses := map[int]int{}
	for i := 0; i < 15; i++ {
		r := do(t, "GET", edge+"/api/factories", nil, append(as(""), "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1))...)
		statuses[r.Status]++
	}
	if statuses[429] < 7 || statuses[401] > 7 {
		t.Errorf("15 anonymous requests, each from a made-up address, at a budget of 5/s: %v, want most refused with 429", statuses)
	}

	// The token's first use is looked up in Postgres, which the address
	// (whose budget the requests above spent) pays for: it may have to wait
	// for the budget to come back.
	checkFor(t, 5*time.Second, func() string {
		r := do(t, "POST", edge+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`,
			"X-Forwarded-For", "198.51.100.7")
		if r.Status != 201 {
			return "create through the edge: " + r.String()
		}
		return ""
	})
	var client string
	if err := db.Get(&client, `SELECT client_addr FROM audit_log ORDER BY id DESC LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if client != "127.0.0.1" {
		t.Errorf("the audit row names %q as the client, want the address the edge saw, 127.0.0.1", client)
	}
}

// Readiness and metrics are for probes and scrapers on each program's own
// port: through the edge they are refused, however the path is spelt and
// whoever asks.
func TestEdgeKeepsInternalsInternal(t *testing.T) {
	s := newStack(t, stackOptions{edge: true})
	for _, path := range []string{"/metrics", "/readyz", "/metrics/", "/%6detrics", "//readyz", "/./metrics"} {
		for _, token := range []string{"", mustToken(t, s)} {
			head := "GET " + path + " HTTP/1.1\r\n"
			if token != "" {
				head += "Authorization: Bearer " + token + "\r\n"
			}
			r, err := raw(s.Edge.URL(), head, "")
			if err != nil {
				t.Fatal(err)
			}
			if r.Status < 400 || strings.Contains(string(r.Body), "go_goroutines") || strings.Contains(string(r.Body), `"checks"`) {
				t.Errorf("GET %s through the edge: %s", path, r)
			}
		}
	}
	for _, p := range []string{s.Reader.URL(), s.Writer.URL(), s.Projector.URL()} {
		for _, path := range []string{"/metrics", "/readyz"} {
			expect(t, do(t, "GET", p+path, nil), 200, "GET "+path+" on the program's own port")
		}
	}
	expect(t, do(t, "GET", s.Edge.URL()+"/healthz", nil), 200, "GET /healthz through the edge")
}

// An IPv6 client is one client for its whole /64: a new address of the
// block per request does not escape the anonymous budget, and another
// block has its own. (The reader trusts X-Forwarded-For from 127.0.0.1,
// where an edge would be.)
func TestOneIPv6BlockIsOneClient(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"RATE_LIMIT_ANONYMOUS=5"}})
	rd := s.Reader.URL()
	statuses := map[int]int{}
	for i := range 15 {
		r := do(t, "GET", rd+"/api/factories", nil, append(as(""), "X-Forwarded-For", fmt.Sprintf("2001:db8:1:2::%x", i+1))...)
		statuses[r.Status]++
	}
	if statuses[429] < 7 {
		t.Errorf("15 anonymous requests, each from another address of one /64, at a budget of 5/s: %v, want most refused with 429", statuses)
	}
	if r := do(t, "GET", rd+"/api/factories", nil, append(as(""), "X-Forwarded-For", "2001:db8:1:3::1")...); r.Status == 429 {
		t.Errorf("another /64 was refused with the first one's budget: %s", r)
	}
}
