package reader

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/compress"
	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/live"
	"github.com/sprockets-api/sprockets/internal/nearcache"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Cache is the read model as the reader needs it.
type Cache interface {
	Get(ctx context.Context, key string, withMembers bool) (readmodel.Entry, bool, error)
	GetMany(ctx context.Context, keys []string) ([]readmodel.Entry, []bool, error)
	Members(ctx context.Context, key string) (etag string, m readmodel.Members, ok bool, err error)
}

// Queries are the reads the fallback path makes on one database.
type Queries interface {
	Sprocket(ctx context.Context, id int64) (domain.Sprocket, error)
	ListSprockets(ctx context.Context, org int64, page domain.PageRequest) ([]domain.Sprocket, error)
	SprocketSpecsOfOrg(ctx context.Context, org int64) ([]domain.Sprocket, error)
	Factory(ctx context.Context, id int64) (domain.Factory, error)
	ListFactories(ctx context.Context, org int64, page domain.PageRequest) ([]domain.Factory, error)
	FactoryHistory(ctx context.Context, org, id int64) (domain.Factory, []domain.Sample, error)
	FactorySamples(ctx context.Context, org, id, from, to int64, limit int) (domain.Factory, []domain.Sample, error)
	SampleAggregates(ctx context.Context, id, from, to, width int64) ([]domain.Aggregate, error)
	FactoriesWithSamples(ctx context.Context, org int64) ([]domain.Factory, map[int64][]domain.Sample, error)
	AuditLog(ctx context.Context, org int64, page domain.PageRequest) ([]domain.AuditEntry, error)
}

// Near is the reader's memory of the entries it served (nearcache.Cache):
// it answers only while the feed of changes is fresh, and keeps a fill only
// when no change of its key came between the ticket and the fill.
type Near interface {
	Get(key string) (readmodel.Entry, bool)
	Ticket() nearcache.Ticket
	Fill(key string, e readmodel.Entry, t nearcache.Ticket)
}

// Database runs reads on a replica fresh enough for minLSN ("" for any
// within the lag bound) or on the leader, and says which it used.
type Database interface {
	Do(ctx context.Context, minLSN string, fn func(Queries) error) (string, error)
}

// Config tunes the reader.
type Config struct {
	// ConsistencyWait bounds how long a read with a consistency token waits
	// for the projector before going to the database.
	ConsistencyWait time.Duration
	// CacheBackoff is how long Redis is skipped after it failed, so that an
	// outage costs one timeout, not one per request.
	CacheBackoff time.Duration
	// MaxChartBuckets caps the buckets one chart read assembles from Redis;
	// wider ranges are read from the database in one query.
	MaxChartBuckets int
	// Tokens checks the consistency tokens requests carry.
	Tokens *consistency.Signer
	// IDs makes and reads the ids of the /v1 routes.
	IDs *publicid.Codec
	// Live opens streams of changes (live.Hub).
	Live Streams
}

// Streams opens streams of an organization's changes (live.Hub).
type Streams interface {
	Open(ctx context.Context, r live.Request) (*live.Stream, error)
}

// Encoder compresses answers for the clients that accept it, keeping each
// body's encoded forms while it stays the same (compress.Cache).
type Encoder interface {
	Choose(acceptEncoding string, size int) string
	Encode(key, etag, encoding string, body []byte) []byte
	EncodePieces(key, etag, encoding string, pieces []readmodel.Piece) []readmodel.Piece
}

// Handlers serve the read API.
type Handlers struct {
	// layouts cut the bodies the database answers with into segments, as
	// the projector does.
	layouts readmodel.Layouts
	encoder Encoder
	near    Near
	cache   Cache
	db      Database
	cfg     Config
	log     *slog.Logger
	skipTil atomic.Int64 // unix nanoseconds before which Redis is not asked
	served  func(source string)
}

