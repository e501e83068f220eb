package reader

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// The original routes' factory bodies are sent from a history's manifest
// and segments (readmodel/history.go): the reader keeps in memory the
// segments it read, and after an append reads again only the manifest and
// the segment that changed. A segment is used only when its hash is the
// one the manifest lists, so an answer is always one version of the
// history, never a mix.

// history is a factory's history as the reader holds it.
type history struct {
	manifest readmodel.Entry
	segments []readmodel.HeldSegment
}

// GET /api/factory/:id
func (h *Handlers) compatFactory(c *fiber.Ctx) error { return h.serveHistory(c, true) }

// GET /api/factory/:id/chart-data
func (h *Handlers) compatChartData(c *fiber.Ctx) error { return h.serveHistory(c, false) }

// serveHistory sends factory :id's history: the factory item when whole,
// else its chart data alone. The manifest gives the answer's ETag and
// length, so a client whose copy is current gets its 304 before any
// segment is read. When a segment is newer than the manifest read (an
// append came in between), the manifest is read again, from Redis; after
// a few tries, or when Redis fails, the database answers.
func (h *Handlers) serveHistory(c *fiber.Ctx, whole bool) error {
	id, err := httpapi.ID(c, "id")
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	v := view{key: readmodel.HistoryKey(id), aggregate: events.Factory, id: id, ref: c.Params("id")}
	// A body short enough is also kept joined, under a key of its own,
	// and used while its ETag is the manifest's.
	joined := v.key + "|chart"
	etagOf := func(man readmodel.Entry) string { return man.ETag }
	isJoined := func(body, man readmodel.Entry) bool { return body.ETag == man.ETag }
	if whole {
		joined = v.key + "|factory"
		etagOf = func(man readmodel.Entry) string { return readmodel.FactoryETag(man.ETag) }
		isJoined = func(body, man readmodel.Entry) bool { return readmodel.IsFactoryETag(body.ETag, man.ETag) }
	}
	send := func(man readmodel.Entry, m readmodel.Manifest, source string, segs func() ([]readmodel.HeldSegment, string, bool)) (bool, error) {
		if man.Deleted || man.Org != org {
			return true, v.notFound()
		}
		size := readmodel.ChartSize(m)
		if whole {
			size = readmodel.FactorySize(id, m)
		}
		return h.sendSegmented(c, v.key, joined, man, etagOf(man), size, source, func() ([]readmodel.Piece, string, bool) {
			held, from, ok := segs()
			if whole {
				return readmodel.AppendFactoryPieces(nil, id, held), from, ok
			}
			return readmodel.AppendChartPieces(nil, held), from, ok
		})
	}
	for attempt := 0; attempt < 3 && time.Now().UnixNano() >= h.skipTil.Load(); attempt++ {
		v.skipMemory = attempt > 0
		man, source, ok := h.fromCache(ctx, v, tok)
		if !ok {
			break
		}
		if body, ok := h.near.Get(joined); ok && !man.Deleted && man.Org == org && isJoined(body, man) {
			return h.send(c, body, org, view{key: joined}, source)
		}
		m, err := readmodel.DecodeManifest(man.Body)
		if err != nil {
			h.log.Warn("history manifest unreadable, reading the database", "key", v.key, "err", err)
			break
		}
		done, err := send(man, m, source, func() ([]readmodel.HeldSegment, string, bool) {
			segs, fromMemory, ok := h.segments(ctx, id, m)
			if fromMemory {
				return segs, source, ok
			}
			return segs, FromCache, ok
		})
		if done {
			return err
		}
	}
	var f domain.Factory
	var samples []domain.Sample
	source, err := h.db.Do(ctx, minLSN(tok), func(q Queries) error {
		f, samples, err = q.FactoryHistory(ctx, org, id)
		return err
	})
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return v.notFound()
	}
	if err != nil {
		return h.dbError(err)
	}
	man, segs := readmodel.HeldHistory(h.layouts, f, samples)
	m, _ := readmodel.DecodeManifest(man.Body) // just made: well formed
	_, err = send(man, m, source, func() ([]readmodel.HeldSegment, string, bool) { return segs, source, true })
	return err
}

