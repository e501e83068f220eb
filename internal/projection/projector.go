// Package projection turns events into the read model. Each event names an
// aggregate at a version; the keys that hold that aggregate are moved forward
// by the version rule (drop what is not newer, apply the next version,
// rebuild from Postgres on a gap), and the bodies derived from many
// aggregates are marked dirty and rebuilt, coalesced, shortly after.
package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Source is the system of record the projector rebuilds from: the leader.
type Source interface {
	Sprocket(ctx context.Context, id int64) (domain.Sprocket, error)
	SprocketsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error)
	SprocketSpecsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error)
	SprocketSpecsInRange(ctx context.Context, org, lo, hi int64) ([]domain.Sprocket, error)
	Factory(ctx context.Context, id int64) (domain.Factory, error)
	SamplesAsOf(ctx context.Context, id, asOf, after int64, limit int) ([]domain.Sample, error)
	FactoriesOfOrg(ctx context.Context, org int64) ([]domain.Factory, error)
	FactoryBucketsSince(ctx context.Context, id, version, bucketSeconds int64) (domain.Factory, []domain.Sample, error)
	OrgIDs(ctx context.Context) ([]int64, error)
	DeletedOrgIDs(ctx context.Context) ([]int64, error)
}

// Cache is the read model store.
type Cache interface {
	Apply(ctx context.Context, writes ...readmodel.Write) ([][]int, error)
	Get(ctx context.Context, key string, withMembers bool) (readmodel.Entry, bool, error)
	GetMany(ctx context.Context, keys []string) ([]readmodel.Entry, []bool, error)
	Delete(ctx context.Context, keys ...string) error
	Indexed(ctx context.Context, index string) ([]string, error)
	Dirty(ctx context.Context) (map[string]string, error)
	Clear(ctx context.Context, marks map[string]string) error
	Built(ctx context.Context) (bool, error)
	MarkBuilt(ctx context.Context) error
	Keys(ctx context.Context) ([]string, error)
	Fence(ctx context.Context, orgs ...int64) error
	PruneSegments(ctx context.Context, manifest, index string, keys []string) error
	DropOldShapes(ctx context.Context) error
	LogLive(ctx context.Context, retention time.Duration, maxEntries int, changes map[int64][]readmodel.Change) error
}

// Purge removes from the broker the events whose subjects match filters
// (events.<aggregate>.<id>.>): a deleted organization's events leave the
// stream with its keys.
type Purge func(ctx context.Context, filters []string) error

// Projector applies events to the read model.
type Projector struct {
	src   Source
	cache Cache
	ids   *publicid.Codec // makes the ids in /v1 bodies
	// layouts cut the bodies of the original routes into segments.
	layouts readmodel.Layouts
	purge   Purge
	log     *slog.Logger
	now     func() time.Time
	// marked wakes RunDerived when this projector marks bodies dirty.
	marked chan struct{}
	// historyPage is how many samples one read of a history returns.
	historyPage int

	outcomes *prometheus.CounterVec
	delay    prometheus.Histogram
	lastLag  prometheus.Gauge
	derived  prometheus.Counter
	rounds   prometheus.Histogram
	// histories counts the histories rebuilt from Postgres in the event
	// path: a gap, or a concurrent writer in the way of an extension.
	histories prometheus.Counter
	checks    antiEntropy
	live      liveLogs
}

// Outcomes of applying an event, as counted in sprockets_projector_events_total.
const (
	Applied   = "applied"   // the next version, applied from the event
	Duplicate = "duplicate" // not newer than what the keys hold: dropped
	Rebuilt   = "rebuilt"   // a gap: the keys were rebuilt from Postgres
)

