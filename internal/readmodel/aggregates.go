package readmodel

import (
	"bytes"
	"fmt"
	"math"
	"strconv"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// A chart of any range in at most N points (GET .../chart-data?points=N)
// is read from aggregates the projector keeps per time bucket at a few
// widths: each sample is counted once per width, so an append rewrites one
// key per width whatever the history's length. A range is answered at the
// widest width no wider than it needs, with neighbouring buckets merged
// until the points fit.

// AggregateWidths are the bucket widths aggregates are kept at, in seconds:
// a minute, 5 minutes, half an hour, 3 hours, a day, a week, 4 weeks, 52
// weeks. Each is at most 13 times the one before, so a range reads at most
// 13 buckets a point (or, past the widest, one per 52 weeks).
var AggregateWidths = []int64{60, 300, 1800, 10800, 86400, 604800, 2419200, 31449600}

// AggregateChunk is how many buckets of one width one key holds.
const AggregateChunk = 512

// AggregateKey holds the aggregates of factory's buckets of width in the
// chunk-th run of AggregateChunk buckets.
func AggregateKey(factory, width, chunk int64) string {
	return Prefix + "factory:" + id(factory) + ":agg:" + id(width) + ":" + id(chunk)
}

// AggregateIndexKey lists a factory's aggregate keys.
func AggregateIndexKey(factory int64) string { return Prefix + "meta:aggregates:" + id(factory) }

// AggregateChunkOf returns the chunk of width's bucket that holds time t.
func AggregateChunkOf(width, t int64) int64 { return t / width / AggregateChunk }

// EncodeAggregates encodes buckets (in start order) one per line:
// "start count sumActual minActual maxActual sumGoal minGoal maxGoal".
func EncodeAggregates(buckets []domain.Aggregate) []byte {
	b := make([]byte, 0, 64*len(buckets))
	for _, a := range buckets {
		for i, n := range [...]int64{a.Start, a.Count, a.SumActual, a.MinActual, a.MaxActual, a.SumGoal, a.MinGoal, a.MaxGoal} {
			if i > 0 {
				b = append(b, ' ')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		b = append(b, '\n')
	}
	return b
}

// DecodeAggregates reads what EncodeAggregates wrote. A chart of a year
// in 1,000 points decodes thousands of lines per read: it parses in place.
func DecodeAggregates(body []byte) ([]domain.Aggregate, error) {
	out := make([]domain.Aggregate, 0, bytes.Count(body, []byte{'\n'}))
	var n [8]int64
	for len(body) > 0 {
		for i := range n {
			j := 0
			for j < len(body) && body[j] >= '0' && body[j] <= '9' {
				j++
			}
			end := byte('\n')
			if i < len(n)-1 {
				end = ' '
			}
			if j == 0 || j > 19 || j == len(body) || body[j] != end {
				return nil, fmt.Errorf("aggregates: malformed line at %q", clipBytes(body))
			}
			v := uint64(0)
			for _, c := range body[:j] {
				v = 10*v + uint64(c-'0')
			}
			if v > math.MaxInt64 { // 19 digits fit in a uint64, not all in an int64
				return nil, fmt.Errorf("aggregates: %q is out of range", body[:j])
			}
			n[i], body = int64(v), body[j+1:]
		}
		out = append(out, domain.Aggregate{Start: n[0], Count: n[1], SumActual: n[2], MinActual: n[3], MaxActual: n[4],
			SumGoal: n[5], MinGoal: n[6], MaxGoal: n[7]})
	}
	return out, nil
}

func clipBytes(b []byte) []byte { return b[:min(len(b), 40)] }

// AggregateGroup is what samples add to one aggregate key.
type AggregateGroup struct {
	Key     string
	Width   int64
	Samples []domain.Sample
}

// GroupByAggregate groups samples by the aggregate keys of factory they
// fall in: one key per width for samples close in time.
func GroupByAggregate(factory int64, samples []domain.Sample) []AggregateGroup {
	var out []AggregateGroup
	at := map[string]int{}
	for _, w := range AggregateWidths {
		for _, s := range samples {
			k := AggregateKey(factory, w, AggregateChunkOf(w, s.Time))
			i, ok := at[k]
			if !ok {
				i = len(out)
				at[k] = i
				out = append(out, AggregateGroup{Key: k, Width: w})
			}
			out[i].Samples = append(out[i].Samples, s)
		}
	}
	return out
}

// AddSamples returns buckets (of width, in start order) with samples
// counted in; samples must be new to them.
func AddSamples(buckets []domain.Aggregate, width int64, samples []domain.Sample) []domain.Aggregate {
	at := make(map[int64]int, len(buckets))
	for i, a := range buckets {
		at[a.Start] = i
	}
	for _, s := range samples {
		start := s.Time - s.Time%width
		i, ok := at[start]
		if !ok {
			i = len(buckets)
			at[start] = i
			buckets = append(buckets, domain.Aggregate{Start: start})
		}
		buckets[i].Add(s)
	}
	sortAggregates(buckets)
	return buckets
}

func sortAggregates(a []domain.Aggregate) {
	for i := 1; i < len(a); i++ { // nearly sorted: new buckets come last
		for j := i; j > 0 && a[j].Start < a[j-1].Start; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// AggregateRecords returns the aggregate records of factory f's history
// (samples in time order), at f's version.
func AggregateRecords(f domain.Factory, samples []domain.Sample) []Record {
	var out []Record
	for _, g := range GroupByAggregate(f.ID, samples) {
		out = append(out, AggregateRecord(f, g.Key, AddSamples(nil, g.Width, g.Samples)))
	}
	return out
}

// AggregateRecord is the record of one aggregate key of factory f.
func AggregateRecord(f domain.Factory, key string, buckets []domain.Aggregate) Record {
	body := EncodeAggregates(buckets)
	return Record{Key: key, Entry: Entry{Body: body, ETag: HashETag(body), Version: f.Version, Org: f.OrgID}}
}

// Plan is how a range of a chart is answered in at most some points: from
// the aggregates of Width, Merge buckets to a point (a point spans
// Width*Merge seconds, aligned on multiples of it).
type Plan struct {
	Width, Merge int64
	// Keys are the aggregate keys to read, in time order.
	Keys []string
}

// PlanChart plans the points of factory's chart over [lo, hi] (the part of
// the range that holds samples) in at most points points.
func PlanChart(factory, lo, hi int64, points int) Plan {
	span := hi - lo + 1
	need := (span + int64(points) - 1) / int64(points)
	width := AggregateWidths[0]
	for _, w := range AggregateWidths {
		if w <= need {
			width = w
		}
	}
	merge := max((need+width-1)/width, 1)
	for pointsIn(lo, hi, width*merge) > int64(points) {
		merge++
	}
	p := Plan{Width: width, Merge: merge}
	for c := AggregateChunkOf(width, lo); c <= AggregateChunkOf(width, hi); c++ {
		p.Keys = append(p.Keys, AggregateKey(factory, width, c))
	}
	return p
}

func pointsIn(lo, hi, span int64) int64 { return hi/span - lo/span + 1 }

// Widened returns the times the plan's buckets covering [lo, hi] span:
// the first and last may hold samples just outside it.
func (p Plan) Widened(lo, hi int64) (int64, int64) {
	return lo - lo%p.Width, hi - hi%p.Width + p.Width - 1
}

// Points merges buckets (of the plan's width, from its keys in order) that
// start within [lo, hi] into the plan's points.
func (p Plan) Points(buckets []domain.Aggregate, lo, hi int64) []domain.Aggregate {
	span := p.Width * p.Merge
	var out []domain.Aggregate
	for _, b := range buckets {
		if b.Start+p.Width-1 < lo || b.Start > hi || b.Count == 0 {
			continue
		}
		start := b.Start - b.Start%span
		if n := len(out); n > 0 && out[n-1].Start == start {
			out[n-1].Merge(b)
			continue
		}
		b.Start = start
		out = append(out, b)
	}
	return out
}

// RawPoints are samples as points: each its own bucket.
func RawPoints(samples []domain.Sample) []domain.Aggregate {
	out := make([]domain.Aggregate, len(samples))
	for i, s := range samples {
		out[i] = domain.Aggregate{Start: s.Time}
		out[i].Add(s)
	}
	return out
}

// ChartPointsBody is GET /v1/factories/{id}/chart-data?points=N: the
// points in the chart_data shape (each point's time is its bucket's start,
// its actual and goal the bucket's means, rounded), and per point the
// count of samples and the least and greatest actual and goal. A
// bucketSeconds of 0 says that the points are the samples themselves. It
// is written as encoding/json would, by hand: it is made per read.
func ChartPointsBody(ids *publicid.Codec, factoryID, from, to int64, bucketSeconds int64, points []domain.Aggregate) []byte {
	b := make([]byte, 0, 128+8*8*len(points))
	b = append(b, `{"factory_id":"`...)
	b = append(b, ids.Encode(publicid.Factory, factoryID)...)
	b = append(b, `","from":`...)
	b = strconv.AppendInt(b, from, 10)
	b = append(b, `,"to":`...)
	b = strconv.AppendInt(b, to, 10)
	b = append(b, `,"bucket_seconds":`...)
	b = strconv.AppendInt(b, bucketSeconds, 10)
	column := func(b []byte, name string, v func(domain.Aggregate) int64) []byte {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":[`...)
		for i, p := range points {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, v(p), 10)
		}
		return append(b, ']')
	}
	b = append(b, `,"chart_data":{`...)
	b = column(b, "sprocket_production_actual", func(p domain.Aggregate) int64 { return mean(p.SumActual, p.Count) })
	b = append(b, ',')
	b = column(b, "sprocket_production_goal", func(p domain.Aggregate) int64 { return mean(p.SumGoal, p.Count) })
	b = append(b, ',')
	b = column(b, "time", func(p domain.Aggregate) int64 { return p.Start })
	b = append(b, `},"spread":{`...)
	b = column(b, "count", func(p domain.Aggregate) int64 { return p.Count })
	b = append(b, ',')
	b = column(b, "actual_min", func(p domain.Aggregate) int64 { return p.MinActual })
	b = append(b, ',')
	b = column(b, "actual_max", func(p domain.Aggregate) int64 { return p.MaxActual })
	b = append(b, ',')
	b = column(b, "goal_min", func(p domain.Aggregate) int64 { return p.MinGoal })
	b = append(b, ',')
	b = column(b, "goal_max", func(p domain.Aggregate) int64 { return p.MaxGoal })
	return append(b, "}}"...)
}

// mean is sum/count rounded to the nearest integer.
func mean(sum, count int64) int64 {
	if count == 0 {
		return 0
	}
	return int64(math.Round(float64(sum) / float64(count)))
}
