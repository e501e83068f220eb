package progress

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := New("relay", 10*time.Second, reg)
	now := time.Unix(1000, 0)
	w.now = func() time.Time { return now }
	w.since = now
	stuck := func() bool { return w.Check(context.Background()) != nil }
	gauge := func(v string) string {
		return `# HELP sprockets_pipeline_stuck 1 while work has waited for the stage, and none was done, for longer than STUCK_AFTER.
# TYPE sprockets_pipeline_stuck gauge
sprockets_pipeline_stuck{stage="relay"} ` + v + "\n"
	}

	// Idle for long: not stuck, nothing waits.
	now = now.Add(time.Hour)
	if stuck() {
		t.Fatal("an idle stage is not stuck")
	}
	// Work arrives after the idle hour: judged from its arrival.
	w.Waiting(0)
	w.Waiting(5)
	now = now.Add(5 * time.Second)
	if stuck() {
		t.Fatal("work waiting for 5s of a 10s bound is not stuck")
	}
	// Busy: work waits, but some is done within the bound each time.
	for range 5 {
		now = now.Add(8 * time.Second)
		w.Done()
		w.Waiting(5)
		if stuck() {
			t.Fatal("a stage that keeps doing work is not stuck")
		}
	}
	// Stuck: work waits and nothing is done past the bound.
	now = now.Add(11 * time.Second)
	if !stuck() {
		t.Fatal("5 waiting and nothing done for 11s: stuck")
	}
	// It shows in the metric too.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(gauge("1")), "sprockets_pipeline_stuck"); err != nil {
		t.Error(err)
	}
	// Work done again: not stuck.
	w.Done()
	if stuck() {
		t.Fatal("after progress, not stuck")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(gauge("0")), "sprockets_pipeline_stuck"); err != nil {
		t.Error(err)
	}
}
