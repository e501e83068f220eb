package reader

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// GET /v1/factories/:id
func (h *Handlers) factory(c *fiber.Ctx) error {
	id, err := httpapi.PublicID(c, "id", h.cfg.IDs, publicid.Factory, events.Factory)
	if err != nil {
		return err
	}
	return h.serve(c, view{
		key: readmodel.FactoryKey(id), aggregate: events.Factory, id: id, ref: c.Params("id"),
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			f, err := q.Factory(ctx, id)
			return readmodel.FactoryRecord(h.cfg.IDs, f).Entry, err
		},
	})
}

// GET /v1/sprockets: a page of the caller's sprockets. Pages are read from
// a replica (or the leader): a cursor space cannot be pre-assembled.
func (h *Handlers) listSprockets(c *fiber.Ctx) error {
	return h.list(c, "/v1/sprockets", publicid.SprocketCursor, func(ctx context.Context, q Queries, org int64, page domain.PageRequest, cursor func(int64) string) ([]byte, string, error) {
		items, err := q.ListSprockets(ctx, org, page)
		if err != nil {
			return nil, "", err
		}
		items, next := trim(items, page.Limit-1, func(s domain.Sprocket) int64 { return s.ID }, cursor)
		return readmodel.SprocketListBody(h.cfg.IDs, items, next), next, nil
	})
}

// GET /v1/factories
func (h *Handlers) listFactories(c *fiber.Ctx) error {
	return h.list(c, "/v1/factories", publicid.FactoryCursor, func(ctx context.Context, q Queries, org int64, page domain.PageRequest, cursor func(int64) string) ([]byte, string, error) {
		items, err := q.ListFactories(ctx, org, page)
		if err != nil {
			return nil, "", err
		}
		items, next := trim(items, page.Limit-1, func(f domain.Factory) int64 { return f.ID }, cursor)
		return readmodel.FactoryListBody(h.cfg.IDs, items, next), next, nil
	})
}

// trim cuts a page read with one item more than limit back to limit and
// returns the cursor of the next page (made by cursor from the id of the
// page's last item), "" when there is none.
func trim[T any](items []T, limit int, id func(T) int64, cursor func(int64) string) ([]T, string) {
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, cursor(id(items[limit-1]))
}

// list reads one page of the list whose cursors are of kind cursors. The
// page function is asked for one item more than the client's limit, to
// learn whether a next page exists, and is given what makes the list's
// cursors.
func (h *Handlers) list(c *fiber.Ctx, path string, cursors publicid.Kind,
	page func(context.Context, Queries, int64, domain.PageRequest, func(int64) string) ([]byte, string, error)) error {
	req, err := httpapi.Page(c, h.cfg.IDs, cursors)
	if err != nil {
		return err
	}
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	minLSN := ""
	if tok != nil {
		minLSN = tok.LSN
	}
	probe := req
	probe.Limit++
	var body []byte
	var next string
	source, err := h.db.Do(c.UserContext(), minLSN, func(q Queries) error {
		var err error
		body, next, err = page(c.UserContext(), q, org, probe, func(last int64) string { return h.cfg.IDs.Encode(cursors, last) })
		return err
	})
	if err != nil {
		return h.dbError(err)
	}
	if next != "" {
		c.Append(fiber.HeaderLink, `<`+path+`?limit=`+strconv.Itoa(req.Limit)+`&cursor=`+url.QueryEscape(next)+`>; rel="next"`)
	}
	return h.send(c, readmodel.Entry{Body: body, ETag: readmodel.HashETag(body), Org: org}, org, view{}, source)
}

