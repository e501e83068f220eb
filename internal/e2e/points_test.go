package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// pointsBody is GET .../chart-data?points=N.
type pointsBody struct {
	BucketSeconds int64 `json:"bucket_seconds"`
	ChartData     struct {
		Actual []int64 `json:"sprocket_production_actual"`
		Goal   []int64 `json:"sprocket_production_goal"`
		Time   []int64 `json:"time"`
	} `json:"chart_data"`
	Spread struct {
		Count     []int64 `json:"count"`
		ActualMin []int64 `json:"actual_min"`
		ActualMax []int64 `json:"actual_max"`
		GoalMin   []int64 `json:"goal_min"`
		GoalMax   []int64 `json:"goal_max"`
	} `json:"spread"`
}

// A chart in at most N points: per bucket aggregates of the history, the
// same whether the reader reads the projector's aggregates or the
// database; the samples themselves when they are few enough; kept current
// by appends; bad requests refused.
func TestChartPoints(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"NEAR_CACHE_BYTES=0"}})
	w, rd := s.Writer.URL(), s.Reader.URL()
	rng := rand.New(rand.NewPCG(3, 4))
	var samples []domain.Sample
	for ts := int64(1_700_000_000); len(samples) < 3000; ts += 60 + rng.Int64N(600) {
		samples = append(samples, domain.Sample{Time: ts, Actual: rng.Int64N(50), Goal: 20 + rng.Int64N(10)})
	}
	raw, _ := json.Marshal(map[string]any{"name": "Plant P", "samples": samples})
	created := do(t, "POST", w+"/v1/factories", string(raw))
	expect(t, created, 201, "create")
	var f factoryV1
	created.JSON(t, &f)
	consistent := []string{"X-Consistency-Token", created.Header.Get("X-Consistency-Token")}
	url := rd + "/v1/factories/" + f.ID + "/chart-data?points=100"

	first := do(t, "GET", url, nil, consistent...)
	expect(t, first, 200, "points")
	if src := first.Header.Get("X-Read-Source"); !fromReadModel(src) {
		t.Fatalf("answered from %s, want the read model", src)
	}
	var p pointsBody
	first.JSON(t, &p)
	n := len(p.ChartData.Time)
	if n == 0 || n > 100 || p.BucketSeconds == 0 {
		t.Fatalf("%d points of %ds", n, p.BucketSeconds)
	}
	// Each point is the aggregate of the samples of its bucket.
	at := map[int64]int{}
	for i, start := range p.ChartData.Time {
		at[start] = i
	}
	got := make([]domain.Aggregate, n)
	for _, smp := range samples {
		i, ok := at[smp.Time-smp.Time%p.BucketSeconds]
		if !ok {
			t.Fatalf("no point for the sample at %d", smp.Time)
		}
		got[i].Add(smp)
	}
	for i, a := range got {
		mean := func(sum int64) int64 { return int64(math.Round(float64(sum) / float64(a.Count))) }
		want := fmt.Sprint(a.Count, mean(a.SumActual), a.MinActual, a.MaxActual, mean(a.SumGoal), a.MinGoal, a.MaxGoal)
		if have := fmt.Sprint(p.Spread.Count[i], p.ChartData.Actual[i], p.Spread.ActualMin[i], p.Spread.ActualMax[i],
			p.ChartData.Goal[i], p.Spread.GoalMin[i], p.Spread.GoalMax[i]); have != want {
			t.Fatalf("point %d (%d): %s, want %s", i, p.ChartData.Time[i], have, want)
		}
	}

	// Few enough samples: the samples themselves.
	var all pointsBody
	do(t, "GET", rd+"/v1/factories/"+f.ID+"/chart-data?points=10000", nil).JSON(t, &all)
	if all.BucketSeconds != 0 || len(all.ChartData.Time) != len(samples) || all.ChartData.Actual[7] != samples[7].Actual {
		t.Fatalf("10000 points of 3000 samples: %d points of %ds", len(all.ChartData.Time), all.BucketSeconds)
	}

	// Appends are counted in.
	last := samples[len(samples)-1].Time + 60
	r := do(t, "POST", w+"/v1/factories/"+f.ID+"/samples", fmt.Sprintf(`{"samples":[{"time":%d,"actual":1000,"goal":1}]}`, last))
	expect(t, r, 200, "append")
	appended := []string{"X-Consistency-Token", r.Header.Get("X-Consistency-Token")}
	eventually(t, url, 200, func(b []byte) bool {
		var q pointsBody
		if json.Unmarshal(b, &q) != nil || len(q.Spread.ActualMax) == 0 {
			return false
		}
		return q.Spread.ActualMax[len(q.Spread.ActualMax)-1] == 1000
	})

	cached := do(t, "GET", url, nil)
	if src := cached.Header.Get("X-Read-Source"); !fromReadModel(src) {
		t.Fatalf("answered from %s, want the read model", src)
	}

	// The database answers with the same bytes when the aggregates are
	// not in Redis.
	id, _ := s.IDs().Decode(publicid.Factory, f.ID)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, fmt.Sprintf("rm:factory:%d:agg:*", id)).Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("aggregate keys: %v %v", keys, err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	again := do(t, "GET", url, nil, appended...) // a replica that has the append, or the leader
	if src := again.Header.Get("X-Read-Source"); fromReadModel(src) {
		t.Fatalf("answered from %s without aggregates", src)
	}
	if string(again.Body) != string(cached.Body) {
		t.Fatalf("from the database:\n%s\nfrom the read model:\n%s", again.Body, cached.Body)
	}

	for _, bad := range []struct{ query, mention string }{
		{"points=0", "points"}, {"points=10001", "points"}, {"points=x", "points"}, {"points=5&limit=5", "limit"},
	} {
		checkProblem(t, do(t, "GET", rd+"/v1/factories/"+f.ID+"/chart-data?"+bad.query, nil), 400, bad.mention)
	}
}