// New returns a Projector; its metrics are registered with reg.
func New(src Source, cache Cache, ids *publicid.Codec, log *slog.Logger, reg prometheus.Registerer) *Projector {
	p := &Projector{
		src: src, cache: cache, ids: ids, layouts: readmodel.LayoutsOf(ids), log: log, now: time.Now, marked: make(chan struct{}, 1),
		historyPage: historyPage,
		purge:       func(context.Context, []string) error { return nil },
		live:        liveLogs{retention: DefaultLiveRetention, maxEntries: DefaultLiveMaxEntries},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_projector_events_total", Help: "Events projected, by outcome.",
		}, []string{"outcome"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sprockets_projection_delay_seconds",
			Help:    "Time from an event's commit to its keys being written.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		lastLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_projection_lag_seconds",
			Help: "Age of the newest event applied, when it was applied.",
		}),
		derived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_projector_derived_rebuilds_total", Help: "Coalesced rebuilds of the organizations' collections of the original routes.",
		}),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sprockets_projector_derived_round_seconds",
			Help:    "Duration of a round of coalesced rebuilds.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	p.histories = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sprockets_projector_history_rebuilds_total", Help: "Factory histories rebuilt whole from Postgres on an event, instead of extended.",
	})
	reg.MustRegister(p.outcomes, p.delay, p.lastLag, p.derived, p.rounds, p.histories)
	p.checks = newAntiEntropy(reg)
	return p
}

// PurgeWith has the projector remove a deleted organization's events from
// the broker with purge once its keys are gone (the deletion event itself
// stays, the record that it happened); until it is called, they stay
// until the stream's age limit. Call it before the projector applies
// events.
func (p *Projector) PurgeWith(purge Purge) { p.purge = purge }

// Handle decodes and applies one message body. An EINVALID *domain.Error
// means the message can never be applied; any other error is worth a retry.
func (p *Projector) Handle(ctx context.Context, data []byte) error {
	return p.HandleBatch(ctx, [][]byte{data})[0]
}

// HandleBatch decodes and applies message bodies in order and returns one
// error per body, as Handle would. The sprocket events of a batch cost one
// Redis round trip together.
func (p *Projector) HandleBatch(ctx context.Context, batch [][]byte) []error {
	errs := make([]error, len(batch))
	envs := make([]events.Envelope, len(batch))
	outcomes := make([]string, len(batch))
	var sprockets []int
	for i, data := range batch {
		if envs[i], errs[i] = events.Decode(data); errs[i] != nil {
			continue
		}
		if envs[i].AggregateType == events.Sprocket {
			sprockets = append(sprockets, i)
		}
	}
	p.applySprockets(ctx, envs, sprockets, outcomes, errs)
	for i, e := range envs {
		if errs[i] == nil && outcomes[i] == "" {
			outcomes[i], errs[i] = p.Apply(ctx, e)
		}
	}
	p.logLive(ctx, envs, outcomes, errs)
	now := p.now()
	for i, e := range envs {
		if errs[i] != nil {
			continue
		}
		p.outcomes.WithLabelValues(outcomes[i]).Inc()
		lag := now.Sub(e.OccurredAt).Seconds()
		p.delay.Observe(lag)
		p.lastLag.Set(lag)
	}
	return errs
}

// Apply moves the keys of e's aggregate forward and marks the bodies derived
// from it dirty. It returns the outcome; once it returns nil, Redis holds the
// result (or the dirty marks that will produce it).
func (p *Projector) Apply(ctx context.Context, e events.Envelope) (string, error) {
	switch e.AggregateType {
	case events.Sprocket:
		return p.applySprocket(ctx, e)
	case events.Factory:
		return p.applyFactory(ctx, e)
	case events.Organization:
		return p.applyOrganization(ctx, e)
	}
	return "", domain.Errorf(domain.EINVALID, "event %s: unknown aggregate %q", e.ID, e.AggregateType)
}

func (p *Projector) applySprocket(ctx context.Context, e events.Envelope) (string, error) {
	envs, outcomes, errs := []events.Envelope{e}, make([]string, 1), make([]error, 1)
	p.applySprockets(ctx, envs, []int{0}, outcomes, errs)
	return outcomes[0], errs[0]
}

// applySprockets applies the sprocket events envs[i] for i in idx, in order,
// in one round trip, and records each one's outcome or error.
func (p *Projector) applySprockets(ctx context.Context, envs []events.Envelope, idx []int, outcomes []string, errs []error) {
	writes := make([]readmodel.Write, 0, len(idx))
	applied := make([]int, 0, len(idx))
	for _, i := range idx {
		pl, err := envs[i].Sprocket()
		if err != nil {
			errs[i] = err
			continue
		}
		writes = append(writes, readmodel.Write{
			Org: envs[i].OrgID, Rule: readmodel.Next, Records: readmodel.SprocketRecords(p.ids, pl.Sprocket).All(),
			Dirty: []string{readmodel.MemberMark(orgSprockets(envs[i].OrgID), envs[i].AggregateID)},
		})
		applied = append(applied, i)
	}
	res, err := p.cache.Apply(ctx, writes...)
	if err != nil {
		for _, i := range applied {
			errs[i] = err
		}
		return
	}
	p.wake()
	for k, i := range applied {
		outcomes[i] = outcomeOf(res[k])
		if outcomes[i] == Rebuilt {
			errs[i] = p.rebuildSprocket(ctx, envs[i].AggregateID)
		}
	}
}

