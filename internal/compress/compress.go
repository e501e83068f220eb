// Package compress encodes answers for the clients that accept it (zstd,
// gzip) and keeps each body's encoded forms while the body stays the same:
// a body is compressed when it changes, on the first request that wants it
// encoded, not on every request, so that a compressed cached read costs
// what an uncompressed one does.
package compress

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Encodings, as Content-Encoding names them; "" is the identity.
const (
	Zstd = "zstd"
	Gzip = "gzip"
)

// MinSize is the smallest body worth encoding: below it, the answer fits
// in a packet or two either way, and encoding costs more than it saves.
const MinSize = 1400

// Negotiate returns the encoding to answer with for an Accept-Encoding
// header: zstd or gzip when the client accepts it (zstd first at equal
// preference), "" for the identity. An encoding given q=0 is refused, and
// "*" stands for any encoding not named.
func Negotiate(accept string) string {
	best, bestQ := "", 0.0
	named := map[string]float64{}
	wildcard := -1.0
	for _, part := range strings.Split(accept, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				continue
			}
			q = f
		}
		if name == "*" {
			wildcard = q
			continue
		}
		named[name] = q
	}
	for _, enc := range []string{Zstd, Gzip} {
		q, ok := named[enc]
		if !ok {
			q = max(wildcard, 0)
		}
		if q > bestQ {
			best, bestQ = enc, q
		}
	}
	return best
}

// ETag returns the entity tag of the enc encoding of a body whose tag is
// etag: each representation has its own, so that a cache or a client never
// takes one encoding's tag for another's.
func ETag(etag, enc string) string {
	if enc == "" || !strings.HasSuffix(etag, `"`) {
		return etag
	}
	return etag[:len(etag)-1] + "-" + enc + `"`
}

// Cache keeps encoded bodies within a byte budget, the least recently used
// forgotten first.
type Cache struct {
	budget int64
	zstd   *zstd.Encoder

	mu    sync.Mutex
	lru   *list.List // of *variant, most recent first
	byKey map[variantKey]*list.Element
	used  int64

	encoded *prometheus.CounterVec
	bytes   prometheus.GaugeFunc
}

// variantKey names one encoding of one body: its read-model key (or ""
// for an answer assembled per request) and its entity tag; or of one
// piece of a body sent in pieces (see EncodePieces): a segment's column
// by key, column and hash, fixed text by itself (as etag).
type variantKey struct {
	key, etag string
	col       byte
	hash      uint64
	enc       string
}

type variant struct {
	id   variantKey
	body []byte
}

// size is what a kept variant counts against the budget: its bytes, its
// key and a rough overhead for the list element and map entry.
func (v *variant) size() int64 { return int64(len(v.body) + len(v.id.key) + len(v.id.etag) + 64) }

// New returns a cache of at most budget bytes of encoded bodies; its
// metrics are registered with reg.
func New(budget int64, reg prometheus.Registerer) *Cache {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only for invalid options
	}
	c := &Cache{budget: budget, zstd: enc, lru: list.New(), byKey: map[variantKey]*list.Element{},
		encoded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_compressions_total", Help: "Bodies, and pieces of bodies sent in pieces, compressed, by encoding: once each while it is kept.",
		}, []string{"encoding"}),
	}
	c.bytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sprockets_compressed_bytes", Help: "Bytes of compressed bodies kept.",
	}, func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(c.used)
	})
	reg.MustRegister(c.encoded, c.bytes)
	return c
}

// Choose returns the encoding to answer a body of size bytes with, for a
// client that sent accept (Accept-Encoding): "" (the identity) when the
// cache has no budget (compression is off), when the body is smaller than
// MinSize, or when the client accepts neither encoding.
func (c *Cache) Choose(accept string, size int) string {
	if c.budget <= 0 || size < MinSize {
		return ""
	}
	return Negotiate(accept)
}

// Encode returns body encoded with enc (Zstd or Gzip), kept from an earlier
// call when key and etag name the same body.
func (c *Cache) Encode(key, etag, enc string, body []byte) []byte {
	return c.variant(variantKey{key: key, etag: etag, enc: enc}, func() *variant {
		return &variant{body: c.encode(enc, body)}
	}).body
}

