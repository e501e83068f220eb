package projection

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// antiEntropy counts what the background check finds and repairs.
type antiEntropy struct {
	repairs  prometheus.Counter
	passes   prometheus.Counter
	lastPass prometheus.Gauge
	// skipped counts keys that differed in both comparisons but moved in
	// between, or before their repair: left to the next check.
	skipped prometheus.Counter
}

func newAntiEntropy(reg prometheus.Registerer) antiEntropy {
	a := antiEntropy{
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_projector_repairs_total", Help: "Keys the background check found different from Postgres, and rewrote.",
		}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_projector_antientropy_passes_total", Help: "Passes of the background check over every organization.",
		}),
		lastPass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_projector_antientropy_last_pass_timestamp_seconds", Help: "When the background check last finished a pass.",
		}),
	}
	a.skipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sprockets_projector_antientropy_skipped_total",
		Help: "Keys that differed from Postgres in both of the background check's comparisons but were written in between (so left alone, not repaired): a key written during every check is never judged.",
	})
	reg.MustRegister(a.repairs, a.passes, a.lastPass, a.skipped)
	return a
}

// RunAntiEntropy compares the read model with Postgres in the background,
// one organization at a time, and rewrites the keys that still differ after
// settle (a write in flight is not drift): a drift from a cause nobody has
// found yet heals without an operator. After each step of a check (a
// factory's history read, or 500 keys compared) it pauses 19 times as long
// as the step took, so the checks take at most a twentieth of the
// projector's time, as the derived rebuilds do, however large one
// organization is; a pass over every organization starts at most once per
// every. It returns when ctx is
// done. Keys that no organization should have are left to `projector
// verify`: finding them means scanning every key in Redis.
func (p *Projector) RunAntiEntropy(ctx context.Context, settle, every time.Duration) error {
	wait := every // the first pass waits too: at start the read model may be being rebuilt
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		start := time.Now()
		if err := p.antiEntropyPass(ctx, settle); err != nil && ctx.Err() == nil {
			p.log.Warn("background check of the read model", "err", err)
		}
		wait = max(every-time.Since(start), every/10)
	}
}

func (p *Projector) antiEntropyPass(ctx context.Context, settle time.Duration) error {
	orgs, err := p.src.OrgIDs(ctx)
	if err != nil {
		return err
	}
	for _, org := range orgs {
		repaired, err := p.healOrg(ctx, org, settle)
		if err != nil {
			return err
		}
		if repaired > 0 {
			p.log.Warn("the read model differed from Postgres; repaired", "org", org, "keys", repaired)
			p.checks.repairs.Add(float64(repaired))
		}
	}
	p.checks.passes.Inc()
	p.checks.lastPass.SetToCurrentTime()
	return nil
}

// healOrg checks org's keys, pausing after each step, and, for those that
// still differ after settle, rewrites them. It returns how many keys it
// rewrote.
func (p *Projector) healOrg(ctx context.Context, org int64, settle time.Duration) (int, error) {
	pace := func(took time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(derivedPause * took):
			return nil
		}
	}
	first, err := p.diffOrg(ctx, org, nil, false, pace)
	if err != nil || len(first) == 0 {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(settle):
	}
	again, err := p.diffOrg(ctx, org, nil, true, pace)
	if err != nil {
		return 0, err
	}
	still, moved := persisting(first, again)
	repaired, movedSince, err := p.repair(ctx, still)
	p.checks.skipped.Add(float64(moved + movedSince))
	return repaired, err
}