// Sources of an answer, in the X-Read-Source header (with the database's:
// postgres.FromReplica, postgres.FromLeader).
const (
	FromMemory = "memory" // the reader's own memory of the read model
	FromCache  = "cache"  // the read model in Redis
)

// New returns the read API's handlers. Each request reads as its principal's
// organization (see httpapi.Access); served is told where each answer came
// from (metrics).
func New(near Near, cache Cache, db Database, encoder Encoder, cfg Config, log *slog.Logger, served func(string)) *Handlers {
	return &Handlers{layouts: readmodel.LayoutsOf(cfg.IDs), near: near, cache: cache, db: db, encoder: encoder, cfg: cfg, log: log, served: served}
}

// org is the organization a request reads as.
func (h *Handlers) org(c *fiber.Ctx) int64 { return httpapi.PrincipalOf(c).OrgID }

// view is one read-model key and how to check and rebuild it.
type view struct {
	key string
	// aggregate and id name what a single-resource key is about; for a
	// collection, collection names the member kind instead.
	aggregate  string
	id         int64
	ref        string // the id as the request wrote it, for messages
	collection string
	// skipMemory reads Redis even when the reader's memory holds the key.
	skipMemory bool
	// load builds the entry from a database when the cache cannot answer.
	load func(ctx context.Context, q Queries) (readmodel.Entry, error)
}

// notFound is the error for a tombstone or another owner's resource: made
// when it is answered, not per request.
func (v view) notFound() error {
	return domain.Errorf(domain.ENOTFOUND, "%s %s not found", v.aggregate, v.ref)
}

// token checks the request's consistency token, if any, and returns it
// when it names a write of org: another organization's write says nothing
// about this data. A token this service did not sign is an EINVALID error.
func (h *Handlers) token(c *fiber.Ctx, org int64) (*consistency.Token, error) {
	raw := c.Get(consistency.Header)
	if raw == "" {
		return nil, nil
	}
	t, err := h.cfg.Tokens.Parse(raw)
	if err != nil || t.Org != org {
		return nil, err
	}
	return &t, nil
}

// serve answers v: from the cache when it holds a fresh enough entry, else
// from the database.
func (h *Handlers) serve(c *fiber.Ctx, v view) error {
	org := h.org(c)
	tok, err := h.token(c, org)
	if err != nil {
		return err
	}
	if e, source, ok := h.fromCache(c.UserContext(), v, tok); ok {
		return h.send(c, e, org, v, source)
	}
	var e readmodel.Entry
	source, err := h.db.Do(c.UserContext(), minLSN(tok), func(q Queries) error {
		var err error
		e, err = v.load(c.UserContext(), q)
		return err
	})
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return v.notFound() // named as the request named it
	}
	if err != nil {
		return h.dbError(err)
	}
	return h.send(c, e, org, v, source)
}