func (p *Projector) rebuildSprocket(ctx context.Context, id int64) error {
	s, err := p.src.Sprocket(ctx, id)
	if isNotFound(err) {
		return nil // purged with its organization: nothing to rebuild
	}
	if err != nil {
		return fmt.Errorf("rebuild sprocket %d: %w", id, err)
	}
	_, err = p.cache.Apply(ctx, readmodel.Write{Org: s.OrgID, Rule: readmodel.Newer, Records: readmodel.SprocketRecords(p.ids, s).All()})
	return err
}

// outcomeOf summarizes per-key results: any refusal is a gap; a fenced
// (deleted) organization's event is dropped like a duplicate.
func outcomeOf(res []int) string {
	outcome := Duplicate
	for _, r := range res {
		switch r {
		case readmodel.Fenced:
			return Duplicate
		case readmodel.Refused:
			return Rebuilt
		case readmodel.Written:
			outcome = Applied
		}
	}
	return outcome
}

func (p *Projector) applyFactory(ctx context.Context, e events.Envelope) (string, error) {
	pl, err := e.Factory()
	if err != nil {
		return "", err
	}
	f := pl.Factory
	meta, ok, err := p.cache.Get(ctx, readmodel.FactoryKey(f.ID), false)
	if err != nil {
		return "", err
	}
	held := int64(0)
	if ok {
		held = meta.Version
	}
	outcome := Applied
	switch {
	case e.Version <= held:
		outcome = Duplicate
	case e.Version == held+1:
		applied, err := p.applyFactoryEvent(ctx, pl)
		if err != nil {
			return "", err
		}
		if !applied {
			outcome = Rebuilt
		}
	default:
		outcome = Rebuilt
	}
	if outcome == Rebuilt {
		if err := p.rebuildFactorySince(ctx, f.ID, held); err != nil {
			return "", err
		}
	}
	if err := p.applyHistory(ctx, f, pl.Samples); err != nil {
		return "", err
	}
	// Which factories the organization shows changes with a creation or a
	// deletion, which a gap may have hidden.
	if e.Type == events.Created || e.Type == events.Deleted || outcome == Rebuilt {
		if _, err := p.cache.Apply(ctx, readmodel.Write{Org: e.OrgID, Dirty: []string{orgFactories(e.OrgID)}}); err != nil {
			return "", err
		}
		p.wake()
	}
	return outcome, nil
}

// applyFactoryEvent merges the event's samples into their buckets, then
// moves the factory's key to the event's version. Buckets are written first,
// so that a reader that sees the factory at a version finds buckets at least
// as new. It reports false when a concurrent writer got in the way and a
// rebuild is needed.
func (p *Projector) applyFactoryEvent(ctx context.Context, pl events.FactoryPayload) (bool, error) {
	f := pl.Factory
	if f.Deleted() {
		if err := p.dropBuckets(ctx, f); err != nil {
			return false, err
		}
	} else if len(pl.Samples) > 0 {
		merged, err := p.mergeBuckets(ctx, f, pl.Samples)
		if err != nil || !merged {
			return false, err
		}
		if merged, err = p.mergeAggregates(ctx, f, pl.Samples); err != nil || !merged {
			return false, err
		}
	}
	res, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Next, Records: []readmodel.Record{readmodel.FactoryRecord(p.ids, f)}})
	if err != nil {
		return false, err
	}
	return res[0][0] != readmodel.Refused, nil
}

