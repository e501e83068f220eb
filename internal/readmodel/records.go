package readmodel

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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

// SegmentRecord returns the record of one segment of factory f's history
// (at f's version), and what the manifest says of it.
func SegmentRecord(f domain.Factory, s Segment) (Record, ManifestItem) {
	body := EncodeSegment(s.Samples)
	it := ItemOf(s.Start, body)
	return Record{HistorySegmentKey(f.ID, s.Start), Entry{Body: body, ETag: SegmentETag(it.Hash), Version: f.Version, Org: f.OrgID}}, it
}

// ManifestRecord returns the record of factory f's history manifest, at
// HistoryKey: a tombstone when f is deleted. Its ETag is that of GET
// /api/factory/{id}/chart-data; FactoryETag makes the factory's.
func ManifestRecord(f domain.Factory, m Manifest) Record {
	e := Entry{Version: f.Version, Org: f.OrgID, Deleted: f.Deleted()}
	if !f.Deleted() {
		e.Body = EncodeManifest(m)
		e.ETag = HashETag(e.Body)
	}
	return Record{HistoryKey(f.ID), e}
}

// HistoryRecords returns the records of factory f's history, samples in
// time order, laid out by its layout of ls: its segments, then its
// manifest (a tombstone alone when f is deleted).
func HistoryRecords(ls Layouts, f domain.Factory, samples []domain.Sample) []Record {
	var out []Record
	var m Manifest
	if !f.Deleted() {
		for _, s := range ls.History(f.ID).Segments(samples) {
			r, it := SegmentRecord(f, s)
			out, m = append(out, r), append(m, it)
		}
	}
	return append(out, ManifestRecord(f, m))
}

// HeldHistory returns factory f's history as a reader holds it: its
// manifest's entry and its segments, from samples in time order, laid
// out by its layout of ls.
func HeldHistory(ls Layouts, f domain.Factory, samples []domain.Sample) (Entry, []HeldSegment) {
	records := HistoryRecords(ls, f, samples)
	segs := make([]HeldSegment, len(records)-1)
	for i, r := range records[:len(segs)] {
		cols, _ := SegmentColumns(r.Entry.Body) // just made: well formed
		hash, _ := strconv.ParseUint(r.Entry.ETag, 16, 64)
		segs[i] = HeldSegment{Key: r.Key, Hash: hash, Columns: cols}
	}
	return records[len(segs)].Entry, segs
}

// FactoryETag is the ETag of GET /api/factory/{id}, whose chart data's
// ETag is chart.
func FactoryETag(chart string) string { return strings.TrimSuffix(chart, `"`) + factoryETagEnd }

// IsFactoryETag reports whether etag is FactoryETag(chart), without making
// it.
func IsFactoryETag(etag, chart string) bool {
	base := strings.TrimSuffix(chart, `"`)
	return len(etag) == len(base)+len(factoryETagEnd) && strings.HasPrefix(etag, base) && strings.HasSuffix(etag, factoryETagEnd)
}

const factoryETagEnd = `-f"`

// FactoriesETag is the ETag of GET /api/factories showing factories ids,
// whose chart data's ETags are charts.
func FactoriesETag(ids []int64, charts []string) string {
	var b []byte
	for i, id := range ids {
		b = strconv.AppendInt(b, id, 10)
		b = append(b, ' ')
		b = append(b, charts[i]...)
		b = append(b, '\n')
	}
	return HashETag(b)
}

// OrgFactoriesRecord returns which factories GET /api/factories shows for
// org: the live ones of all, in order. Its version counts the factories
// org ever had plus those deleted, so it only grows.
func OrgFactoriesRecord(org int64, all []domain.Factory) Record {
	e := Entry{Org: org, Version: int64(len(all))}
	var b []byte
	for _, f := range all {
		if f.Deleted() {
			e.Version++
			continue
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, f.ID, 10)
	}
	e.Body = b
	e.ETag = HashETag(b)
	return Record{OrgFactoriesKey(org), e}
}

// DecodeIDs reads the factory ids an OrgFactoriesRecord lists.
func DecodeIDs(b []byte) ([]int64, error) {
	if len(b) == 0 {
		return nil, nil
	}
	parts := strings.Split(string(b), ",")
	out := make([]int64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("corrupt list of factories: %q", p)
		}
		out[i] = n
	}
	return out, nil
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
