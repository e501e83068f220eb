//go:build bench

package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The load comes from wrk (Debian's), a process of its own: a generator
// inside the benchmark's process would take the CPU the servers need, and
// flatter every ratio.

// target is what a side of a comparison loads.
type target struct {
	method string // GET or POST
	url    string
	header []string // "Name: value"
}

// wrkRound is what one run of wrk measured.
type wrkRound struct {
	requests int64
	failed   int64 // non-2xx/3xx answers and socket errors
	elapsed  time.Duration
	p50, p99 time.Duration
	read     float64 // bytes read, headers included (wrk's "0.90GB read")
}

func (r wrkRound) rps() float64 { return float64(r.requests-r.failed) / r.elapsed.Seconds() }

// runWrk loads t for d (in whole seconds, at least one: what wrk takes)
// with clients connections over two threads.
func runWrk(t target, d time.Duration, clients int) (wrkRound, error) {
	secs := max(int(d.Seconds()+0.5), 1)
	args := []string{"-t2", "-c" + strconv.Itoa(clients), "-d" + strconv.Itoa(secs) + "s", "--latency", "--timeout", "10s"}
	for _, h := range t.header {
		args = append(args, "-H", h)
	}
	if t.method == "POST" {
		script := filepath.Join(stack.Dir, "post.lua")
		if err := os.WriteFile(script, []byte("wrk.method = \"POST\"\n"), 0o644); err != nil {
			return wrkRound{}, err
		}
		args = append(args, "-s", script)
	}
	out, err := exec.Command("wrk", append(args, t.url)...).CombinedOutput()
	if err != nil {
		return wrkRound{}, fmt.Errorf("wrk %s: %w\n%s", t.url, err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads wrk's report: the latency distribution, the request
// count and its time, failures.
func parseWrk(out string) (wrkRound, error) {
	var r wrkRound
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "50%":
			r.p50 = wrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99 = wrkDuration(f[1])
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseInt(f[0], 10, 64)
			r.elapsed = wrkDuration(strings.TrimSuffix(f[3], ","))
			if len(f) >= 6 && f[5] == "read" {
				r.read = wrkBytes(f[4])
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.failed += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.failed += n
			}
		}
	}
	if r.requests == 0 || r.elapsed == 0 {
		return r, fmt.Errorf("wrk reported no requests:\n%s", out)
	}
	return r, nil
}

// wrkBytes reads wrk's sizes: 512B, 1.50KB, 0.90GB (powers of 1024).
func wrkBytes(s string) float64 {
	for i, u := range []string{"B", "KB", "MB", "GB", "TB"} {
		if v, ok := strings.CutSuffix(s, u); ok && (u != "B" || !strings.ContainsAny(v, "KMGT")) {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0
			}
			for range i {
				f *= 1024
			}
			return f
		}
	}
	return 0
}

// wrkDuration reads wrk's durations: 635.91us, 1.50ms, 2.00s, 1.00m.
func wrkDuration(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0
			}
			return time.Duration(f * float64(u.unit))
		}
	}
	return 0
}

// redisCalls returns how many commands Redis has run, from INFO
// commandstats: a script counts once, and so does each command it calls.
func redisCalls(rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(info, "\r\n") {
		_, stats, ok := strings.Cut(line, ":calls=")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(stats, ",")
		c, _ := strconv.ParseInt(calls, 10, 64)
		n += c
	}
	return n
}