// mergeBuckets adds samples to their buckets (hours of raw samples).
func (p *Projector) mergeBuckets(ctx context.Context, f domain.Factory, samples []domain.Sample) (bool, error) {
	groups := readmodel.GroupByBucket(samples)
	buckets := make([]int64, 0, len(groups))
	keys := make([]string, 0, len(groups))
	for b := range groups {
		buckets = append(buckets, b)
		keys = append(keys, readmodel.ChartBucketKey(f.ID, b))
	}
	return p.mergeKeys(ctx, f, keys, readmodel.BucketIndexKey(f.ID), func(i int, have []byte, _ int64) (r readmodel.Record, err error) {
		var held []domain.Sample
		if have != nil {
			held, err = readmodel.DecodeBucket(have)
		}
		return readmodel.BucketRecord(f.ID, f.OrgID, buckets[i], f.Version, readmodel.MergeSamples(held, groups[buckets[i]])), err
	})
}

// mergeAggregates counts samples into the factory's aggregates: one key
// per width.
func (p *Projector) mergeAggregates(ctx context.Context, f domain.Factory, samples []domain.Sample) (bool, error) {
	groups := readmodel.GroupByAggregate(f.ID, samples)
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = g.Key
	}
	return p.mergeKeys(ctx, f, keys, readmodel.AggregateIndexKey(f.ID), func(i int, have []byte, version int64) (readmodel.Record, error) {
		held, err := readmodel.DecodeAggregates(have)
		if version < f.Version {
			// Counting is not idempotent, as merging samples is: a key at
			// this version already counts them (another projector, or this
			// event before a crash).
			held = readmodel.AddSamples(held, groups[i].Width, groups[i].Samples)
		}
		return readmodel.AggregateRecord(f, groups[i].Key, held), err
	})
}

// mergeKeys rewrites keys (listed in index) at f's version, each from what
// it holds (nil when the key is missing) and its version by merge, guarded by the version read, and
// merges again a few times the keys another writer got to first. It
// reports false when some stay refused, or one held cannot be read: the
// caller rebuilds.
func (p *Projector) mergeKeys(ctx context.Context, f domain.Factory, keys []string, index string, merge func(i int, have []byte, version int64) (readmodel.Record, error)) (bool, error) {
	todo := make([]int, len(keys))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; attempt < 3; attempt++ {
		ks := make([]string, len(todo))
		for j, i := range todo {
			ks[j] = keys[i]
		}
		entries, oks, err := p.cache.GetMany(ctx, ks)
		if err != nil {
			return false, err
		}
		records := make([]readmodel.Record, len(todo))
		expected := make([]int64, len(todo))
		for j, i := range todo {
			var have []byte
			if oks[j] {
				have, expected[j] = entries[j].Body, entries[j].Version
				if have == nil {
					have = []byte{}
				}
			}
			if records[j], err = merge(i, have, expected[j]); err != nil {
				return false, nil // a corrupt key: rebuild it
			}
		}
		res, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Exact, Records: records, Expected: expected, Index: index})
		if err != nil {
			return false, err
		}
		if contains(res[0], readmodel.Fenced) || !contains(res[0], readmodel.Refused) {
			return true, nil
		}
		// Written keys are kept; only refused ones are merged again.
		var refused []int
		for j, r := range res[0] {
			if r == readmodel.Refused {
				refused = append(refused, todo[j])
			}
		}
		todo = refused
	}
	return false, nil
}

func contains(res []int, v int) bool {
	for _, r := range res {
		if r == v {
			return true
		}
	}
	return false
}

// dropBuckets removes a deleted factory's buckets and aggregates; the
// tombstone in its key already hides them, this frees the memory.
func (p *Projector) dropBuckets(ctx context.Context, f domain.Factory) error {
	if err := p.dropIndexed(ctx, readmodel.BucketIndexKey(f.ID)); err != nil {
		return err
	}
	return p.dropIndexed(ctx, readmodel.AggregateIndexKey(f.ID))
}

// rebuildFactorySince rewrites, from Postgres, the factory's key and the
// buckets that changed after version held.
func (p *Projector) rebuildFactorySince(ctx context.Context, id, held int64) error {
	f, samples, err := p.src.FactoryBucketsSince(ctx, id, held, readmodel.ChartBucketSeconds)
	if isNotFound(err) {
		return nil // purged with its organization: nothing to rebuild
	}
	if err != nil {
		return fmt.Errorf("rebuild factory %d: %w", id, err)
	}
	if !f.Deleted() {
		// A week's aggregate counts samples of hours that did not change:
		// aggregates are made again from the whole history.
		if err := p.rebuildAggregates(ctx, id); err != nil {
			return err
		}
	}
	return p.writeFactory(ctx, f, samples)
}

