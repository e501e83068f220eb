//go:build bench

package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// One tenant must not slow another's creates: organization "noisy" replays
// one idempotency key 500 times a second (each answered from the key's
// stored answer) while organization "quiet" creates at a steady 100 a
// second. (Not the seeded organization: by now the other benchmarks have
// grown it to tens of thousands of sprockets, whose collection costs each
// of its creates more than any neighbour does.) Reported: the p99 of the seeded organization's creates alone and
// beside the replays, in three rounds of each that alternate, and their
// ratio (aim: at most 2). Both generators are open loops in this process,
// light at 600 requests a second, outside the measured processes.
func BenchmarkNoisyNeighbourCreates(b *testing.B) {
	const createRate, replayRate = 100, 500
	ctx := context.Background()
	tokens := map[string]string{}
	for _, org := range []string{"noisy", "quiet"} {
		if _, err := stack.Writer.Exec(ctx, "org", "create", org); err != nil {
			b.Fatal(err)
		}
		tok, err := stack.CreateToken(ctx, org, "write", "--name", org)
		if err != nil {
			b.Fatal(err)
		}
		tokens[org] = tok
	}
	noisy := tokens["noisy"]
	create := target{method: "POST", url: stack.Writer.URL() + "/api/sprocket/create/5/6/4/7", header: []string{"Authorization: Bearer " + tokens["quiet"]}}
	replay := target{method: "POST", url: stack.Writer.URL() + "/api/sprocket/create/5/6/4/7",
		header: []string{"Authorization: Bearer " + noisy, "Idempotency-Key: the-same-key-again"}}
	round := max(duration, 5*time.Second) // a p99 of 500 creates at least
	for i := 0; i < b.N; i++ {
		var alone, beside []time.Duration
		for r := 1; r <= 3; r++ {
			settle(b)
			a := openLoop(create, createRate, round)
			alone = append(alone, a.p99(201))
			fmt.Printf("\nround %d, alone:        creates %d/s: %s", r, createRate, a.brief(201))

			settle(b)
			var replays openLoopResult
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				replays = openLoop(replay, replayRate, round)
			}()
			n := openLoop(create, createRate, round)
			wg.Wait()
			beside = append(beside, n.p99(201))
			fmt.Printf("\nround %d, beside noisy: creates %d/s: %s   replays %d/s: %s",
				r, createRate, n.brief(201), replayRate, replays.brief(201))
		}
		for r := range alone {
			fmt.Printf("\nround %d: p99 beside the replays / alone = %.2f   (aim: at most 2)", r+1, float64(beside[r])/float64(alone[r]))
		}
		fmt.Println()
		b.ReportMetric(float64(maxOf(beside))/float64(maxOf(alone)), "worst-p99-ratio")
	}
}

func maxOf(l []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range l {
		m = max(m, x)
	}
	return m
}

// brief says how many answers had status, with their p50 and p99, and
// how many had another status or failed.
func (r openLoopResult) brief(status int) string {
	l := r.latencies[status]
	other := r.failed
	for st, ls := range r.latencies {
		if st != status {
			other += len(ls)
		}
	}
	if len(l) == 0 {
		return fmt.Sprintf("no %d (%d others)", status, other)
	}
	return fmt.Sprintf("%d×%d p50 %.2fms p99 %.2fms (%d others)", len(l), status, ms(l[len(l)/2]), ms(r.p99(status)), other)
}
