package projection

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Derived bodies are those built from a whole history or from many
// aggregates: the compatibility factory bodies and the organizations'
// collections. Events only mark them dirty; RebuildDirty rebuilds each once
// for however many events marked it.

func orgSprockets(org int64) string { return "sprockets:" + strconv.FormatInt(org, 10) }
func orgFactories(org int64) string { return "factories:" + strconv.FormatInt(org, 10) }
func factoryCompat(id int64) string { return "factory:" + strconv.FormatInt(id, 10) }

// RunDerived rebuilds dirty bodies until ctx is done: at once when this
// projector marks something dirty and the last round ended long enough ago,
// so that a burst of events costs one rebuild per body. Rounds start at
// most once per interval, and a round that took d is followed by a pause of
// at least 9d: however large the collections grow, rebuilding them takes at
// most a tenth of the projector's time and never starves event application.
// It also polls every interval for marks left by other projectors.
func (p *Projector) RunDerived(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.marked:
		case <-t.C:
		}
		start := time.Now()
		if err := p.RebuildDirty(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rebuild dirty bodies", "err", err)
		}
		took := time.Since(start)
		p.rounds.Observe(took.Seconds())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(max(interval-took, 9*took)):
		}
	}
}

// wake tells RunDerived that this projector marked bodies dirty.
func (p *Projector) wake() {
	select {
	case p.marked <- struct{}{}:
	default:
	}
}

// RebuildDirty rebuilds every body marked dirty and clears its mark unless
// it was marked again meanwhile. It stops at the first error; the marks of
// bodies not rebuilt stay for the next round.
func (p *Projector) RebuildDirty(ctx context.Context) error {
	marks, err := p.cache.Dirty(ctx)
	if err != nil {
		return err
	}
	for name, mark := range marks {
		if err := p.rebuildDerived(ctx, name); err != nil {
			return fmt.Errorf("rebuild %s: %w", name, err)
		}
		if err := p.cache.Clear(ctx, name, mark); err != nil {
			return err
		}
		p.derived.Inc()
	}
	return nil
}

func (p *Projector) rebuildDerived(ctx context.Context, name string) error {
	kind, idText, ok := strings.Cut(name, ":")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !ok || err != nil {
		p.log.Warn("unknown dirty mark dropped", "name", name)
		return nil
	}
	switch kind {
	case "sprockets":
		return p.rebuildOrgSprockets(ctx, id)
	case "factories":
		return p.rebuildOrgFactories(ctx, id)
	case "factory":
		return p.rebuildFactoryCompat(ctx, id)
	}
	p.log.Warn("unknown dirty mark dropped", "name", name)
	return nil
}

func (p *Projector) rebuildOrgSprockets(ctx context.Context, org int64) error {
	all, err := p.src.SprocketSpecsOfOrg(ctx, org)
	if err != nil {
		return err
	}
	_, err = p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.OrgSprocketsRecord(org, all)}})
	return err
}

func (p *Projector) rebuildOrgFactories(ctx context.Context, org int64) error {
	all, samples, err := p.src.FactoriesWithSamples(ctx, org)
	if err != nil {
		return err
	}
	_, err = p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.OrgFactoriesRecord(org, all, samples)}})
	return err
}

func (p *Projector) rebuildFactoryCompat(ctx context.Context, id int64) error {
	f, samples, err := p.src.FactoryHistory(ctx, id)
	if isNotFound(err) {
		return nil // never existed here: nothing to show
	}
	if err != nil {
		return err
	}
	_, err = p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Newer, Records: readmodel.FactoryCompatRecords(f, samples)})
	return err
}
