package projection

import (
	"context"
	"sync"
	"time"

	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// The organizations' live logs (GET /v1/stream) get each change once its
// keys are written: a reader that sends an event to a dashboard serves the
// same version or a newer one to the read that follows it.

// Defaults of KeepLive.
const (
	DefaultLiveRetention  = 10 * time.Minute
	DefaultLiveMaxEntries = 10_000
)

// maxLiveSamples bounds the samples one change carries (about 30 bytes
// each): an append of more is logged as factory.rebuilt, so that an entry
// stays within tens of kilobytes and a log within LIVE_MAX_ENTRIES of them.
const maxLiveSamples = 1000

type liveLogs struct {
	retention  time.Duration
	maxEntries int

	mu sync.Mutex
	// gaps are the organizations whose log missed changes: the changes
	// were written, their logging failed. The next changes logged for one
	// follow a reset, which tells its streams to read again.
	gaps map[int64]bool
}

// KeepLive sets how long, and how many, changes each organization's live
// log keeps for streams that resume (DefaultLiveRetention,
// DefaultLiveMaxEntries until it is called).
func (p *Projector) KeepLive(retention time.Duration, maxEntries int) {
	p.live.retention, p.live.maxEntries = retention, maxEntries
}

// liveChanges returns what event e, applied with outcome, logs.
func (p *Projector) liveChanges(e events.Envelope, outcome string) []readmodel.Change {
	switch e.AggregateType {
	case events.Sprocket:
		pl, err := e.Sprocket()
		if err != nil {
			return nil
		}
		typ := readmodel.SprocketUpdated
		if e.Type == events.Created {
			typ = readmodel.SprocketCreated
		}
		return []readmodel.Change{readmodel.SprocketChange(p.ids, typ, pl.Sprocket)}
	case events.Factory:
		pl, err := e.Factory()
		if err != nil {
			return nil
		}
		f := pl.Factory
		var out []readmodel.Change
		switch {
		case outcome == Rebuilt && !f.Deleted():
			// Events before this one were missed: what they did to the
			// history is not known here.
			return []readmodel.Change{readmodel.FactoryChange(p.ids, readmodel.FactoryRebuilt, f, nil)}
		case e.Type == events.Created:
			out = append(out, readmodel.FactoryChange(p.ids, readmodel.FactoryCreated, f, nil))
		case e.Type != events.SamplesAppended:
			out = append(out, readmodel.FactoryChange(p.ids, readmodel.FactoryUpdated, f, nil))
		}
		switch {
		case len(pl.Samples) > maxLiveSamples && !f.Deleted():
			// The log keeps what a dashboard needs to follow, not bulk
			// loads: a large append says to read the chart again.
			out = append(out, readmodel.FactoryChange(p.ids, readmodel.FactoryRebuilt, f, nil))
		case len(pl.Samples) > 0 && !f.Deleted():
			out = append(out, readmodel.FactoryChange(p.ids, readmodel.FactorySamples, f, pl.Samples))
		}
		return out
	}
	return nil // an organization's deletion ends its tokens, and so its streams
}

// logLive logs the changes of the events of a batch that were applied
// (errs[i] nil). When the log cannot be written, those events get its
// error: they are delivered again, found applied, and logged then, unless
// a newer change of their aggregate was logged first. So their
// organizations' next changes follow a reset.
func (p *Projector) logLive(ctx context.Context, envs []events.Envelope, outcomes []string, errs []error) {
	byOrg := map[int64][]readmodel.Change{}
	var logged []int
	for i, e := range envs {
		if errs[i] != nil {
			continue
		}
		if cs := p.liveChanges(e, outcomes[i]); len(cs) > 0 {
			byOrg[e.OrgID] = append(byOrg[e.OrgID], cs...)
			logged = append(logged, i)
		}
	}
	if len(byOrg) == 0 {
		return
	}
	p.live.mu.Lock()
	for org := range byOrg {
		if p.live.gaps[org] {
			byOrg[org] = append([]readmodel.Change{readmodel.LiveGap(p.now())}, byOrg[org]...)
		}
	}
	p.live.mu.Unlock()
	err := p.cache.LogLive(ctx, p.live.retention, p.live.maxEntries, byOrg)
	p.live.mu.Lock()
	defer p.live.mu.Unlock()
	if p.live.gaps == nil {
		p.live.gaps = map[int64]bool{}
	}
	for org := range byOrg {
		if err != nil {
			p.live.gaps[org] = true
		} else {
			delete(p.live.gaps, org)
		}
	}
	if err != nil {
		for _, i := range logged {
			errs[i] = err
		}
	}
}
