// Package progress tells a stage of the pipeline that is stuck from one
// that is idle or busy. A stage is stuck when work has been waiting for it
// without progress for longer than a bound: the projector with events it
// settles none of, the outbox relay with a row older than the bound. It shows
// in the stage's readiness and in the metric sprockets_pipeline_stuck, so
// that a pipeline that stopped is never silent.
package progress

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Watch follows one stage.
type Watch struct {
	stage string
	after time.Duration
	now   func() time.Time

	mu      sync.Mutex
	waiting int64     // work waiting, as last told
	since   time.Time // when the stage last did work, or last had none waiting
}

// New returns a watch of stage that calls it stuck after after without
// progress; its gauge is registered with reg.
func New(stage string, after time.Duration, reg prometheus.Registerer) *Watch {
	w := &Watch{stage: stage, after: after, now: time.Now}
	w.since = w.now()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sprockets_pipeline_stuck",
		Help:        "1 while work has waited for the stage, and none was done, for longer than STUCK_AFTER.",
		ConstLabels: prometheus.Labels{"stage": stage},
	}, func() float64 {
		if w.Check(context.Background()) != nil {
			return 1
		}
		return 0
	}))
	return w
}

// Waiting tells the watch how much work waits for the stage now.
func (w *Watch) Waiting(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n <= 0 {
		w.since = w.now()
	}
	w.waiting = n
}

// WaitingSince tells the watch how much work waits for the stage now, and
// since when the oldest of it has: for a stage that shares its work with
// other instances (the outbox relays), whose own progress says nothing of
// the others'.
func (w *Watch) WaitingSince(n int64, oldest time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting, w.since = n, oldest
	if n <= 0 {
		w.since = w.now()
	}
}

// Done tells the watch that the stage did some work.
func (w *Watch) Done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since = w.now()
}

// Check returns an error while the stage is stuck (a readiness check).
func (w *Watch) Check(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if idle := w.now().Sub(w.since); w.waiting > 0 && idle > w.after {
		return fmt.Errorf("%s is stuck: %d waiting, without progress for %s", w.stage, w.waiting, idle.Round(time.Second))
	}
	return nil
}