// chartData serves GET /v1/factories/:id/chart-data?from=&to=, assembled
// from the time buckets that overlap the range.
func (h *Handlers) chartData(c *fiber.Ctx) error {
	id, err := httpapi.PublicID(c, "id", h.cfg.IDs, publicid.Factory, events.Factory)
	if err != nil {
		return err
	}
	from, err := httpapi.QueryInt(c, "from", 0, 0, domain.MaxSampleTime)
	if err != nil {
		return err
	}
	to, err := httpapi.QueryInt(c, "to", domain.MaxSampleTime, 0, domain.MaxSampleTime)
	if err != nil {
		return err
	}
	if from > to {
		return domain.Errorf(domain.EINVALID, "from (%d) must not be after to (%d)", from, to)
	}
	limit, err := httpapi.QueryInt(c, "limit", domain.MaxSamplesPerRead, 1, domain.MaxSamplesPerRead)
	if err != nil {
		return err
	}
	points, err := httpapi.QueryInt(c, "points", 0, 1, domain.MaxSamplesPerRead)
	if err != nil {
		return err
	}
	if points > 0 && c.Query("limit") != "" {
		return domain.Errorf(domain.EINVALID, "points and limit cannot be combined: points answers the whole range in at most that many points, limit pages through its samples")
	}
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	v := view{key: readmodel.FactoryKey(id), aggregate: events.Factory, id: id, ref: c.Params("id")}
	if points > 0 {
		return h.chartPoints(c, v, org, tok, from, to, int(points))
	}
	if meta, source, ok := h.fromCache(c.UserContext(), v, tok); ok {
		if meta.Deleted || meta.Org != org {
			return v.notFound()
		}
		// A write the token names may have reached Redis and not yet the
		// reader's memory: its buckets come from Redis, which the projector
		// writes before the factory's key.
		named := tok != nil && !tok.Covers(events.Factory, id, 0)
		if samples, fromRedis, ok := h.bucketSamples(c.UserContext(), id, meta, from, to, int(limit)+1, named); ok {
			if fromRedis {
				source = FromCache
			}
			body := h.chartPage(c, id, from, to, int(limit), samples)
			return h.send(c, readmodel.Entry{Body: body, ETag: readmodel.HashETag(body), Org: org}, org, v, source)
		}
	}
	minLSN := ""
	if tok != nil {
		minLSN = tok.LSN
	}
	var e readmodel.Entry
	source, err := h.db.Do(c.UserContext(), minLSN, func(q Queries) error {
		f, samples, err := q.FactorySamples(c.UserContext(), org, id, from, to, int(limit)+1)
		if err != nil {
			return err
		}
		body := h.chartPage(c, id, from, to, int(limit), samples)
		e = readmodel.Entry{Body: body, ETag: readmodel.HashETag(body), Org: f.OrgID, Deleted: f.Deleted()}
		return nil
	})
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return v.notFound()
	}
	if err != nil {
		return h.dbError(err)
	}
	return h.send(c, e, org, v, source)
}

// chartPage is the body of a chart range of samples read with one more
// than limit: when there is that one more, the answer stops at limit, and
// says (next_from, and a Link to the next page) where the rest begins.
func (h *Handlers) chartPage(c *fiber.Ctx, id, from, to int64, limit int, samples []domain.Sample) []byte {
	if len(samples) <= limit {
		return readmodel.ChartRangeBody(h.cfg.IDs, id, from, to, samples, nil)
	}
	samples = samples[:limit]
	next := samples[limit-1].Time + 1
	c.Set(fiber.HeaderLink, fmt.Sprintf(`</v1/factories/%s/chart-data?from=%d&to=%d&limit=%d>; rel="next"`,
		h.cfg.IDs.Encode(publicid.Factory, id), next, to, limit))
	return readmodel.ChartRangeBody(h.cfg.IDs, id, from, to, samples, &next)
}

