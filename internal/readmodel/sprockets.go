package readmodel

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/jsonenc"
)

// The body of GET /api/sprockets holds every live sprocket of an
// organization, tens of thousands under load (8 MB at 89,000). It is kept
// as a factory's history is (history.go): in segments of sprockets in id
// order, cut by the layout, and a manifest. A segment's body is its live
// sprockets' items, joined by commas; it also lists every sprocket of its
// range with its version (tombstones too), so that a read with a
// consistency token checks the one segment of its sprocket. A change
// rewrites the segments of the sprockets that changed, read again from
// Postgres by range, and the manifest: never the whole body.

// SprocketSegmentRecord returns the record of the segment of org's
// sprocket list that starts at start and holds all (in id order,
// tombstones too), and what the manifest says of it. Its version is the
// sum of its sprockets' versions, which only grows.
func SprocketSegmentRecord(org, start int64, all []domain.Sprocket) (Record, ManifestItem) {
	e := Entry{Org: org, Members: make(Members, 16*len(all))}
	var body []byte
	for i, s := range all {
		e.Members.set(i, s.ID, s.Version)
		e.Version += s.Version
		if !s.Deleted() {
			if len(body) > 0 {
				body = append(body, ',')
			}
			body = appendCompatSprocket(body, s)
		}
	}
	e.Body = body
	it := ManifestItem{Start: start, Hash: SegmentHash(body), Size: len(body)}
	e.ETag = strconv.FormatUint(it.Hash, 16)
	return Record{SprocketSegmentKey(org, start), e}, it
}

// SprocketRuns cuts all (in id order) into the runs l makes segments of.
func (l Layout) SprocketRuns(all []domain.Sprocket) []SprocketRun {
	var out []SprocketRun
	cur := SprocketRun{Start: HeadSegment}
	for _, s := range all {
		if l.StartsSegment(s.ID) {
			if len(cur.Sprockets) > 0 {
				out = append(out, cur)
			}
			cur = SprocketRun{Start: s.ID}
		}
		cur.Sprockets = append(cur.Sprockets, s)
	}
	if len(cur.Sprockets) > 0 {
		out = append(out, cur)
	}
	return out
}

// SprocketRun is the sprockets of one segment of a sprocket list.
type SprocketRun struct {
	Start     int64
	Sprockets []domain.Sprocket
}

// SprocketListManifest returns the record of org's sprocket list manifest,
// at SprocketListKey, whose version (the sum of its segments') is version.
func SprocketListManifest(org, version int64, m Manifest) Record {
	body := EncodeManifest(m)
	return Record{SprocketListKey(org), Entry{Version: version, Org: org, Body: body, ETag: HashETag(body)}}
}

// SprocketListRecords returns the records of org's sprocket list, from
// every sprocket it ever had, laid out by l: its segments, then its
// manifest.
func SprocketListRecords(l Layout, org int64, all []domain.Sprocket) []Record {
	var out []Record
	var m Manifest
	var version int64
	for _, run := range l.SprocketRuns(sortedByID(all)) {
		r, it := SprocketSegmentRecord(org, run.Start, run.Sprockets)
		out, m, version = append(out, r), append(m, it), version+r.Entry.Version
	}
	return append(out, SprocketListManifest(org, version, m))
}

// Range returns the ids the segment of m that starts at start holds: from
// lo up to, not including, hi.
func (m Manifest) Range(start int64) (lo, hi int64) {
	lo, hi = start, math.MaxInt64
	if start == HeadSegment {
		lo = math.MinInt64
	}
	i := sort.Search(len(m), func(i int) bool { return m[i].Start > start })
	if i < len(m) {
		hi = m[i].Start
	}
	return lo, hi
}

// Fixed pieces of GET /api/sprockets.
var (
	pieceSprocketsOpen = Piece{Bytes: []byte(`{"sprockets":[`)}
	pieceSprocketsEnd  = Piece{Bytes: []byte(`]}`)}
)

// HeldBody is a segment's body as a reader holds it, with its key and
// hash.
type HeldBody struct {
	Key  string
	Hash uint64
	Body []byte
}

// SprocketsPieces is GET /api/sprockets, from the segments of the list in
// order: the seed file's shape, with ids.
func SprocketsPieces(segs []HeldBody) []Piece {
	out := []Piece{pieceSprocketsOpen}
	first := true
	for _, s := range segs {
		if len(s.Body) == 0 {
			continue // every sprocket of it deleted
		}
		if !first {
			out = append(out, pieceComma)
		}
		first = false
		out = append(out, Piece{Segment: s.Key, Column: 's', Hash: s.Hash, Bytes: s.Body})
	}
	return append(out, pieceSprocketsEnd)
}

// SprocketsSize is the length of GET /api/sprockets from a list laid out
// as m.
func SprocketsSize(m Manifest) int {
	n, items := len(pieceSprocketsOpen.Bytes)+len(pieceSprocketsEnd.Bytes), 0
	for _, it := range m {
		if it.Size > 0 {
			n += it.Size
			items++
		}
	}
	return n + max(items-1, 0)*len(pieceComma.Bytes)
}

// appendCompatSprocket appends s as an item of the compatibility bodies,
// exactly as encoding/json writes compatSprocket.
func appendCompatSprocket(b []byte, s domain.Sprocket) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, s.ID, 10)
	b = append(b, ',')
	b = jsonenc.SprocketSpec(b, s.SprocketSpec)
	return append(b, '}')
}

// sortedByID returns all in id order, newest version first among equal ids,
// sorting a copy only when it is not already so.
func sortedByID(all []domain.Sprocket) []domain.Sprocket {
	byID := func(a, b domain.Sprocket) int {
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(b.Version, a.Version)
	}
	if slices.IsSortedFunc(all, byID) {
		return all
	}
	all = slices.Clone(all)
	slices.SortFunc(all, byID)
	return all
}
