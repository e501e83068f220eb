package projection

import (
	"context"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// want is a record the read model should hold, and how to compare it.
type want struct {
	readmodel.Record
	// bodyOnly: the record's version is not compared, only its content
	// (see factoryWants).
	bodyOnly bool
	// index is the set the record's key is listed in, if any.
	index string
}

// expected calls emit with every record the read model should hold for org,
// built from one consistent read per aggregate kind.
func (p *Projector) expected(ctx context.Context, org int64, emit func([]want) error) error {
	sprockets, err := p.src.SprocketsOfOrg(ctx, org)
	if err != nil {
		return err
	}
	var batch []want
	for _, s := range sprockets {
		for _, r := range readmodel.SprocketRecords(p.ids, s).All() {
			batch = append(batch, want{Record: r})
		}
	}
	for _, r := range readmodel.SprocketListRecords(p.layouts, org, sprockets) {
		batch = append(batch, want{Record: r, bodyOnly: r.Key != readmodel.SprocketListKey(org), index: readmodel.SprocketIndexKey(org)})
	}
	if err := emit(batch); err != nil {
		return err
	}
	factories, err := p.src.FactoriesOfOrg(ctx, org)
	if err != nil {
		return err
	}
	for _, f := range factories {
		if err := p.factoryExpected(ctx, f.ID, allParts, emit); err != nil {
			return err
		}
	}
	return emit([]want{{Record: readmodel.OrgFactoriesRecord(org, factories)}})
}

// historyPage is how many samples one read of a history returns: about
// 1 MB, read, turned into records and compared before the next.
// Projector.historyPage holds it (tests read in smaller pages).
const historyPage = 50_000

// factoryExpected calls emit with the records (of parts) the read model
// should hold for factory id, as of the version its row has when read: its
// history is read a page at a time (samples are never changed, and each
// carries the version that added it), and the records are emitted as they
// are complete, so that a long history is never held whole, and a check
// can pause between its pages. One whose emit writes what it is given
// leaves, when it fails halfway, records of the new version beside a
// manifest of the old: readers find the segments are not the manifest's
// and answer from Postgres until the rebuild is done again.
func (p *Projector) factoryExpected(ctx context.Context, id int64, parts factoryParts, emit func([]want) error) error {
	f, err := p.src.Factory(ctx, id)
	if isNotFound(err) {
		return nil // purged with its organization since the list was read
	}
	if err != nil {
		return err
	}
	b := p.newFactoryWants(f, parts)
	page := max(p.historyPage, 1)
	for after := int64(-1); !f.Deleted(); {
		samples, err := p.src.SamplesAsOf(ctx, f.ID, f.Version, after, page)
		if err != nil {
			return err
		}
		if ws := b.add(samples); len(ws) > 0 {
			if err := emit(ws); err != nil {
				return err
			}
		}
		if len(samples) < page {
			break
		}
		after = samples[len(samples)-1].Time
	}
	return emit(b.finish())
}

// factoryParts are kinds of a factory's records: its buckets, its
// aggregates, its history's segments and manifest. Its own record is
// always made.
type factoryParts uint8

const (
	bucketParts factoryParts = 1 << iota
	aggregateParts
	historyParts
	allParts = bucketParts | aggregateParts | historyParts
)

// factoryWants makes a factory's records (of parts) from its samples,
// given in time order in any number of steps: each record is made once no
// later sample can change it. Buckets, aggregates and segments carry the
// factory's version, not that of the last event that touched them, which a
// rebuild cannot know; only their content counts.
type factoryWants struct {
	f      domain.Factory
	ids    *publicid.Codec
	layout readmodel.Layout
	parts  factoryParts

	bucket     int64 // of the samples in bucketRun
	bucketRun  []domain.Sample
	aggregates []openAggregate // one per readmodel.AggregateWidths
	segStart   int64           // of the samples in segRun
	segRun     []domain.Sample
	manifest   readmodel.Manifest
}

// openAggregate is the aggregate key of one width that the last sample
// fell in, and its buckets so far.
type openAggregate struct {
	width, chunk int64
	buckets      []domain.Aggregate
}

func (p *Projector) newFactoryWants(f domain.Factory, parts factoryParts) *factoryWants {
	b := &factoryWants{f: f, ids: p.ids, layout: p.layouts.History(f.ID), parts: parts, segStart: readmodel.HeadSegment}
	if parts&aggregateParts != 0 {
		for _, w := range readmodel.AggregateWidths {
			b.aggregates = append(b.aggregates, openAggregate{width: w})
		}
	}
	return b
}

// add takes the next samples, later than every one before, and returns
// the records they completed, grouped by kind (a rebuild writes each
// group's records together, listed in their index).
func (b *factoryWants) add(samples []domain.Sample) []want {
	var out, aggregates, segments []want
	for _, s := range samples {
		if b.parts&bucketParts != 0 {
			bucket := readmodel.Bucket(s.Time)
			if len(b.bucketRun) > 0 && bucket != b.bucket {
				out = append(out, b.bucketWant())
			}
			b.bucket, b.bucketRun = bucket, append(b.bucketRun, s)
		}
		for i := range b.aggregates { // none unless aggregateParts
			a := &b.aggregates[i]
			chunk := readmodel.AggregateChunkOf(a.width, s.Time)
			if len(a.buckets) > 0 && chunk != a.chunk {
				aggregates = append(aggregates, b.aggregateWant(a))
			}
			a.chunk = chunk
			start := s.Time - s.Time%a.width
			if n := len(a.buckets); n == 0 || a.buckets[n-1].Start != start {
				a.buckets = append(a.buckets, domain.Aggregate{Start: start})
			}
			a.buckets[len(a.buckets)-1].Add(s)
		}
		if b.parts&historyParts != 0 {
			if b.layout.StartsSegment(s.Time) {
				if len(b.segRun) > 0 {
					segments = append(segments, b.segmentWant())
				}
				b.segStart = s.Time
			}
			b.segRun = append(b.segRun, s)
		}
	}
	return append(append(out, aggregates...), segments...)
}

// finish returns the records still open, then the factory's and its
// history's manifest. The factory's record comes after every bucket and
// aggregate: a reader uses them only once it finds the factory's record,
// so a read model being rebuilt (after Redis lost it) never answers a
// chart from part of them.
func (b *factoryWants) finish() []want {
	var out []want
	if len(b.bucketRun) > 0 {
		out = append(out, b.bucketWant())
	}
	for i := range b.aggregates {
		if len(b.aggregates[i].buckets) > 0 {
			out = append(out, b.aggregateWant(&b.aggregates[i]))
		}
	}
	if len(b.segRun) > 0 {
		out = append(out, b.segmentWant())
	}
	out = append(out, want{Record: readmodel.FactoryRecord(b.ids, b.f)})
	if b.parts&historyParts == 0 {
		return out
	}
	var m readmodel.Manifest
	if !b.f.Deleted() {
		m = b.manifest
	}
	return append(out, want{Record: readmodel.ManifestRecord(b.f, m), index: readmodel.SegmentIndexKey(b.f.ID)})
}

// The records made from one run of samples encode it at once: the run's
// slice is then used again.

func (b *factoryWants) bucketWant() want {
	r := readmodel.BucketRecord(b.f.ID, b.f.OrgID, b.bucket, b.f.Version, b.bucketRun)
	b.bucketRun = b.bucketRun[:0]
	return want{Record: r, bodyOnly: true, index: readmodel.BucketIndexKey(b.f.ID)}
}

func (b *factoryWants) aggregateWant(a *openAggregate) want {
	r := readmodel.AggregateRecord(b.f, readmodel.AggregateKey(b.f.ID, a.width, a.chunk), a.buckets)
	a.buckets = a.buckets[:0]
	return want{Record: r, bodyOnly: true, index: readmodel.AggregateIndexKey(b.f.ID)}
}

func (b *factoryWants) segmentWant() want {
	r, it := readmodel.SegmentRecord(b.f, readmodel.Segment{Start: b.segStart, Samples: b.segRun})
	b.manifest = append(b.manifest, it)
	b.segRun = b.segRun[:0]
	return want{Record: r, bodyOnly: true, index: readmodel.SegmentIndexKey(b.f.ID)}
}

// Rebuild rewrites every key of every live organization from Postgres,
// under the Newer rule so that it never rolls back a key a concurrent
// projector moved further, fences the deleted organizations, then marks the
// read model built. It returns how many keys it wrote.
func (p *Projector) Rebuild(ctx context.Context) (int, error) {
	deleted, err := p.src.DeletedOrgIDs(ctx)
	if err != nil {
		return 0, err
	}
	if err := p.cache.Fence(ctx, deleted...); err != nil {
		return 0, err
	}
	orgs, err := p.src.OrgIDs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, org := range orgs {
		err := p.expected(ctx, org, func(ws []want) error {
			// Each run of records that share an index (or none) is written
			// together.
			for start := 0; start < len(ws); {
				end := start + 1
				for end < len(ws) && ws[end].index == ws[start].index {
					end++
				}
				res, err := p.writeNewer(ctx, ws[start].index, recordsIn(ws[start:end], ws[start].index))
				if err != nil {
					return err
				}
				for _, r := range res {
					for _, one := range r {
						if one == readmodel.Written {
							n++
						}
					}
				}
				start = end
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("rebuild org %d: %w", org, err)
		}
	}
	return n, p.cache.MarkBuilt(ctx)
}

// EnsureBuilt rebuilds everything when the read model has not been built
// since Redis last lost its data (a flush or a restart without
// persistence), and reports whether it did.
func (p *Projector) EnsureBuilt(ctx context.Context) (bool, error) {
	built, err := p.cache.Built(ctx)
	if err != nil || built {
		return false, err
	}
	p.log.Info("read model missing, rebuilding from Postgres")
	if err := p.cache.DropOldShapes(ctx); err != nil {
		return false, err
	}
	n, err := p.Rebuild(ctx)
	if err != nil {
		return false, err
	}
	p.log.Info("read model rebuilt", "keys", n)
	return true, nil
}