// bucketSamples collects the first most samples in [from, to] from the
// buckets of the factory whose key is meta, from Redis alone when
// redisOnly, and says whether any bucket came from Redis rather than
// memory. It reads the buckets a hundred at a time, and no more once it
// has most. It reports false when the cache cannot answer (an error, or
// more buckets than MaxChartBuckets).
func (h *Handlers) bucketSamples(ctx context.Context, id int64, meta readmodel.Entry, from, to int64, most int, redisOnly bool) ([]domain.Sample, bool, bool) {
	if meta.First == nil || meta.Last == nil {
		return nil, false, true // no history yet
	}
	lo, hi := max(from, *meta.First), min(to, *meta.Last)
	if lo > hi {
		return nil, false, true
	}
	first, last := readmodel.Bucket(lo), readmodel.Bucket(hi)
	if last-first+1 > int64(h.cfg.MaxChartBuckets) {
		return nil, false, false
	}
	var (
		out       []domain.Sample
		fromRedis bool
	)
	for start := first; start <= last && len(out) < most; start += bucketsPerRead {
		keys := make([]string, 0, bucketsPerRead)
		for b := start; b <= min(last, start+bucketsPerRead-1); b++ {
			keys = append(keys, readmodel.ChartBucketKey(id, b))
		}
		entries, oks, asked, err := h.getMany(ctx, keys, redisOnly)
		if err != nil {
			return nil, false, false
		}
		fromRedis = fromRedis || asked
		for i, e := range entries {
			if !oks[i] {
				continue // an hour without samples
			}
			samples, err := readmodel.DecodeBucket(e.Body)
			if err != nil {
				h.log.Warn("corrupt chart bucket", "key", keys[i], "err", err)
				return nil, false, false
			}
			for _, s := range samples {
				if s.Time >= from && s.Time <= to && len(out) < most {
					out = append(out, s)
				}
			}
		}
	}
	return out, fromRedis, true
}

// bucketsPerRead is how many buckets one read of a chart range asks for
// at once.
const bucketsPerRead = 100

// getMany returns the entries at keys: from memory what it holds (unless
// redisOnly), the rest from Redis in one round trip (and kept in memory).
// ok[i] says whether keys[i] exists; fromRedis whether Redis was asked.
func (h *Handlers) getMany(ctx context.Context, keys []string, redisOnly bool) (entries []readmodel.Entry, ok []bool, fromRedis bool, err error) {
	entries, ok = make([]readmodel.Entry, len(keys)), make([]bool, len(keys))
	var missing []int
	for i, k := range keys {
		if !redisOnly {
			entries[i], ok[i] = h.near.Get(k)
		}
		if !ok[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return entries, ok, false, nil
	}
	if time.Now().UnixNano() < h.skipTil.Load() {
		return nil, nil, true, errSkipped
	}
	ask := make([]string, len(missing))
	for j, i := range missing {
		ask[j] = keys[i]
	}
	ticket := h.near.Ticket()
	got, found, err := h.cache.GetMany(ctx, ask)
	if err != nil {
		h.cacheFailed(ctx, err)
		return nil, nil, true, err
	}
	for j, i := range missing {
		entries[i], ok[i] = got[j], found[j]
		if found[j] {
			h.near.Fill(keys[i], got[j], ticket)
		}
	}
	return entries, ok, true, nil
}

// errSkipped says Redis is being skipped after a failure.
var errSkipped = errors.New("the read model is skipped after a failure")

// GET /v1/audit: a page of the caller's organization's audit trail, oldest
// first (admin scope).
func (h *Handlers) audit(c *fiber.Ctx) error {
	return h.list(c, "/v1/audit", publicid.AuditCursor, func(ctx context.Context, q Queries, org int64, page domain.PageRequest, cursor func(int64) string) ([]byte, string, error) {
		items, err := q.AuditLog(ctx, org, page)
		if err != nil {
			return nil, "", err
		}
		items, next := trim(items, page.Limit-1, func(e domain.AuditEntry) int64 { return e.ID }, cursor)
		return readmodel.AuditListBody(h.cfg.IDs, items, next), next, nil
	})
}

// GET /v1/openapi.json
func (h *Handlers) openAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.Status(http.StatusOK).Send(httpapi.OpenAPI)
}

