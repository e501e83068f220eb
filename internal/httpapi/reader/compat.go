package reader

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// GET /api/sprockets: the organization's sprocket list, sent from its
// manifest and segments as a factory's history is (see serveHistory). A
// read with a consistency token for a sprocket waits, up to
// ConsistencyWait, until the segment of that sprocket shows the write.
func (h *Handlers) compatSprockets(c *fiber.Ctx) error {
	ctx := c.UserContext()
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	if tok != nil && tok.Aggregate != events.Sprocket {
		tok = nil // a factory's write says nothing of sprockets
	}
	key := readmodel.SprocketListKey(org)
	joined := key + "|body" // a short list, joined (see sendSegmented)
	send := func(man readmodel.Entry, m readmodel.Manifest, source string, segs func() ([]readmodel.HeldBody, string, bool)) (bool, error) {
		return h.sendSegmented(c, key, joined, man, man.ETag, readmodel.SprocketsSize(m), source, func() ([]readmodel.Piece, string, bool) {
			held, from, ok := segs()
			return readmodel.SprocketsPieces(held), from, ok
		})
	}
	deadline := time.Now().Add(h.cfg.ConsistencyWait)
	for attempt := 0; attempt < 3 || (tok != nil && time.Now().Before(deadline)); attempt++ {
		if time.Now().UnixNano() < h.skipTil.Load() {
			break
		}
		if attempt >= 3 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
		man, source, ok := h.fromCache(ctx, view{key: key, skipMemory: attempt > 0}, nil)
		if !ok || man.Org != org {
			break
		}
		m, err := readmodel.DecodeManifest(man.Body)
		if err != nil {
			h.log.Warn("sprocket list unreadable, reading the database", "key", key, "err", err)
			break
		}
		if tok != nil && !h.listShows(ctx, org, m, tok) {
			continue
		}
		if body, ok := h.near.Get(joined); ok && body.ETag == man.ETag {
			return h.send(c, body, org, view{key: joined}, source)
		}
		done, err := send(man, m, source, func() ([]readmodel.HeldBody, string, bool) {
			keys, entries, fromMemory, ok := h.segmentEntries(ctx, m, func(start int64) string { return readmodel.SprocketSegmentKey(org, start) })
			if !ok {
				return nil, "", false
			}
			if !fromMemory {
				source = FromCache
			}
			return heldBodies(m, keys, entries), source, true
		})
		if done {
			return err
		}
	}
	var all []domain.Sprocket
	source, err := h.db.Do(ctx, minLSN(tok), func(q Queries) error {
		all, err = q.SprocketSpecsOfOrg(ctx, org)
		return err
	})
	if err != nil {
		return h.dbError(err)
	}
	records := readmodel.SprocketListRecords(h.layouts, org, all)
	man := records[len(records)-1].Entry
	m, _ := readmodel.DecodeManifest(man.Body) // just made: well formed
	keys := make([]string, len(records)-1)
	entries := make([]readmodel.Entry, len(keys))
	for i, r := range records[:len(keys)] {
		keys[i], entries[i] = r.Key, r.Entry
	}
	_, err = send(man, m, source, func() ([]readmodel.HeldBody, string, bool) { return heldBodies(m, keys, entries), source, true })
	return err
}

// listShows reports whether org's sprocket list, laid out as m, shows
// tok's write: the segment tok's sprocket falls in, read from Redis with
// its member versions, is the one m lists and holds the sprocket at tok's
// version or a newer one.
func (h *Handlers) listShows(ctx context.Context, org int64, m readmodel.Manifest, tok *consistency.Token) bool {
	it, ok := m.Item(m.SegmentOf(tok.ID))
	if !ok {
		return false
	}
	etag, members, ok, err := h.cache.Members(ctx, readmodel.SprocketSegmentKey(org, it.Start))
	if err != nil {
		h.cacheFailed(ctx, err)
		return false
	}
	return ok && it.Names(etag) && members.Version(tok.ID) >= tok.Version
}

// heldBodies pairs the segments m lists with their keys and entries.
func heldBodies(m readmodel.Manifest, keys []string, entries []readmodel.Entry) []readmodel.HeldBody {
	out := make([]readmodel.HeldBody, len(m))
	for i, it := range m {
		out[i] = readmodel.HeldBody{Key: keys[i], Hash: it.Hash, Body: entries[i].Body}
	}
	return out
}

// GET /api/sprocket/:id
func (h *Handlers) compatSprocket(c *fiber.Ctx) error {
	id, err := httpapi.ID(c, "id")
	if err != nil {
		return err
	}
	return h.serveSprocket(c, id, c.Params("id"), readmodel.SprocketCompatKey,
		func(r readmodel.SprocketEndpoints) readmodel.Record { return r.Compat })
}

// GET /v1/sprockets/:id
func (h *Handlers) sprocket(c *fiber.Ctx) error {
	id, err := httpapi.PublicID(c, "id", h.cfg.IDs, publicid.Sprocket, events.Sprocket)
	if err != nil {
		return err
	}
	return h.serveSprocket(c, id, c.Params("id"), readmodel.SprocketKey,
		func(r readmodel.SprocketEndpoints) readmodel.Record { return r.V1 })
}

// serveSprocket serves one of a sprocket's endpoints: the one whose key is
// key, and whose record pick takes from SprocketRecords, for sprocket id,
// which the request names ref.
func (h *Handlers) serveSprocket(c *fiber.Ctx, id int64, ref string, key func(id int64) string,
	pick func(readmodel.SprocketEndpoints) readmodel.Record) error {
	return h.serve(c, view{
		key: key(id), aggregate: events.Sprocket, id: id, ref: ref,
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			s, err := q.Sprocket(ctx, id)
			if err != nil {
				return readmodel.Entry{}, err
			}
			return pick(readmodel.SprocketRecords(h.cfg.IDs, s)).Entry, nil
		},
	})
}