// sendSegmented answers with a body sent from segments, whose ETag and
// length the manifest man gave: a 304 when the client's copy is current,
// before any segment is read; else the pieces pieces returns (with where
// they came from). A body short enough is joined and kept in memory under
// the key joined, for as long as its ETag is the manifest's. It reports
// false, having sent nothing, when pieces fails.
func (h *Handlers) sendSegmented(c *fiber.Ctx, key, joined string, man readmodel.Entry, etag string, size int, source string,
	pieces func() ([]readmodel.Piece, string, bool)) (bool, error) {
	enc, fresh := h.answer(c, etag, source, size)
	if !fresh {
		h.served(source)
		return true, c.SendStatus(http.StatusNotModified)
	}
	parts, from, ok := pieces()
	if !ok {
		return false, nil
	}
	h.served(from)
	c.Set(headerReadSource, from)
	if size > joinUnder {
		return true, h.writePieces(c, key, etag, enc, parts)
	}
	body := readmodel.Join(parts)
	h.near.Fill(joined, readmodel.Entry{Body: body, ETag: etag, Version: man.Version, Org: man.Org}, h.near.Ticket())
	return true, h.sendBody(c, joined, etag, enc, body)
}

// historyFromCache returns the history v names, with its segments, from
// the reader's memory or Redis, at least as new as tok, and where it came
// from; only its manifest when it is deleted or not org's. False when it
// cannot (see serveHistory).
func (h *Handlers) historyFromCache(ctx context.Context, v view, org int64, tok *consistency.Token) (history, string, bool) {
	for attempt := 0; attempt < 3 && time.Now().UnixNano() >= h.skipTil.Load(); attempt++ {
		v.skipMemory = attempt > 0
		man, source, ok := h.fromCache(ctx, v, tok)
		if !ok {
			return history{}, "", false
		}
		if man.Deleted || man.Org != org {
			return history{manifest: man}, source, true
		}
		m, err := readmodel.DecodeManifest(man.Body)
		if err != nil {
			h.log.Warn("history manifest unreadable, reading the database", "key", v.key, "err", err)
			return history{}, "", false
		}
		segs, fromMemory, ok := h.segments(ctx, v.id, m)
		if ok {
			if !fromMemory {
				source = FromCache
			}
			return history{manifest: man, segments: segs}, source, true
		}
	}
	return history{}, "", false
}

// segments returns the segments m lists for factory id, each from the
// reader's memory or else Redis, and whether all came from memory. It
// fails (false) when a segment is not the one m lists or Redis fails.
func (h *Handlers) segments(ctx context.Context, id int64, m readmodel.Manifest) ([]readmodel.HeldSegment, bool, bool) {
	keys, entries, fromMemory, ok := h.segmentEntries(ctx, m, func(start int64) string { return readmodel.HistorySegmentKey(id, start) })
	if !ok {
		return nil, false, false
	}
	out := make([]readmodel.HeldSegment, len(m))
	for i, it := range m {
		cols, err := readmodel.SegmentColumns(entries[i].Body)
		if err != nil {
			return nil, false, false
		}
		out[i] = readmodel.HeldSegment{Key: keys[i], Hash: it.Hash, Columns: cols}
	}
	return out, fromMemory, true
}

// segmentEntries returns the keys (key makes them) and the entries of the
// segments m lists, each from the reader's memory or else Redis (and then
// kept in memory), and whether all came from memory. It fails (false) when
// a segment is not the one m lists (its hash differs) or Redis fails.
func (h *Handlers) segmentEntries(ctx context.Context, m readmodel.Manifest, key func(start int64) string) ([]string, []readmodel.Entry, bool, bool) {
	keys := make([]string, len(m))
	out := make([]readmodel.Entry, len(m))
	var missing []int
	var missingKeys []string
	for i, it := range m {
		keys[i] = key(it.Start)
		if e, ok := h.near.Get(keys[i]); ok && it.Names(e.ETag) {
			out[i] = e
			continue
		}
		missing, missingKeys = append(missing, i), append(missingKeys, keys[i])
	}
	if len(missing) == 0 {
		return keys, out, true, true
	}
	if time.Now().UnixNano() < h.skipTil.Load() {
		return nil, nil, false, false
	}
	ticket := h.near.Ticket()
	entries, oks, err := h.cache.GetMany(ctx, missingKeys)
	if err != nil {
		h.cacheFailed(ctx, err)
		return nil, nil, false, false
	}
	for j, i := range missing {
		if !oks[j] || !m[i].Names(entries[j].ETag) {
			return nil, nil, false, false
		}
		h.near.Fill(missingKeys[j], entries[j], ticket)
		out[i] = entries[j]
	}
	return keys, out, false, true
}

