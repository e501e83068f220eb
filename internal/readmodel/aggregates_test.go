package readmodel

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
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

// The points body is what encoding/json makes of its shape, and
// aggregates read back what was written; a malformed body is an error.
func TestChartPointsEncoding(t *testing.T) {
	ids := testIDs
	rng := rand.New(rand.NewPCG(5, 6))
	var points []domain.Aggregate
	for i := range 50 {
		a := domain.Aggregate{Start: int64(i) * 3600}
		for range 1 + rng.IntN(5) {
			a.Add(domain.Sample{Time: a.Start, Actual: rng.Int64N(domain.MaxProductionAmount), Goal: rng.Int64N(1000)})
		}
		points = append(points, a)
	}
	for _, ps := range [][]domain.Aggregate{nil, points} {
		c := domain.ChartData{Actual: []int64{}, Goal: []int64{}, Time: []int64{}}
		spread := map[string][]int64{"count": {}, "actual_min": {}, "actual_max": {}, "goal_min": {}, "goal_max": {}}
		for _, p := range ps {
			c.Actual, c.Goal, c.Time = append(c.Actual, mean(p.SumActual, p.Count)), append(c.Goal, mean(p.SumGoal, p.Count)), append(c.Time, p.Start)
			for k, v := range map[string]int64{"count": p.Count, "actual_min": p.MinActual, "actual_max": p.MaxActual, "goal_min": p.MinGoal, "goal_max": p.MaxGoal} {
				spread[k] = append(spread[k], v)
			}
		}
		want := mustJSON(struct {
			FactoryID     string             `json:"factory_id"`
			From          int64              `json:"from"`
			To            int64              `json:"to"`
			BucketSeconds int64              `json:"bucket_seconds"`
			ChartData     domain.ChartData   `json:"chart_data"`
			Spread        map[string][]int64 `json:"spread"`
		}{ids.Encode(publicid.Factory, 3), 7, 9, 3600, c, spread})
		// encoding/json sorts a map's keys: compare as values.
		if canonicalJSON(t, ChartPointsBody(ids, 3, 7, 9, 3600, ps)) != canonicalJSON(t, want) {
			t.Fatalf("got %s\nwant %s", ChartPointsBody(ids, 3, 7, 9, 3600, ps), want)
		}
	}
	if got, err := DecodeAggregates(EncodeAggregates(points)); err != nil || fmt.Sprint(got) != fmt.Sprint(points) {
		t.Fatalf("read back %v, %v", got, err)
	}
	for _, bad := range []string{"1 2 3", "1 2 3 4 5 6 7 8", "1 2 3 4 5 6 7 x\n", "-1 2 3 4 5 6 7 8\n", "1  2 3 4 5 6 7 8\n", "99999999999999999999 2 3 4 5 6 7 8\n", "9999999999999999999 2 3 4 5 6 7 8\n"} {
		if _, err := DecodeAggregates([]byte(bad)); err == nil {
			t.Fatalf("%q read without an error", bad)
		}
	}
}

func canonicalJSON(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
