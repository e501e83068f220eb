package readmodel

import (
	"encoding/json"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// SprocketEndpoints are the records of a sprocket's two endpoints.
type SprocketEndpoints struct {
	V1     Record // GET /v1/sprockets/{id}
	Compat Record // GET /api/sprocket/{id}
}

// All returns both records, to write together.
func (r SprocketEndpoints) All() []Record { return []Record{r.V1, r.Compat} }

// SprocketRecords returns the records of a sprocket's two endpoints; a
// tombstone gives tombstone entries. ids makes the /v1 id.
func SprocketRecords(ids *publicid.Codec, s domain.Sprocket) SprocketEndpoints {
	v1 := Entry{Version: s.Version, Org: s.OrgID, Deleted: s.Deleted()}
	compat := v1
	if !s.Deleted() {
		v1.Body, v1.ETag = SprocketBody(ids, s), VersionETag(s.Version)
		compat.Body = SprocketCompatBody(s)
		compat.ETag = HashETag(compat.Body)
	}
	return SprocketEndpoints{V1: Record{SprocketKey(s.ID), v1}, Compat: Record{SprocketCompatKey(s.ID), compat}}
}

// FactoryRecord returns the entry of GET /v1/factories/{id}.
func FactoryRecord(ids *publicid.Codec, f domain.Factory) Record {
	e := Entry{Version: f.Version, Org: f.OrgID, Deleted: f.Deleted()}
	if !f.Deleted() {
		e.Body, e.ETag = FactoryBody(ids, f), VersionETag(f.Version)
		e.First, e.Last = f.FirstTime, f.LastTime
	}
	return Record{FactoryKey(f.ID), e}
}

// FactoryCompatEndpoints are the records of a factory's two original routes.
type FactoryCompatEndpoints struct {
	Factory Record // GET /api/factory/{id}
	Chart   Record // GET /api/factory/{id}/chart-data
}

// All returns both records, to write together.
func (r FactoryCompatEndpoints) All() []Record { return []Record{r.Factory, r.Chart} }

// FactoryCompatRecords returns the records of GET /api/factory/{id} and its
// chart-data; samples is the whole history in time order.
func FactoryCompatRecords(f domain.Factory, samples []domain.Sample) FactoryCompatEndpoints {
	whole := Entry{Version: f.Version, Org: f.OrgID, Deleted: f.Deleted()}
	chart := whole
	if !f.Deleted() {
		chart.Body = ChartDataBody(samples)
		chart.ETag = HashETag(chart.Body)
		whole.Body = wrapCompatFactory(f.ID, chart.Body)
		whole.ETag = HashETag(whole.Body)
	}
	return FactoryCompatEndpoints{Factory: Record{FactoryCompatKey(f.ID), whole}, Chart: Record{FactoryCompatChartKey(f.ID), chart}}
}

// OrgFactoriesRecord returns the entry of GET /api/factories for org.
func OrgFactoriesRecord(org int64, all []domain.Factory, samples map[int64][]domain.Sample) Record {
	e := Entry{Org: org}
	versions := make(map[int64]int64, len(all))
	for _, f := range all {
		versions[f.ID] = f.Version
		e.Version += f.Version
	}
	e.Members = EncodeMembers(versions)
	e.Body = FactoriesCompatBody(all, samples)
	e.ETag = HashETag(e.Body)
	return Record{OrgFactoriesKey(org), e}
}

// BucketRecord returns the entry of one chart bucket. version is the
// factory version the bucket reflects; samples are the bucket's, in time
// order.
func BucketRecord(factoryID, org, bucket, version int64, samples []domain.Sample) Record {
	return Record{ChartBucketKey(factoryID, bucket), Entry{
		Body: EncodeBucket(samples), Version: version, Org: org,
	}}
}

// EncodeBucket encodes a bucket's samples compactly as [[time,actual,goal],…].
func EncodeBucket(samples []domain.Sample) []byte {
	rows := make([][3]int64, len(samples))
	for i, s := range samples {
		rows[i] = [3]int64{s.Time, s.Actual, s.Goal}
	}
	return mustJSON(rows)
}

// DecodeBucket is the inverse of EncodeBucket.
func DecodeBucket(body []byte) ([]domain.Sample, error) {
	var rows [][3]int64
	if err := json.Unmarshal(body, &rows); err != nil {
		return nil, fmt.Errorf("decode chart bucket: %w", err)
	}
	out := make([]domain.Sample, len(rows))
	for i, r := range rows {
		out[i] = domain.Sample{Time: r[0], Actual: r[1], Goal: r[2]}
	}
	return out, nil
}

// GroupByBucket splits samples (in time order) by chart bucket.
func GroupByBucket(samples []domain.Sample) map[int64][]domain.Sample {
	out := make(map[int64][]domain.Sample)
	for _, s := range samples {
		b := Bucket(s.Time)
		out[b] = append(out[b], s)
	}
	return out
}

// MergeSamples returns the union of two time-ordered sample lists, in time
// order; on equal times add wins (the store never lets them differ).
func MergeSamples(have, add []domain.Sample) []domain.Sample {
	out := make([]domain.Sample, 0, len(have)+len(add))
	i, j := 0, 0
	for i < len(have) && j < len(add) {
		switch {
		case have[i].Time < add[j].Time:
			out = append(out, have[i])
			i++
		case have[i].Time > add[j].Time:
			out = append(out, add[j])
			j++
		default:
			out = append(out, add[j])
			i++
			j++
		}
	}
	out = append(out, have[i:]...)
	return append(out, add[j:]...)
}