// GET /api/factories: the live factories the organization's list names,
// each with its history. With a consistency token for a factory, the
// answer waits (up to ConsistencyWait) until both the list and that
// factory's history show the write.
func (h *Handlers) compatFactories(c *fiber.Ctx) error {
	ctx := c.UserContext()
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	if tok != nil && tok.Aggregate != events.Factory {
		tok = nil // a sprocket's write says nothing of factories
	}
	deadline := time.Now().Add(h.cfg.ConsistencyWait)
	for attempt := 0; ; attempt++ {
		ids, hists, source, ok := h.factoriesFromCache(ctx, org, tok, attempt > 0)
		if ok {
			return h.sendFactories(c, ids, hists, source)
		}
		if tok == nil || time.Now().After(deadline) || time.Now().UnixNano() < h.skipTil.Load() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	var all []domain.Factory
	var samples map[int64][]domain.Sample
	source, err := h.db.Do(ctx, minLSN(tok), func(q Queries) error {
		all, samples, err = q.FactoriesWithSamples(ctx, org)
		return err
	})
	if err != nil {
		return h.dbError(err)
	}
	var ids []int64
	var hists []history
	for _, f := range all {
		if !f.Deleted() {
			man, segs := readmodel.HeldHistory(h.layouts, f, samples[f.ID])
			ids, hists = append(ids, f.ID), append(hists, history{manifest: man, segments: segs})
		}
	}
	return h.sendFactories(c, ids, hists, source)
}

// factoriesFromCache returns org's live factories and their histories from
// memory or Redis, when the list and the histories are there and show
// tok's write; skipMemory reads the list from Redis.
func (h *Handlers) factoriesFromCache(ctx context.Context, org int64, tok *consistency.Token, skipMemory bool) ([]int64, []history, string, bool) {
	list, source, ok := h.fromCache(ctx, view{key: readmodel.OrgFactoriesKey(org), skipMemory: skipMemory}, nil)
	if !ok || list.Org != org {
		return nil, nil, "", false
	}
	listed, err := readmodel.DecodeIDs(list.Body)
	if err != nil {
		h.log.Warn("list of factories unreadable, reading the database", "key", readmodel.OrgFactoriesKey(org), "err", err)
		return nil, nil, "", false
	}
	if tok != nil && !slices.Contains(listed, tok.ID) {
		// A deletion the list shows, or a creation it does not show yet.
		v := view{key: readmodel.HistoryKey(tok.ID), aggregate: events.Factory, id: tok.ID, skipMemory: skipMemory}
		man, _, ok := h.fromCache(ctx, v, tok)
		if !ok || !man.Deleted {
			return nil, nil, "", false
		}
	}
	var ids []int64
	var hists []history
	for _, id := range listed {
		var t *consistency.Token
		if tok != nil && tok.ID == id {
			t = tok
		}
		v := view{key: readmodel.HistoryKey(id), aggregate: events.Factory, id: id, skipMemory: skipMemory}
		hist, from, ok := h.historyFromCache(ctx, v, org, t)
		if !ok || hist.manifest.Org != org || (t != nil && !t.Covers(events.Factory, id, hist.manifest.Version)) {
			return nil, nil, "", false
		}
		if from != FromMemory {
			source = from
		}
		if !hist.manifest.Deleted { // deleted since the list was built
			ids, hists = append(ids, id), append(hists, hist)
		}
	}
	return ids, hists, source, true
}

func (h *Handlers) sendFactories(c *fiber.Ctx, ids []int64, hists []history, source string) error {
	items := make([]readmodel.FactoryHistory, len(ids))
	charts := make([]string, len(ids))
	for i, hist := range hists {
		items[i] = readmodel.FactoryHistory{ID: ids[i], Segments: hist.segments}
		charts[i] = hist.manifest.ETag
	}
	pieces := readmodel.FactoriesPieces(items)
	etag := readmodel.FactoriesETag(ids, charts)
	h.served(source)
	enc, fresh := h.answer(c, etag, source, readmodel.Size(pieces))
	if !fresh {
		return c.SendStatus(http.StatusNotModified)
	}
	return h.writePieces(c, readmodel.OrgFactoriesKey(h.org(c)), etag, enc, pieces)
}

// minLSN is the position a database must have replayed to answer for tok.
func minLSN(tok *consistency.Token) string {
	if tok == nil {
		return ""
	}
	return tok.LSN
}