// variant returns the variant id names, kept from an earlier call or made
// now by encode.
func (c *Cache) variant(id variantKey, encode func() *variant) *variant {
	c.mu.Lock()
	if el, ok := c.byKey[id]; ok {
		c.lru.MoveToFront(el)
		v := el.Value.(*variant)
		c.mu.Unlock()
		return v
	}
	c.mu.Unlock()
	v := encode()
	v.id = id
	if id.enc == Zstd || id.enc == Gzip {
		c.encoded.WithLabelValues(id.enc).Inc()
	}
	if v.size() > c.budget {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[id]; !ok {
		c.byKey[id] = c.lru.PushFront(v)
		c.used += v.size()
	}
	for c.used > c.budget {
		el := c.lru.Back()
		old := el.Value.(*variant)
		c.lru.Remove(el)
		delete(c.byKey, old.id)
		c.used -= old.size()
	}
	return v
}

func (c *Cache) encode(enc string, body []byte) []byte {
	if enc == Zstd {
		return c.zstd.EncodeAll(body, make([]byte, 0, len(body)/4))
	}
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression) // a valid level: no error
	_, _ = w.Write(body)                                       // into memory: no error
	_ = w.Close()
	return buf.Bytes()
}

// EncodePieces returns a body sent in pieces (key and etag name it)
// encoded with enc, as pieces too: each piece is compressed on its own,
// once while it stays the same, so that an append to a long history
// compresses what changed, not the whole body again. A zstd body is the
// pieces' frames one after the other; a gzip body is their raw deflate
// streams, each ended by a sync flush, between a header and a trailer
// (whose checksum is kept per key and etag).
func (c *Cache) EncodePieces(key, etag, enc string, pieces []readmodel.Piece) []readmodel.Piece {
	out := make([]readmodel.Piece, 0, len(pieces)+3)
	if enc == Gzip {
		out = append(out, readmodel.Piece{Bytes: gzipHeader})
	}
	for _, p := range pieces {
		out = append(out, readmodel.Piece{Bytes: c.piece(enc, p).body})
	}
	if enc == Gzip {
		trailer := c.variant(variantKey{key: key, etag: etag, enc: "gzip-trailer"}, func() *variant {
			var crc uint32
			for _, p := range pieces {
				crc = crc32.Update(crc, crc32.IEEETable, p.Bytes)
			}
			return &variant{body: gzipTrailer(crc, readmodel.Size(pieces))}
		})
		out = append(out, readmodel.Piece{Bytes: trailer.body})
	}
	return out
}

func (c *Cache) piece(enc string, p readmodel.Piece) *variant {
	id := variantKey{key: p.Segment, col: p.Column, hash: p.Hash, enc: enc}
	if p.Segment == "" {
		id.etag = string(p.Bytes)
	}
	return c.variant(id, func() *variant {
		if enc == Zstd {
			return &variant{body: c.zstd.EncodeAll(p.Bytes, make([]byte, 0, len(p.Bytes)/4+16))}
		}
		return &variant{body: deflatePiece(p.Bytes)}
	})
}

// gzipHeader is RFC 1952's: deflate, no name, no time, unknown system.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// gzipTrailer ends a gzip stream of pieces: a final empty deflate block
// (fixed codes: BFINAL, BTYPE 01, end of block), then the CRC-32 and the
// length (modulo 2^32) of what it encodes.
func gzipTrailer(crc uint32, n int) []byte {
	b := []byte{0x03, 0x00}
	b = binary.LittleEndian.AppendUint32(b, crc)
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// deflatePiece compresses b as raw deflate blocks that end on a byte
// boundary and not the stream (a sync flush), so that pieces compressed
// alone follow each other in one stream.
func deflatePiece(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.DefaultCompression) // a valid level: no error
	_, _ = w.Write(b)                                       // into memory: no error
	_ = w.Flush()
	return buf.Bytes()
}
