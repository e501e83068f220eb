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

// FactoryCompatKey holds GET /api/factory/{id}.
func FactoryCompatKey(factory int64) string { return Prefix + "factory:" + id(factory) + ":compat" }

// FactoryCompatChartKey holds GET /api/factory/{id}/chart-data.
func FactoryCompatChartKey(factory int64) string {
	return Prefix + "factory:" + id(factory) + ":compat-chart"
}

// ChartBucketKey holds the samples of one factory in one time bucket, from
// which GET /v1/factories/{id}/chart-data is assembled.
func ChartBucketKey(factory, bucket int64) string {
	return Prefix + "factory:" + id(factory) + ":chart:" + id(bucket)
}

// BucketIndexKey lists the chart bucket keys a factory has in Redis, so
// that deleting it removes those that exist rather than every hour between
// its first and last sample. It is bookkeeping, not an endpoint's key.
func BucketIndexKey(factory int64) string { return Prefix + "meta:buckets:" + id(factory) }

// OrgSprocketsKey holds GET /api/sprockets for an organization.
func OrgSprocketsKey(org int64) string { return Prefix + "org:" + id(org) + ":compat:sprockets" }

// OrgFactoriesKey holds GET /api/factories for an organization.
func OrgFactoriesKey(org int64) string { return Prefix + "org:" + id(org) + ":compat:factories" }

// Bucket returns the chart bucket a sample time falls in.
func Bucket(t int64) int64 { return t / ChartBucketSeconds }
