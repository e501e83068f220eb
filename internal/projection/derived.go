package projection

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Derived bodies are those built from many aggregates: the
// organizations' collections of the original routes (a factory's history
// is not one: see history.go). Events only mark them dirty; RebuildDirty rebuilds each once
// for however many events marked it. A sprocket event also marks which
// member changed, so that the collection, which grows to tens of thousands
// of items, is patched with just those instead of read whole.

func orgSprockets(org int64) string { return "sprockets:" + strconv.FormatInt(org, 10) }
func orgFactories(org int64) string { return "factories:" + strconv.FormatInt(org, 10) }

// derivedPause is how many times its own length the pause after a round of
// rebuilds lasts at least.
const derivedPause = 19

// RunDerived rebuilds dirty bodies until ctx is done: at once when this
// projector marks something dirty and the last round ended long enough ago,
// so that a burst of events costs one rebuild per body. Rounds start at
// most once per interval, and a round is followed by a pause of at least
// 19 times its length: however large the collections grow, rebuilding them
// takes at most a twentieth of the time and never starves event application
// or the writes that share the machine. (Under a sustained create load, a
// tenth cost about 6% of create throughput.) It also polls every interval
// for marks left by other projectors.
//
// The length that counts is the shorter of this round's and that of the
// last successful round that rebuilt something; a failed round, or one with
// nothing to do, counts for nothing. A round that waited seconds on a
// stalled Redis did no more work than usual, and must not keep every
// collection stale for a minute afterwards; bodies that are slow to build
// every time still get their budget, however many empty rounds come in
// between.
func (p *Projector) RunDerived(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last time.Duration // the last successful round's length that rebuilt something
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.marked:
		case <-t.C:
		}
		start := time.Now()
		rebuilt, err := p.RebuildDirty(ctx)
		took := time.Since(start)
		p.rounds.Observe(took.Seconds())
		pause := interval
		switch {
		case err != nil:
			if ctx.Err() == nil {
				p.log.Warn("rebuild dirty bodies", "err", err)
			}
		case rebuilt > 0:
			if last == 0 {
				last = took
			}
			pause = max(interval-took, derivedPause*min(took, last))
			last = took
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
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

// RebuildDirty brings every body marked dirty up to date, clears the marks
// it took care of, unless they were marked again meanwhile, and returns how
// many bodies it rebuilt. It stops at the first error; the marks of bodies
// not rebuilt stay for the next round, as do those of a body another
// projector moved meanwhile.
func (p *Projector) RebuildDirty(ctx context.Context) (int, error) {
	marks, err := p.cache.Dirty(ctx)
	if err != nil {
		return 0, err
	}
	rebuilt := 0
	for name, d := range byBody(marks) {
		done, err := p.rebuildDerived(ctx, name, d.members)
		if err != nil {
			return rebuilt, fmt.Errorf("rebuild %s: %w", name, err)
		}
		if !done {
			continue
		}
		if err := p.cache.Clear(ctx, d.marks); err != nil {
			return rebuilt, err
		}
		rebuilt++
		p.derived.Inc()
	}
	return rebuilt, nil
}

// dirtyBody is what the marks say of one derived body: the marks to clear
// once it is rebuilt, and the members recorded as changed.
type dirtyBody struct {
	marks   map[string]string
	members []int64
}

func byBody(marks map[string]string) map[string]*dirtyBody {
	out := map[string]*dirtyBody{}
	for field, mark := range marks {
		name, member := readmodel.SplitMark(field)
		d := out[name]
		if d == nil {
			d = &dirtyBody{marks: map[string]string{}}
			out[name] = d
		}
		d.marks[field] = mark
		if member > 0 {
			d.members = append(d.members, member)
		}
	}
	return out
}

// rebuildDerived brings the body name up to date; members are those
// recorded as changed, when known. It reports whether the body it wrote is
// the one Redis now holds: if not, another projector wrote a newer one
// meanwhile, which may lack this round's changes.
func (p *Projector) rebuildDerived(ctx context.Context, name string, members []int64) (bool, error) {
	kind, idText, _ := strings.Cut(name, ":")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		kind = "" // no body this projector knows
	}
	var res [][]int
	switch kind {
	case "sprockets":
		res, err = p.refreshOrgSprockets(ctx, id, members)
	case "factories":
		res, err = p.rebuildOrgFactories(ctx, id)
	default:
		p.log.Warn("unknown dirty mark dropped", "name", name)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range res {
		for _, k := range r {
			if k != readmodel.Written && k != readmodel.Fenced {
				return false, nil
			}
		}
	}
	return true, nil
}

// patchable reports whether a collection of n members is best patched with
// changed of them: a patch reads each by its id, and past a quarter of the
// collection reading it whole costs less.
func patchable(changed, n int) bool { return changed <= max(n/4, 100) }

// refreshOrgSprockets patches the members that changed into the org's
// sprocket collection, or builds it whole when there is nothing to patch,
// they are not known, or they are too many.
func (p *Projector) refreshOrgSprockets(ctx context.Context, org int64, members []int64) ([][]int, error) {
	if len(members) > 0 {
		base, ok, err := p.cache.Get(ctx, readmodel.OrgSprocketsKey(org), true)
		if err != nil {
			return nil, err
		}
		if ok && !base.Deleted && patchable(len(members), base.Members.Len()) {
			changed, err := p.src.SprocketSpecs(ctx, org, members)
			if err != nil {
				return nil, err
			}
			if rec, ok := readmodel.PatchOrgSprockets(org, base, changed); ok {
				return p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Exact,
					Records: []readmodel.Record{rec}, Expected: []int64{base.Version}})
			}
			p.log.Warn("collection body unreadable, building it whole", "key", readmodel.OrgSprocketsKey(org))
		}
	}
	all, err := p.src.SprocketSpecsOfOrg(ctx, org)
	if err != nil {
		return nil, err
	}
	return p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.OrgSprocketsRecord(org, all)}})
}

func (p *Projector) rebuildOrgFactories(ctx context.Context, org int64) ([][]int, error) {
	all, err := p.src.FactoriesOfOrg(ctx, org)
	if err != nil {
		return nil, err
	}
	return p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.OrgFactoriesRecord(org, all)}})
}
