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
// as a factory's history is (history.go): in segments of about
// SprocketSegmentItems sprockets in id order, cut by the organization's
// layout, and a manifest. A segment's body is its live sprockets' items,
// joined by commas; it also lists every sprocket of its range with its
// version (tombstones too), so that a read with a consistency token
// checks the one segment of its sprocket. A change rewrites the segments
// of the sprockets that changed, read again from Postgres by id range,
// and the manifest: never the whole body.
//
// The list's version is the sum of its sprockets' versions, which only
// grows. A segment carries the list's version when it was last written
// (a rebuild cannot know it: `projector verify` compares its content).

// SprocketSegmentItems is how many sprockets a segment of a list holds on
// average: a change reads that many rows again.
const SprocketSegmentItems = 256

// SprocketSegmentRecord returns the record of the segment of org's
// sprocket list that starts at start and holds all (in id order,
// tombstones too), written at the list's version, and what the manifest
// says of it.
func SprocketSegmentRecord(org, start, version int64, all []domain.Sprocket) (Record, ManifestItem) {
	e := Entry{Org: org, Version: version, Members: make(Members, 16*len(all))}
	var body []byte
	for i, s := range all {
		e.Members.set(i, s.ID, s.Version)
		if !s.Deleted() {
			if len(body) > 0 {
				body = append(body, ',')
			}
			body = appendCompatSprocket(body, s)
		}
	}
	e.Body = body
	it := ManifestItem{Start: start, Hash: SegmentHash(body), Size: len(body)}
	e.ETag = SegmentETag(it.Hash)
	return Record{SprocketSegmentKey(org, start), e}, it
}

// SprocketRuns cuts all (in id order) into the runs l makes segments of.
func (l Layout) SprocketRuns(all []domain.Sprocket) []SprocketRun {
	var out []SprocketRun
	cut(l, all, func(s domain.Sprocket) int64 { return s.ID }, func(start int64, run []domain.Sprocket) {
		out = append(out, SprocketRun{Start: start, Sprockets: run})
	})
	return out
}

// SprocketRun is the sprockets of one segment of a sprocket list.
type SprocketRun struct {
	Start     int64
	Sprockets []domain.Sprocket
}

// VersionSum is the sum of the versions of sprockets.
func VersionSum(sprockets []domain.Sprocket) int64 {
	var n int64
	for _, s := range sprockets {
		n += s.Version
	}
	return n
}

// SprocketListManifest returns the record of org's sprocket list manifest,
// at SprocketListKey, at the list's version.
func SprocketListManifest(org, version int64, m Manifest) Record {
	body := EncodeManifest(m)
	return Record{SprocketListKey(org), Entry{Version: version, Org: org, Body: body, ETag: HashETag(body)}}
}

// SprocketListRecords returns the records of org's sprocket list, from
// every sprocket it ever had, laid out by its layout of ls: its segments,
// then its manifest.
func SprocketListRecords(ls Layouts, org int64, all []domain.Sprocket) []Record {
	all = sortedByID(all)
	version := VersionSum(all)
	var out []Record
	var m Manifest
	for _, run := range ls.Sprockets(org).SprocketRuns(all) {
		r, it := SprocketSegmentRecord(org, run.Start, version, run.Sprockets)
		out, m = append(out, r), append(m, it)
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

// sortedByID returns all in id order, sorting a copy only when it is not
// already so.
func sortedByID(all []domain.Sprocket) []domain.Sprocket {
	byID := func(a, b domain.Sprocket) int { return cmp.Compare(a.ID, b.ID) }
	if slices.IsSortedFunc(all, byID) {
		return all
	}
	all = slices.Clone(all)
	slices.SortFunc(all, byID)
	return all
}
