package projection

import (
	"context"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// A factory's history as the original routes show it is kept in segments
// and a manifest (readmodel/history.go). An event moves the manifest to its
// version by the same rule as every key, and rewrites just the segments its
// samples fall in: the cost of an append does not grow with the history.

// applyHistory moves factory f's history to f's version, with added the
// samples the event recorded: onto the version before, it extends the
// segments; on a gap, or when a concurrent writer got in the way, it
// rebuilds the history from Postgres.
func (p *Projector) applyHistory(ctx context.Context, f domain.Factory, added []domain.Sample) error {
	man, ok, err := p.cache.Get(ctx, readmodel.HistoryKey(f.ID), false)
	if err != nil {
		return err
	}
	held := int64(0)
	if ok {
		held = man.Version
	}
	if f.Version <= held {
		return nil // a duplicate
	}
	if f.Version == held+1 && !man.Deleted {
		done, err := p.extendHistory(ctx, f, man, added)
		if err != nil || done {
			return err
		}
	}
	p.histories.Inc()
	return p.rebuildHistory(ctx, f.ID)
}

// extendHistory writes f's history at f's version from man, the manifest
// at the version before (empty when there was none), and added: in one
// guarded step, the touched segments (each only onto the version read) and
// the manifest, or nothing. It reports false when that step was refused,
// or what it read is not what the manifest says.
func (p *Projector) extendHistory(ctx context.Context, f domain.Factory, man readmodel.Entry, added []domain.Sample) (bool, error) {
	if f.Deleted() {
		// The tombstone first: from then on nothing extends the history,
		// and the segments can go.
		if _, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.ManifestRecord(f, nil)}}); err != nil {
			return false, err
		}
		return true, p.pruneSegments(ctx, readmodel.HistoryKey(f.ID), readmodel.SegmentIndexKey(f.ID), nil)
	}
	m, err := readmodel.DecodeManifest(man.Body)
	if err != nil {
		return false, nil // unreadable: rebuild it
	}
	have := make(map[int64][]domain.Sample)
	versions := make(map[string]int64)
	var keys []string
	var starts []int64
	for start := range m.Touched(added) {
		if _, ok := m.Item(start); ok {
			keys, starts = append(keys, readmodel.HistorySegmentKey(f.ID, start)), append(starts, start)
		}
	}
	entries, oks, err := p.cache.GetMany(ctx, keys)
	if err != nil {
		return false, err
	}
	for i, start := range starts {
		want, _ := m.Item(start)
		if !oks[i] || !want.Names(entries[i].ETag) {
			return false, nil // not the segment the manifest lists
		}
		if have[start], err = readmodel.DecodeSegment(entries[i].Body); err != nil {
			return false, nil
		}
		versions[keys[i]] = entries[i].Version
	}
	write, gone, next := m.Extend(p.layouts.History(f.ID), have, added)
	var w readmodel.Write
	w.Org, w.Rule, w.Index = f.OrgID, readmodel.AllExact, readmodel.SegmentIndexKey(f.ID)
	for _, s := range write {
		r, _ := readmodel.SegmentRecord(f, s)
		w.Records, w.Expected = append(w.Records, r), append(w.Expected, versions[r.Key])
	}
	w.Records, w.Expected = append(w.Records, readmodel.ManifestRecord(f, next)), append(w.Expected, man.Version)
	res, err := p.cache.Apply(ctx, w)
	if err != nil {
		return false, err
	}
	switch res[0][0] {
	case readmodel.Written:
		keys := make([]string, len(gone))
		for i, start := range gone {
			keys[i] = readmodel.HistorySegmentKey(f.ID, start)
		}
		return true, p.cache.PruneSegments(ctx, readmodel.HistoryKey(f.ID), readmodel.SegmentIndexKey(f.ID), keys)
	case readmodel.Refused:
		return false, nil
	}
	return true, nil // made by another projector, or fenced
}

// rebuildHistory writes factory id's history from Postgres, read a page
// at a time (see factoryExpected and segmentWriter).
func (p *Projector) rebuildHistory(ctx context.Context, id int64) error {
	w := p.newSegmentWriter(readmodel.HistoryKey(id), readmodel.SegmentIndexKey(id))
	err := p.factoryExpected(ctx, id, historyParts, func(ws []want) error {
		return w.write(ctx, recordsIn(ws, readmodel.SegmentIndexKey(id)))
	})
	if err == nil && len(w.listed) > 0 { // none: purged with its organization
		_, err = w.done(ctx)
	}
	if err != nil {
		return fmt.Errorf("rebuild history of factory %d: %w", id, err)
	}
	return nil
}

