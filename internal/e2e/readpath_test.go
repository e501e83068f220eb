package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// hammer sends GETs of path with token to the readers, from clients
// goroutines each, until stop is set, and counts the answers by status.
func hammer(readers []*devstack.Program, path, token string, clients int, stop *atomic.Bool) func() map[int]int {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for i, rd := range readers {
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					r, err := call("GET", rd.URL()+path, nil, as(token)...)
					mu.Lock()
					if err != nil {
						statuses[-1]++
					} else {
						statuses[r.Status]++
					}
					mu.Unlock()
				}
			}()
		}
		_ = i
	}
	return func() map[int]int {
		wg.Wait()
		return statuses
	}
}

// Two readers spend one token's budget, leased from Redis in parts: over
// a few seconds of both hammering it, they admit no more than one exact
// limiter would, plus one lease each (a tenth of the budget), and refuse
// the rest with 429.
func TestLeasedBudgetsStayWithinTheBound(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2})
	const perSecond = 40
	writerCmd(t, s, "org", "create", "metered", "--rate-limit", strconv.Itoa(perSecond))
	tok := token(t, s, "metered", "read")
	var stop atomic.Bool
	start := time.Now()
	wait := hammer(s.Readers, "/api/sprockets", tok, 4, &stop)
	time.Sleep(3 * time.Second)
	stop.Store(true)
	statuses := wait()
	elapsed := time.Since(start)
	// One exact limiter with a burst of a second's worth admits at most
	// perSecond at once and perSecond a second after.
	exact := perSecond + int(elapsed.Seconds()*perSecond+0.5)
	bound := exact + 2*(perSecond/10)
	t.Logf("%s at %d/s over two readers: %v; an exact limiter admits at most %d, the stated bound is %d",
		elapsed.Round(time.Millisecond), perSecond, statuses, exact, bound)
	if statuses[200] > bound {
		t.Errorf("%d admitted, over the bound of %d", statuses[200], bound)
	}
	if statuses[200] < perSecond*2 || statuses[429] == 0 {
		t.Errorf("the budget was not spent and enforced: %v", statuses)
	}
	for status, n := range statuses {
		if status != 200 && status != 429 {
			t.Errorf("%d answers %d", n, status)
		}
	}
}

// redisCommands returns how many commands Redis has run, of any kind.
func redisCommands(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no total_commands_processed in INFO stats")
	return 0
}

// Under load, reads cost Redis next to nothing: the body comes from the
// reader's memory, the grant too, and the budget from a lease. A token
// revoked then is refused by every reader and the writer as soon as
// `writer token revoke` returns, with no request asking Redis about it.
func TestRevocationIsPushed(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2})
	tok := token(t, s, "default", "read,write", "--name", "pushed")
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	for _, rd := range s.Readers {
		checkFor(t, 10*time.Second, func() string {
			if src := do(t, "GET", rd.URL()+"/api/sprocket/1", nil, as(tok)...).Header.Get("X-Read-Source"); src != "memory" {
				return "answered from " + src
			}
			return ""
		})
	}

	var stop atomic.Bool
	wait := hammer(s.Readers, "/api/sprocket/1", tok, 3, &stop)
	time.Sleep(500 * time.Millisecond)
	before := redisCommands(t, rdb)
	served := func() float64 {
		n := 0.0
		for _, rd := range s.Readers {
			n += metric(t, rd.URL(), `sprockets_http_request_duration_seconds_count{method="GET",route="/api/sprocket/:id",status="200"}`)
		}
		return n
	}
	readsBefore := served()
	time.Sleep(2 * time.Second)
	commands, reads := redisCommands(t, rdb)-before, served()-readsBefore
	perRead := float64(commands) / reads
	t.Logf("%0.f reads, %d Redis commands (%.4f a read: heartbeats, leases, and the projector's own)", reads, commands, perRead)
	// A read that asked Redis anything would cost at least one command.
	// The rest is a steady hundred or so a second (heartbeats, leases,
	// the projector's polls), spread over however many reads the machine
	// serves: under the race detector and the other tests, about 2,000 a
	// second, so 0.05 to 0.1 a read. (make bench measures the figure.)
	if reads < 200 || perRead > 0.25 {
		t.Errorf("%.0f reads cost Redis %d commands", reads, commands)
	}

	var id string
	for _, line := range strings.Split(writerCmd(t, s, "token", "list", "--org", "default"), "\n") {
		if strings.Contains(line, "\tpushed\t") {
			id, _, _ = strings.Cut(line, "\t")
		}
	}
	writerCmd(t, s, "token", "revoke", id)
	revoked := time.Now()
	// From now on, nothing the token asks is served, on any reader or the
	// writer, while the load goes on.
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for _, url := range []string{s.Readers[0].URL() + "/api/sprocket/1", s.Readers[1].URL() + "/api/sprocket/1", s.Readers[0].URL() + "/api/sprockets"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(revoked) < time.Second {
				// Refused: 401, or 429 once the client address's own budget
				// (for requests without a valid token) is spent.
				if r, err := call("GET", url, nil, as(tok)...); err == nil && r.Status < 400 {
					accepted.Add(1)
				}
			}
		}()
	}
	if r := do(t, "POST", s.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil, as(tok)...); r.Status < 400 {
		t.Errorf("the writer accepted the revoked token: %s", r)
	}
	wg.Wait()
	stop.Store(true)
	statuses := wait()
	t.Logf("the load's answers: %v", statuses)
	if n := accepted.Load(); n > 0 {
		t.Errorf("%d requests sent after the revocation returned were not refused", n)
	}
}