// fromCache returns v's entry, and where it came from, when the reader's
// memory or Redis holds one that covers tok, waiting up to ConsistencyWait
// for the projector to catch up. What Redis answers is kept in memory.
func (h *Handlers) fromCache(ctx context.Context, v view, tok *consistency.Token) (readmodel.Entry, string, bool) {
	withMembers := tok != nil && v.collection != "" && tok.Aggregate == v.collection
	if !withMembers && !v.skipMemory {
		if e, ok := h.near.Get(v.key); ok && covers(e, v, tok) {
			return e, FromMemory, true
		}
	}
	if time.Now().UnixNano() < h.skipTil.Load() {
		return readmodel.Entry{}, "", false
	}
	deadline := time.Now().Add(h.cfg.ConsistencyWait)
	for {
		ticket := h.near.Ticket()
		e, ok, err := h.cache.Get(ctx, v.key, withMembers)
		if err != nil {
			h.cacheFailed(ctx, err)
			return e, "", false
		}
		if ok {
			h.near.Fill(v.key, e, ticket)
		}
		if ok && covers(e, v, tok) {
			return e, FromCache, true
		}
		if tok == nil || time.Now().After(deadline) {
			return e, "", false
		}
		select {
		case <-ctx.Done():
			return e, "", false
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// cacheFailed skips Redis for a while after it failed, so that an outage
// costs one timeout, not one per request.
func (h *Handlers) cacheFailed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		h.log.Warn("read model unavailable, reading the database", "err", err)
		h.skipTil.Store(time.Now().Add(h.cfg.CacheBackoff).UnixNano())
	}
}

// covers reports whether e is at least as new as the write tok names.
func covers(e readmodel.Entry, v view, tok *consistency.Token) bool {
	if tok == nil {
		return true
	}
	if v.collection != "" {
		if tok.Aggregate != v.collection {
			return true
		}
		return e.Members.Version(tok.ID) >= tok.Version
	}
	return tok.Covers(v.aggregate, v.id, e.Version)
}

func (h *Handlers) send(c *fiber.Ctx, e readmodel.Entry, org int64, v view, source string) error {
	if e.Deleted || e.Org != org {
		return v.notFound()
	}
	h.served(source)
	enc, fresh := h.answer(c, e.ETag, source, len(e.Body))
	if !fresh {
		return c.SendStatus(http.StatusNotModified)
	}
	return h.sendBody(c, v.key, e.ETag, enc, e.Body)
}

// sendBody sends body, encoded with enc; key and etag name it for keeping
// its encoded forms.
func (h *Handlers) sendBody(c *fiber.Ctx, key, etag, enc string, body []byte) error {
	if enc == "" {
		return c.Send(body)
	}
	return c.Send(h.encoder.Encode(key, etag, enc, body))
}

// headerReadSource says where an answer came from: FromMemory, FromCache,
// or the database's postgres.FromReplica or FromLeader.
const headerReadSource = "X-Read-Source"

// answer sets the headers of a read's answer, whose body (of size bytes)
// has the ETag etag and came from source, and returns the encoding to send
// it in; false when the client's copy is current (a 304 is the answer).
// Called again for the same request, it replaces what it set.
func (h *Handlers) answer(c *fiber.Ctx, etag, source string, size int) (string, bool) {
	c.Set(headerReadSource, source)
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Vary(fiber.HeaderAcceptEncoding)
	enc := h.encoder.Choose(c.Get(fiber.HeaderAcceptEncoding), size)
	etag = compress.ETag(etag, enc)
	c.Set(fiber.HeaderETag, etag)
	c.Response().Header.Del(fiber.HeaderContentEncoding)
	if httpapi.NotModified(c, etag) {
		return "", false
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	if enc != "" {
		c.Set(fiber.HeaderContentEncoding, enc)
	}
	return enc, true
}

// writePieces sends a body made of pieces, encoded with enc; key and etag
// name it for keeping its encoded forms.
func (h *Handlers) writePieces(c *fiber.Ctx, key, etag, enc string, pieces []readmodel.Piece) error {
	if enc != "" {
		pieces = h.encoder.EncodePieces(key, etag, enc, pieces)
	}
	size := readmodel.Size(pieces)
	if size <= joinUnder {
		return c.Send(readmodel.Join(pieces))
	}
	bufs := make(net.Buffers, len(pieces))
	for i, p := range pieces {
		bufs[i] = p.Bytes
	}
	c.Context().SetBodyStream(&bufs, size)
	return nil
}

// joinUnder is the size under which a body in pieces is joined into one
// buffer to send: copying it costs less than streaming it.
const joinUnder = 64 << 10

// dbError passes domain errors through and turns a database failure into a
// 503: it is no fault of the client's.
func (h *Handlers) dbError(err error) error {
	var de *domain.Error
	if errors.As(err, &de) {
		return err
	}
	h.log.Error("database read failed", "err", err)
	return domain.Errorf(domain.EUNAVAILABLE, "the data store is unavailable; retry shortly")
}
