package projection

import (
	"context"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/domain"
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
		f, samples, err := p.src.FactoryHistory(ctx, domain.AnyOrg, f.ID)
		if isNotFound(err) {
			continue // purged with its organization since the list was read
		}
		if err != nil {
			return err
		}
		if err := emit(p.factoryWants(f, samples)); err != nil {
			return err
		}
	}
	return emit([]want{{Record: readmodel.OrgFactoriesRecord(org, factories)}})
}

// factoryWants lists a factory's records: buckets and aggregates first, then its key, then
// its history's segments and manifest. Buckets, aggregates and segments carry the
// version of the last event that touched them, which a rebuild cannot
// know; only their content counts.
func (p *Projector) factoryWants(f domain.Factory, samples []domain.Sample) []want {
	var out []want
	if !f.Deleted() {
		for b, s := range readmodel.GroupByBucket(samples) {
			out = append(out, want{Record: readmodel.BucketRecord(f.ID, f.OrgID, b, f.Version, s), bodyOnly: true,
				index: readmodel.BucketIndexKey(f.ID)})
		}
		for _, r := range readmodel.AggregateRecords(f, samples) {
			out = append(out, want{Record: r, bodyOnly: true, index: readmodel.AggregateIndexKey(f.ID)})
		}
	}
	out = append(out, want{Record: readmodel.FactoryRecord(p.ids, f)})
	for _, r := range readmodel.HistoryRecords(p.layouts, f, samples) {
		out = append(out, want{Record: r, bodyOnly: r.Key != readmodel.HistoryKey(f.ID), index: readmodel.SegmentIndexKey(f.ID)})
	}
	return out
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
			// Records go in chunks of 500 that share an index (or none).
			for start := 0; start < len(ws); {
				end := start + 1
				for end < len(ws) && end-start < 500 && ws[end].index == ws[start].index {
					end++
				}
				records := make([]readmodel.Record, end-start)
				for i, w := range ws[start:end] {
					records[i] = w.Record
				}
				res, err := p.cache.Apply(ctx, readmodel.Write{Org: org, Rule: readmodel.Newer, Records: records, Index: ws[start].index})
				if err != nil {
					return err
				}
				for _, r := range res[0] {
					if r == readmodel.Written {
						n++
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