// A chart range answers at most `limit` samples (10,000 at most), and says
// where the rest starts: following its Link pages through the whole range,
// every sample once, from the cache and from Postgres alike.
func TestChartRangesArePaged(t *testing.T) {
	s := newStack(t, stackOptions{})
	f := newFactory(t, s)
	var samples []string
	for i := range 25 {
		samples = append(samples, fmt.Sprintf(`{"time":%d,"actual":%d,"goal":1}`, 1700000000+int64(i)*1800, i))
	}
	expect(t, do(t, "POST", fmt.Sprintf("%s/v1/factories/%s/samples", s.Writer.URL(), fid(s, f)), `{"samples":[`+strings.Join(samples, ",")+`]}`), 200, "append")
	verifyConverges(t, s, 20*time.Second)
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A reader whose cache answers one bucket at most reads every range of
	// more than one hour from Postgres.
	fromPostgres := s.NewProgram("reader", port, "CHART_MAX_BUCKETS=1")
	if err := fromPostgres.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer fromPostgres.Stop()
	authenticate(t, s, mustToken(t, s), fromPostgres)
	for _, rd := range []*devstack.Program{s.Reader, fromPostgres} {
		checkProblem(t, do(t, "GET", fmt.Sprintf("%s/v1/factories/%s/chart-data?limit=10001", rd.URL(), fid(s, f)), nil), 400, "10000")
		next := fmt.Sprintf("/v1/factories/%s/chart-data?limit=10", fid(s, f))
		var times []int64
		sources := map[string]int{}
		for pages := 0; next != ""; pages++ {
			if pages > 5 {
				t.Fatalf("more than 5 pages of 10 for 25 samples")
			}
			r := do(t, "GET", rd.URL()+next, nil)
			expect(t, r, 200, "GET "+next)
			sources[r.Header.Get("X-Read-Source")]++
			var page struct {
				ChartData struct {
					Time []int64 `json:"time"`
				} `json:"chart_data"`
				NextFrom *int64 `json:"next_from"`
			}
			r.JSON(t, &page)
			times = append(times, page.ChartData.Time...)
			next = ""
			if link := r.Header.Get("Link"); link != "" {
				next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
				if page.NextFrom == nil || !strings.Contains(next, fmt.Sprintf("from=%d&", *page.NextFrom)) || len(page.ChartData.Time) != 10 {
					t.Fatalf("a page of %d samples, next_from %v, Link %q", len(page.ChartData.Time), page.NextFrom, link)
				}
			}
		}
		if len(times) != 25 || times[0] != 1700000000 || times[24] != 1700000000+24*1800 {
			t.Errorf("the pages held %d samples: %v", len(times), times)
		}
		for i := 1; i < len(times); i++ {
			if times[i] <= times[i-1] {
				t.Fatalf("pages repeat or skip at %d: %v", i, times)
			}
		}
		t.Logf("%s: pages from %v", rd.Name, sources)
		if fromDB := sources["replica"] + sources["leader"]; (rd == fromPostgres) != (fromDB == 3) {
			t.Errorf("%s read its pages from %v", rd.Name, sources)
		}
	}
}
