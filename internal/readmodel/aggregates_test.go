package readmodel

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Any range, in any number of points: at most that many, each the
// aggregate of the samples its span holds, read from at most 13 buckets a
// point, whatever order the samples were counted in.
func TestChartPlans(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var samples []domain.Sample
	for ts := int64(1_600_000_000); len(samples) < 20_000; ts += 1 + rng.Int64N(12*3600) {
		samples = append(samples, domain.Sample{Time: ts, Actual: rng.Int64N(100), Goal: rng.Int64N(100)})
	}
	// Counted in as appends of a few samples at a time.
	stored := map[string][]domain.Aggregate{}
	for start := 0; start < len(samples); start += 7 {
		for _, g := range GroupByAggregate(1, samples[start:min(start+7, len(samples))]) {
			stored[g.Key] = AddSamples(stored[g.Key], g.Width, g.Samples)
		}
	}
	whole := map[string]string{}
	for _, r := range AggregateRecords(domain.Factory{ID: 1}, samples) {
		whole[r.Key] = string(r.Entry.Body)
	}
	for k, b := range stored {
		if string(EncodeAggregates(b)) != whole[k] {
			t.Fatalf("%s: appended %q, whole %q", k, EncodeAggregates(b), whole[k])
		}
	}
	first, last := samples[0].Time, samples[len(samples)-1].Time
	for range 300 {
		lo := first + rng.Int64N(last-first)
		hi := lo + rng.Int64N(last-lo+1)
		points := 1 + rng.IntN(2000)
		p := PlanChart(1, lo, hi, points)
		var buckets []domain.Aggregate
		for _, k := range p.Keys {
			buckets = append(buckets, stored[k]...)
		}
		got := p.Points(buckets, lo, hi)
		// What the points should be: the samples of the widened range,
		// grouped by the point's span.
		span := p.Width * p.Merge
		wlo, whi := p.Widened(lo, hi)
		var want []domain.Aggregate
		for _, s := range samples {
			if s.Time < wlo || s.Time > whi {
				continue
			}
			if n := len(want); n == 0 || want[n-1].Start != s.Time-s.Time%span {
				want = append(want, domain.Aggregate{Start: s.Time - s.Time%span})
			}
			want[len(want)-1].Add(s)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("[%d, %d] in %d points (width %d × %d): got %v, want %v", lo, hi, points, p.Width, p.Merge, got, want)
		}
		if len(got) > points {
			t.Fatalf("[%d, %d] in %d points: %d points", lo, hi, points, len(got))
		}
		if read := (whi - wlo + 1) / p.Width; read > 13*int64(points)+13 {
			t.Fatalf("[%d, %d] in %d points reads %d buckets of %ds", lo, hi, points, read, p.Width)
		}
	}
}