// recordsIn returns the records of ws that index lists.
func recordsIn(ws []want, index string) []readmodel.Record {
	var out []readmodel.Record
	for _, w := range ws {
		if w.index == index {
			out = append(out, w.Record)
		}
	}
	return out
}

// writeSegmented writes the records of one body kept in segments, given
// whole (see segmentWriter), and returns the writes' results.
func (p *Projector) writeSegmented(ctx context.Context, manifest, index string, records []readmodel.Record) ([][]int, error) {
	w := p.newSegmentWriter(manifest, index)
	if err := w.write(ctx, records); err != nil {
		return nil, err
	}
	return w.done(ctx)
}

// segmentWriter writes the records of one body kept in segments (its
// segments, then its manifest, last), given in as many steps as they are
// made, under the Newer rule, 500 at a time, each listed in index, so that
// a reader never finds the manifest ahead of its segments; done then
// prunes the segments index lists and the records did not.
type segmentWriter struct {
	p               *Projector
	manifest, index string
	listed          map[string]bool
	res             [][]int
}

func (p *Projector) newSegmentWriter(manifest, index string) *segmentWriter {
	return &segmentWriter{p: p, manifest: manifest, index: index, listed: map[string]bool{}}
}

func (w *segmentWriter) write(ctx context.Context, records []readmodel.Record) error {
	res, err := w.p.writeNewer(ctx, w.index, records)
	if err != nil {
		return err
	}
	w.res = append(w.res, res...)
	for _, rec := range records {
		w.listed[rec.Key] = true
	}
	return nil
}

// writeNewer writes records under the Newer rule, 500 at a time, each
// listed in index ("": none), fenced with the organization that owns them,
// and returns the writes' results.
func (p *Projector) writeNewer(ctx context.Context, index string, records []readmodel.Record) ([][]int, error) {
	var res [][]int
	for start := 0; start < len(records); start += 500 {
		chunk := records[start:min(start+500, len(records))]
		if chunk[0].Entry.Org <= 0 {
			return res, fmt.Errorf("%s: a record without its owner", chunk[0].Key)
		}
		r, err := p.cache.Apply(ctx, readmodel.Write{Org: chunk[0].Entry.Org, Rule: readmodel.Newer, Records: chunk, Index: index})
		if err != nil {
			return res, err
		}
		res = append(res, r...)
	}
	return res, nil
}

// done prunes what the records did not list, and returns the writes'
// results.
func (w *segmentWriter) done(ctx context.Context) ([][]int, error) {
	return w.res, w.p.pruneSegments(ctx, w.manifest, w.index, w.listed)
}

// pruneSegments deletes the segments that index lists and listed does
// not, each unless the manifest lists it when it is deleted: a rebuild
// from an older snapshot, or a deletion, never takes a segment a newer
// manifest holds.
func (p *Projector) pruneSegments(ctx context.Context, manifest, index string, listed map[string]bool) error {
	indexed, err := p.cache.Indexed(ctx, index)
	if err != nil {
		return err
	}
	var stale []string
	for _, k := range indexed {
		if !listed[k] {
			stale = append(stale, k)
		}
	}
	return p.cache.PruneSegments(ctx, manifest, index, stale)
}

// dropIndexed removes the keys an index lists, and the index: a history
// with a sample in 1970 and one in 9999 has two buckets, not the 70
// million hours in between, found without guessing their names.
func (p *Projector) dropIndexed(ctx context.Context, index string) error {
	keys, err := p.cache.Indexed(ctx, index)
	if err != nil {
		return err
	}
	if err := p.deleteKeys(ctx, keys); err != nil {
		return err
	}
	return p.cache.Delete(ctx, index)
}

// deleteKeys deletes keys, a thousand at a time.
func (p *Projector) deleteKeys(ctx context.Context, keys []string) error {
	for start := 0; start < len(keys); start += 1000 {
		if err := p.cache.Delete(ctx, keys[start:min(start+1000, len(keys))]...); err != nil {
			return err
		}
	}
	return nil
}