// rebuildAggregates rewrites a factory's aggregates from its history in
// Postgres, read a page at a time (see factoryExpected).
func (p *Projector) rebuildAggregates(ctx context.Context, id int64) error {
	index := readmodel.AggregateIndexKey(id)
	err := p.factoryExpected(ctx, id, aggregateParts, func(ws []want) error {
		_, err := p.writeNewer(ctx, index, recordsIn(ws, index))
		return err
	})
	if err != nil {
		return fmt.Errorf("rebuild aggregates of factory %d: %w", id, err)
	}
	return nil
}

// writeFactory writes, under the Newer rule, the factory's key and the
// buckets samples fall in; buckets first.
func (p *Projector) writeFactory(ctx context.Context, f domain.Factory, samples []domain.Sample) error {
	if f.Deleted() {
		if err := p.dropBuckets(ctx, f); err != nil {
			return err
		}
	} else {
		var records []readmodel.Record
		for b, s := range readmodel.GroupByBucket(samples) {
			records = append(records, readmodel.BucketRecord(f.ID, f.OrgID, b, f.Version, s))
			if len(records) == 500 {
				if _, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Newer, Records: records,
					Index: readmodel.BucketIndexKey(f.ID)}); err != nil {
					return err
				}
				records = records[:0]
			}
		}
		if _, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Newer, Records: records,
			Index: readmodel.BucketIndexKey(f.ID)}); err != nil {
			return err
		}
	}
	_, err := p.cache.Apply(ctx, readmodel.Write{Org: f.OrgID, Rule: readmodel.Newer, Records: []readmodel.Record{readmodel.FactoryRecord(p.ids, f)}})
	return err
}

// applyOrganization removes every key of a deleted organization. The fence
// goes first: from then on no write of the organization's keys succeeds,
// whatever event arrives late or whichever projector applies it. A fence
// is for good, so the event's word is not enough: Postgres must say the
// organization is deleted, or the event is refused (and parked) as forged.
func (p *Projector) applyOrganization(ctx context.Context, e events.Envelope) (string, error) {
	pl, err := e.Organization()
	if err != nil {
		return "", err
	}
	deleted, err := p.src.DeletedOrgIDs(ctx)
	if err != nil {
		return "", err
	}
	if !slices.Contains(deleted, e.OrgID) {
		return "", domain.Errorf(domain.EINVALID,
			"event %s deletes organization %d, which Postgres holds as live: not applied", e.ID, e.OrgID)
	}
	if err := p.cache.Fence(ctx, e.OrgID); err != nil {
		return "", err
	}
	keys := []string{readmodel.SprocketListKey(e.OrgID), readmodel.OrgFactoriesKey(e.OrgID),
		readmodel.LiveKey(e.OrgID), readmodel.LiveSeenKey(e.OrgID), readmodel.LiveTrimmedKey(e.OrgID)}
	if err := p.dropIndexed(ctx, readmodel.SprocketIndexKey(e.OrgID)); err != nil {
		return "", err
	}
	for _, id := range pl.Sprockets {
		keys = append(keys, readmodel.SprocketKey(id), readmodel.SprocketCompatKey(id))
	}
	for _, f := range pl.Factories {
		keys = append(keys, readmodel.FactoryKey(f.ID), readmodel.HistoryKey(f.ID))
		if err := p.dropBuckets(ctx, f); err != nil {
			return "", err
		}
		if err := p.dropIndexed(ctx, readmodel.SegmentIndexKey(f.ID)); err != nil {
			return "", err
		}
	}
	if err := p.deleteKeys(ctx, keys); err != nil {
		return "", err
	}
	var filters []string
	for _, id := range pl.Sprockets {
		filters = append(filters, events.AggregateFilter(events.Sprocket, id))
	}
	for _, f := range pl.Factories {
		filters = append(filters, events.AggregateFilter(events.Factory, f.ID))
	}
	if err := p.purge(ctx, filters); err != nil {
		return "", fmt.Errorf("purge the organization's events: %w", err)
	}
	return Applied, nil
}

// isNotFound reports whether err says the aggregate does not exist. Deleted
// aggregates keep tombstone rows, so for a rebuild it means the aggregate
// was purged with its organization.
func isNotFound(err error) bool {
	var de *domain.Error
	return errors.As(err, &de) && de.Code == domain.ENOTFOUND
}
