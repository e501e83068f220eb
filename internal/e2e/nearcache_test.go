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
)

// Two readers answer hot reads from their memory while a sprocket changes
// under them: neither ever goes back to an older version, both show the
// last one soon after it is written, and a read with the write's token
// sees the write at once, whatever the reader held.
func TestNearCacheFollowsWrites(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2})
	w := s.Writer.URL()
	path := "/v1/sprockets/" + sid(s, 1)
	for _, rd := range s.Readers {
		checkFor(t, 10*time.Second, func() string {
			if src := do(t, "GET", rd.URL()+path, nil).Header.Get("X-Read-Source"); src != "memory" {
				return "a hot read answered from " + src
			}
			return ""
		})
	}
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		sources = map[string]int{}
		back    []string
	)
	for i, rd := range s.Readers {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var last int64
				for !stop.Load() {
					r, err := call("GET", rd.URL()+path, nil)
					if err != nil || r.Status != 200 {
						mu.Lock()
						back = append(back, fmt.Sprintf("reader %d: %v %v", i, r, err))
						mu.Unlock()
						return
					}
					v, _ := strconv.ParseInt(strings.Trim(r.Header.Get("ETag"), `"`), 10, 64)
					mu.Lock()
					sources[r.Header.Get("X-Read-Source")]++
					if v < last {
						back = append(back, fmt.Sprintf("reader %d went from version %d back to %d", i, last, v))
					}
					mu.Unlock()
					last = v
				}
			}()
		}
	}
	var version int64
	for i := range 30 {
		r := do(t, "PATCH", w+path, fmt.Sprintf(`{"pitch":%d.25}`, i+1))
		expect(t, r, 200, "patch")
		version, _ = strconv.ParseInt(strings.Trim(r.Header.Get("ETag"), `"`), 10, 64)
		// The write's token: the newer body, at once, on either reader.
		rd := s.Readers[i%2].URL()
		got := do(t, "GET", rd+path, nil, "X-Consistency-Token", r.Header.Get("X-Consistency-Token"))
		if !strings.Contains(string(got.Body), fmt.Sprintf(`"pitch":%d.25`, i+1)) {
			t.Errorf("a read with the token of write %d: %s from %s", i+1, got, got.Header.Get("X-Read-Source"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, rd := range s.Readers {
		checkFor(t, 2*time.Second, func() string {
			r := do(t, "GET", rd.URL()+path, nil)
			if r.Header.Get("ETag") != fmt.Sprintf(`"%d"`, version) {
				return fmt.Sprintf("serves ETag %s from %s, want %d", r.Header.Get("ETag"), r.Header.Get("X-Read-Source"), version)
			}
			return ""
		})
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("answers by source: %v", sources)
	for _, b := range back {
		t.Error(b)
	}
	if sources["memory"] < sources["cache"] {
		t.Errorf("hot reads mostly missed the reader's memory: %v", sources)
	}
}

// A reader whose feed of changes goes quiet (Redis paused) stops answering
// from memory within the staleness bound and drops what it held; once the
// feed is back, it answers from memory again.
func TestNearCacheStopsWhenTheFeedIsLost(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"FEED_STALENESS=300ms"}})
	rd := s.Reader.URL()
	const path = "/api/sprocket/1"
	source := func() string { return do(t, "GET", rd+path, nil).Header.Get("X-Read-Source") }
	checkFor(t, 10*time.Second, func() string {
		if src := source(); src != "memory" {
			return "answered from " + src
		}
		return ""
	})
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	if err := rdb.Do(context.Background(), "CLIENT", "PAUSE", "2500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// Reads sent through the pause, each a little after the last: none
	// sent after the bound (and a margin for the check's own period) may
	// come from memory. A read waits on the paused Redis for its budget and
	// its grant before its handler runs, which only makes it later.
	type answer struct {
		sent   time.Duration
		source string
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers []answer
	)
	for time.Since(paused) < 2*time.Second {
		wg.Add(1)
		go func(sent time.Duration) {
			defer wg.Done()
			r, err := call("GET", rd+path, nil)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				answers = append(answers, answer{sent, r.Header.Get("X-Read-Source")})
			}
		}(time.Since(paused))
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	late := 0
	for _, a := range answers {
		if a.sent > 300*time.Millisecond+150*time.Millisecond {
			late++
			if a.source == "memory" {
				t.Errorf("a read sent %s into the pause was answered from memory", a.sent.Round(time.Millisecond))
			}
		}
	}
	if late == 0 {
		t.Fatalf("no read was answered after the bound: %v", answers)
	}
	if n := metric(t, rd, `sprockets_nearcache_flushes_total{reason="stale"}`) + metric(t, rd, `sprockets_nearcache_flushes_total{reason="subscription silent"}`); n == 0 {
		t.Errorf("the reader did not drop what it held")
	}
	checkFor(t, 10*time.Second, func() string {
		if src := source(); src != "memory" {
			return "after the pause, answered from " + src
		}
		return ""
	})
}
