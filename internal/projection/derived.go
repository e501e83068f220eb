package projection

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Derived bodies are those built from many aggregates: the
// organizations' lists of the original routes (a factory's history is not
// one: see history.go). Events only mark them dirty; RebuildDirty brings
// each up to date once for however many events marked it. A sprocket event
// also marks which sprocket changed, so that only the segments of the
// list those fall in are read again (readmodel/sprockets.go).

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

// refreshOrgSprockets rewrites the segments of org's sprocket list that
// the members that changed fall in, read again from Postgres by range, and
// the manifest, in one all-or-nothing write. It builds the list whole when
// there is none, the members are not known, the manifest is unreadable, or
// another projector wrote in between.
func (p *Projector) refreshOrgSprockets(ctx context.Context, org int64, members []int64) ([][]int, error) {
	if len(members) > 0 {
		man, ok, err := p.cache.Get(ctx, readmodel.SprocketListKey(org), false)
		if err != nil {
			return nil, err
		}
		m, merr := readmodel.DecodeManifest(man.Body)
		if merr != nil {
			p.log.Warn("sprocket list unreadable, building it whole", "key", readmodel.SprocketListKey(org), "err", merr)
		}
		if ok && merr == nil {
			res, done, err := p.patchSprocketList(ctx, org, man, m, members)
			if err != nil || done {
				return res, err
			}
		}
	}
	all, err := p.src.SprocketSpecsOfOrg(ctx, org)
	if err != nil {
		return nil, err
	}
	return p.writeSegmented(ctx, readmodel.SprocketListKey(org), readmodel.SprocketIndexKey(org), readmodel.SprocketListRecords(p.layouts, org, all))
}

// patchSprocketList rewrites the segments of the list man (laid out as m)
// that members fall in, those whose content changed, at the list's new
// version. done is false when the list must be built whole (a segment is
// not the one m lists, or another projector wrote in between), or, with
// res holding Dropped, when the round must be done again.
func (p *Projector) patchSprocketList(ctx context.Context, org int64, man readmodel.Entry, m readmodel.Manifest, members []int64) (res [][]int, done bool, err error) {
	touched := map[int64]bool{}
	for _, id := range members {
		touched[m.SegmentOf(id)] = true
	}
	type segment struct {
		start int64
		held  readmodel.Entry // zero when m does not list it
		all   []domain.Sprocket
	}
	var segs []segment
	version := man.Version
	for start := range touched {
		seg := segment{start: start}
		if it, ok := m.Item(start); ok {
			e, ok, err := p.cache.Get(ctx, readmodel.SprocketSegmentKey(org, start), true)
			if err != nil {
				return nil, false, err
			}
			if !ok || !it.Names(e.ETag) {
				return nil, false, nil // not the segment m lists
			}
			seg.held, version = e, version-e.Members.Sum()
		}
		lo, hi := m.Range(start)
		if seg.all, err = p.src.SprocketSpecsInRange(ctx, org, lo, hi); err != nil {
			return nil, false, err
		}
		version += readmodel.VersionSum(seg.all)
		segs = append(segs, seg)
	}
	if version == man.Version {
		return nil, true, nil // nothing changed since m
	}
	items := make(map[int64]readmodel.ManifestItem, len(m)+len(segs))
	for _, it := range m {
		items[it.Start] = it
	}
	w := readmodel.Write{Org: org, Rule: readmodel.AllExact, Index: readmodel.SprocketIndexKey(org)}
	var gone []string
	layout := p.layouts.Sprockets(org)
	for _, seg := range segs {
		delete(items, seg.start)
		kept := false
		for _, run := range layout.SprocketRuns(seg.all) {
			r, it := readmodel.SprocketSegmentRecord(org, run.Start, version, run.Sprockets)
			items[run.Start] = it
			if was, ok := m.Item(run.Start); ok && was.Hash == it.Hash {
				kept = kept || run.Start == seg.start
				continue // as it was: not written again
			}
			expected := int64(0)
			if run.Start == seg.start {
				expected, kept = seg.held.Version, true
			}
			w.Records, w.Expected = append(w.Records, r), append(w.Expected, expected)
		}
		if _, listed := m.Item(seg.start); listed && !kept {
			gone = append(gone, readmodel.SprocketSegmentKey(org, seg.start)) // the head, now wholly after a new start
		}
	}
	next := make(readmodel.Manifest, 0, len(items))
	for _, it := range items {
		next = append(next, it)
	}
	slices.SortFunc(next, func(a, b readmodel.ManifestItem) int { return cmp.Compare(a.Start, b.Start) })
	w.Records, w.Expected = append(w.Records, readmodel.SprocketListManifest(org, version, next)), append(w.Expected, man.Version)
	if res, err = p.cache.Apply(ctx, w); err != nil {
		return nil, false, err
	}
	switch res[0][0] {
	case readmodel.Refused:
		return nil, false, nil
	case readmodel.Written:
		return res, true, p.cache.PruneSegments(ctx, readmodel.SprocketListKey(org), readmodel.SprocketIndexKey(org), gone)
	}
	// Dropped: another projector wrote this version or a newer one first,
	// which may lack some of this round's changes; the marks stay, and the
	// next round patches what is still missing. Or fenced.
	return res, true, nil
}

func (p *Projector) rebuildOrgFactories(ctx context.Context, org int64) ([][]int, error) {
	all, err := p.src.FactoriesOfOrg(ctx, org)
	if err != nil {
		return nil, err
	}
	return p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.OrgFactoriesRecord(org, all)}})
}
