// Package readmodel owns the read side's shape: the Redis key of each read
// endpoint and the exact bytes of its body. The projector, the reader's
// database fallback and the writer's responses all render through it, so a
// body is the same whichever path produced it.
package readmodel

import "strconv"

// ChartBucketSeconds is the width of the time buckets a factory's /v1 chart
// data is kept in. Appending a sample rewrites one bucket, never the whole
// history.
const ChartBucketSeconds int64 = 3600

// Prefix starts every read-model key.
const Prefix = "rm:"

func id(n int64) string { return strconv.FormatInt(n, 10) }

// SprocketKey holds GET /v1/sprockets/{id}.
func SprocketKey(sprocket int64) string { return Prefix + "sprocket:" + id(sprocket) + ":v1" }

// SprocketCompatKey holds GET /api/sprocket/{id}.
func SprocketCompatKey(sprocket int64) string { return Prefix + "sprocket:" + id(sprocket) + ":compat" }

// FactoryKey holds GET /v1/factories/{id} and the factory's history bounds,
// which say which chart buckets exist.
func FactoryKey(factory int64) string { return Prefix + "factory:" + id(factory) + ":v1" }

// HistoryKey holds the manifest of a factory's history (see history.go),
// from which GET /api/factory/{id} and its chart-data are sent, and GET
// /api/factories in part.
func HistoryKey(factory int64) string { return Prefix + "factory:" + id(factory) + ":history" }

// HistorySegmentKey holds the segment of a factory's history that starts
// at start (HeadSegment: the head).
func HistorySegmentKey(factory, start int64) string {
	return Prefix + "factory:" + id(factory) + ":seg:" + SegmentName(start)
}

// SegmentName is how keys and manifests name the segment that starts at
// start: "h" for the head, else the time.
func SegmentName(start int64) string {
	if start == HeadSegment {
		return "h"
	}
	return id(start)
}

// SegmentIndexKey lists the history segment keys a factory has in Redis,
// found again when it is deleted. It is bookkeeping, not an endpoint's key.
func SegmentIndexKey(factory int64) string { return Prefix + "meta:segments:" + id(factory) }

// ChartBucketKey holds the samples of one factory in one time bucket, from
// which GET /v1/factories/{id}/chart-data is assembled.
func ChartBucketKey(factory, bucket int64) string {
	return Prefix + "factory:" + id(factory) + ":chart:" + id(bucket)
}

// BucketIndexKey lists the chart bucket keys a factory has in Redis, so
// that deleting it removes those that exist rather than every hour between
// its first and last sample. It is bookkeeping, not an endpoint's key.
func BucketIndexKey(factory int64) string { return Prefix + "meta:buckets:" + id(factory) }

// SprocketListKey holds the manifest of an organization's sprocket list
// (see sprockets.go), from which GET /api/sprockets is sent.
func SprocketListKey(org int64) string { return Prefix + "org:" + id(org) + ":sprockets" }

// SprocketSegmentKey holds the segment of an organization's sprocket list
// that starts at start.
func SprocketSegmentKey(org, start int64) string {
	return Prefix + "org:" + id(org) + ":sprockets:seg:" + SegmentName(start)
}

// SprocketIndexKey lists the segment keys of an organization's sprocket
// list. It is bookkeeping, not an endpoint's key.
func SprocketIndexKey(org int64) string { return Prefix + "meta:sprocket-segments:" + id(org) }

// OrgFactoriesKey holds which factories GET /api/factories shows for an
// organization, in order; their histories are in their own keys.
func OrgFactoriesKey(org int64) string { return Prefix + "org:" + id(org) + ":compat:factory-list" }

// Bucket returns the chart bucket a sample time falls in.
func Bucket(t int64) int64 { return t / ChartBucketSeconds }