// chartPoints is GET .../chart-data?points=N: the range in at most N
// points (readmodel.ChartPointsBody): its samples when it holds at most N,
// else per bucket aggregates, from the factory's aggregates in the read
// model, or from the database in one grouped query.
func (h *Handlers) chartPoints(c *fiber.Ctx, v view, org int64, tok *consistency.Token, from, to int64, points int) error {
	ctx := c.UserContext()
	answer := func(bucketSeconds int64, ps []domain.Aggregate) []byte {
		return readmodel.ChartPointsBody(h.cfg.IDs, v.id, from, to, bucketSeconds, ps)
	}
	if meta, source, ok := h.fromCache(ctx, v, tok); ok {
		if meta.Deleted || meta.Org != org {
			return v.notFound()
		}
		named := tok != nil && !tok.Covers(events.Factory, v.id, 0)
		if body, fromRedis, ok := h.cachedPoints(ctx, v.id, meta, from, to, points, named, answer); ok {
			if fromRedis {
				source = FromCache
			}
			return h.send(c, readmodel.Entry{Body: body, ETag: readmodel.HashETag(body), Org: org}, org, v, source)
		}
	}
	minLSN := ""
	if tok != nil {
		minLSN = tok.LSN
	}
	var e readmodel.Entry
	source, err := h.db.Do(ctx, minLSN, func(q Queries) error {
		f, err := q.Factory(ctx, v.id)
		if err != nil {
			return err
		}
		e = readmodel.Entry{Org: f.OrgID, Deleted: f.Deleted()}
		if f.Deleted() || f.OrgID != org {
			return nil
		}
		lo, hi, any := sampled(f.FirstTime, f.LastTime, from, to)
		if !any {
			e.Body = answer(0, nil)
		} else {
			plan := readmodel.PlanChart(v.id, lo, hi, points)
			wlo, whi := plan.Widened(lo, hi)
			buckets, err := q.SampleAggregates(ctx, v.id, wlo, whi, plan.Width*plan.Merge)
			if err != nil {
				return err
			}
			e.Body = answer(plan.Width*plan.Merge, buckets)
			if count(buckets) <= int64(points) {
				_, samples, err := q.FactorySamples(ctx, org, v.id, from, to, points)
				if err != nil {
					return err
				}
				e.Body = answer(0, readmodel.RawPoints(samples))
			}
		}
		e.ETag = readmodel.HashETag(e.Body)
		return nil
	})
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return v.notFound()
	}
	if err != nil {
		return h.dbError(err)
	}
	return h.send(c, e, org, v, source)
}

// cachedPoints answers chartPoints from the factory's aggregates in the
// read model (and its buckets, when the range holds few samples); false
// when it cannot (an error, or no aggregates where there are samples).
func (h *Handlers) cachedPoints(ctx context.Context, id int64, meta readmodel.Entry, from, to int64, points int, redisOnly bool,
	answer func(int64, []domain.Aggregate) []byte) ([]byte, bool, bool) {
	lo, hi, any := sampled(meta.First, meta.Last, from, to)
	if !any {
		return answer(0, nil), false, true
	}
	plan := readmodel.PlanChart(id, lo, hi, points)
	entries, oks, fromRedis, err := h.getMany(ctx, plan.Keys, redisOnly)
	if err != nil {
		return nil, false, false
	}
	var buckets []domain.Aggregate
	found := false
	for i, e := range entries {
		if !oks[i] {
			continue
		}
		found = true
		b, err := readmodel.DecodeAggregates(e.Body)
		if err != nil {
			h.log.Warn("corrupt chart aggregates", "key", plan.Keys[i], "err", err)
			return nil, false, false
		}
		buckets = append(buckets, b...)
	}
	if !found {
		return nil, false, false // not built yet: the database knows
	}
	ps := plan.Points(buckets, lo, hi)
	if count(ps) <= int64(points) {
		// The samples themselves, from the hourly buckets; when there are
		// too many hours to read, from the database, which answers alike.
		samples, raw, ok := h.bucketSamples(ctx, id, meta, from, to, points, redisOnly)
		if !ok {
			return nil, false, false
		}
		return answer(0, readmodel.RawPoints(samples)), fromRedis || raw, true
	}
	return answer(plan.Width*plan.Merge, ps), fromRedis, true
}

// sampled returns the part [lo, hi] of [from, to] between a history's
// first and last sample times, and whether there is one.
func sampled(first, last *int64, from, to int64) (lo, hi int64, any bool) {
	if first == nil || last == nil {
		return 0, 0, false
	}
	lo, hi = max(from, *first), min(to, *last)
	return lo, hi, lo <= hi
}

// count is the number of samples aggregates hold.
func count(as []domain.Aggregate) int64 {
	n := int64(0)
	for _, a := range as {
		n += a.Count
	}
	return n
}
