package readmodel

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// A factory's history, as the original routes show it (three columns of a
// million numbers, 17 MB), is kept in Redis in segments of about
// SegmentSamples samples each, and a manifest that lists them in time
// order with a hash of each. An append rewrites the segment it falls in
// (one that grew too long splits) and the manifest: its cost does not grow
// with the history. A reader sends the segments' columns in order, and
// keeps in memory the segments that did not change.
//
// Where a segment starts is decided by the samples alone (see Layout), so
// the layout does not depend on the order samples arrived in, a rebuild
// from Postgres lays a history out exactly as the appends did, and
// `projector verify` compares segments byte for byte.

// SegmentSamples is how many samples a segment holds on average (a power
// of two). Segment lengths are spread geometrically around it: one in
// e^10 is ten times as long.
const SegmentSamples = 2048

// HeadSegment is the start of the segment that holds the samples before the
// first one that starts a segment.
const HeadSegment int64 = -1

// Layout decides where segments start: a sample (or a sprocket) starts
// one when its time (or id), mixed with the layout's seed, is a multiple
// of how many it holds on average. Every factory's history and every
// organization's sprocket list has a layout of its own (see Layouts).
type Layout struct{ seed, every uint64 }

// StartsSegment reports whether a sample at time t (or a sprocket of id t)
// starts a segment.
func (l Layout) StartsSegment(t int64) bool { return mix(uint64(t)^l.seed)%l.every == 0 }

// mix is splitmix64's finalizer: neighbouring numbers hash far apart.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Layouts are a deployment's layouts, from a secret of its own (LayoutsOf)
// and the owner of each body. A client who chose its samples' times to
// make one segment of a whole history, or a segment of every sample, would
// have to know where the history's segments start; what one body shows
// of its segments (compressed answers are compressed segment by segment)
// says nothing of another's.
type Layouts struct{ seed uint64 }

// LayoutsOf returns the layouts of the deployment whose id key ids holds.
func LayoutsOf(ids *publicid.Codec) Layouts { return Layouts{seed: ids.Seed("segments")} }

// History returns the layout of factory's history.
func (ls Layouts) History(factory int64) Layout {
	return Layout{seed: mix(ls.seed ^ mix(uint64(factory))), every: SegmentSamples}
}

// Sprockets returns the layout of org's sprocket list.
func (ls Layouts) Sprockets(org int64) Layout {
	return Layout{seed: mix(ls.seed ^ mix(^uint64(org))), every: SprocketSegmentItems}
}

// Segment is a run of a history's samples, in time order.
type Segment struct {
	Start   int64 // the time of its first sample, or HeadSegment
	Samples []domain.Sample
}

// Segments cuts samples (in time order) into segments.
func (l Layout) Segments(samples []domain.Sample) []Segment {
	var out []Segment
	cut(l, samples, func(s domain.Sample) int64 { return s.Time }, func(start int64, run []domain.Sample) {
		out = append(out, Segment{Start: start, Samples: run})
	})
	return out
}

// cut cuts items, in the order of key, where l starts segments, and passes
// each run to add with its start (HeadSegment for the run before the
// first start).
func cut[T any](l Layout, items []T, key func(T) int64, add func(start int64, run []T)) {
	start, from := HeadSegment, 0
	for i, it := range items {
		if k := key(it); l.StartsSegment(k) {
			if i > from {
				add(start, items[from:i:i])
			}
			start, from = k, i
		}
	}
	if len(items) > from {
		add(start, items[from:])
	}
}

// ManifestItem names one segment of a history, with the hash of its body
// and the length of its columns, so that an answer's length and ETag are
// known from the manifest alone.
type ManifestItem struct {
	Start int64
	Hash  uint64
	Size  int
}

// SegmentETag is the ETag a segment's entry carries: the hash its
// manifest lists, in hex.
func SegmentETag(hash uint64) string { return strconv.FormatUint(hash, 16) }

// Names reports whether etag, a segment entry's ETag, is that of the
// segment it describes: whether the entry is the segment the manifest
// lists.
func (it ManifestItem) Names(etag string) bool {
	var b [16]byte
	return string(strconv.AppendUint(b[:0], it.Hash, 16)) == etag
}

// ItemOf returns what a manifest says of the segment that starts at start
// and whose body is body.
func ItemOf(start int64, body []byte) ManifestItem {
	return ManifestItem{Start: start, Hash: SegmentHash(body), Size: len(body) - bytes.IndexByte(body, '\n') - 1}
}

// Manifest lists a history's segments in time order (the head first).
type Manifest []ManifestItem

// EncodeManifest writes m as lines "start hash size" (the head's start as
// "h", the hash in hex).
func EncodeManifest(m Manifest) []byte {
	b := make([]byte, 0, 32*len(m))
	for _, it := range m {
		b = append(b, SegmentName(it.Start)...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, it.Hash, 16)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(it.Size), 10)
		b = append(b, '\n')
	}
	return b
}

// DecodeManifest is the inverse of EncodeManifest.
func DecodeManifest(b []byte) (Manifest, error) {
	m := make(Manifest, 0, bytes.Count(b, []byte{'\n'}))
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok {
			return nil, errors.New("corrupt history manifest: unterminated line")
		}
		b = rest
		start, rest, ok1 := bytes.Cut(line, []byte{' '})
		hash, size, ok2 := bytes.Cut(rest, []byte{' '})
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("corrupt history manifest: line %q", line)
		}
		it := ManifestItem{Start: HeadSegment}
		var err error
		if string(start) != "h" {
			if it.Start, err = strconv.ParseInt(string(start), 10, 64); err != nil || it.Start < 0 {
				return nil, fmt.Errorf("corrupt history manifest: start %q", start)
			}
		}
		if it.Hash, err = strconv.ParseUint(string(hash), 16, 64); err != nil {
			return nil, fmt.Errorf("corrupt history manifest: hash %q", hash)
		}
		if it.Size, err = strconv.Atoi(string(size)); err != nil || it.Size < 0 {
			return nil, fmt.Errorf("corrupt history manifest: size %q", size)
		}
		m = append(m, it)
	}
	return m, nil
}

// SegmentOf returns the start of the segment of m a sample at time t falls
// in: the last one that starts at or before t, else the head.
func (m Manifest) SegmentOf(t int64) int64 {
	i := sort.Search(len(m), func(i int) bool { return m[i].Start > t })
	if i == 0 {
		return HeadSegment
	}
	return m[i-1].Start
}

// Item returns what m says of the segment that starts at start.
func (m Manifest) Item(start int64) (ManifestItem, bool) {
	i := sort.Search(len(m), func(i int) bool { return m[i].Start >= start })
	if i < len(m) && m[i].Start == start {
		return m[i], true
	}
	return ManifestItem{}, false
}

// Touched groups added (in time order) by the segment of m each falls in.
func (m Manifest) Touched(added []domain.Sample) map[int64][]domain.Sample {
	out := make(map[int64][]domain.Sample)
	for _, s := range added {
		start := m.SegmentOf(s.Time)
		out[start] = append(out[start], s)
	}
	return out
}

// Extend returns what changes when added joins a history laid out as m
// by l:
// the segments to write (the touched ones, merged with their new samples
// and cut again, so a sample that starts a segment splits the one it fell
// in) and the starts of segments left empty (the head, when a sample that
// starts a segment came before all of it), with the manifest that lists
// the result. have holds the samples of every segment that added touches
// (see Touched), by start.
func (m Manifest) Extend(l Layout, have map[int64][]domain.Sample, added []domain.Sample) (write []Segment, gone []int64, next Manifest) {
	touched := m.Touched(added)
	items := make(map[int64]ManifestItem, len(m)+len(touched))
	for _, it := range m {
		items[it.Start] = it
	}
	for start, group := range touched {
		segs := l.Segments(MergeSamples(have[start], group))
		if segs[0].Start != start {
			delete(items, start) // the head, now wholly after a new start
			gone = append(gone, start)
		}
		for _, s := range segs {
			items[s.Start] = ItemOf(s.Start, EncodeSegment(s.Samples))
			write = append(write, s)
		}
	}
	next = make(Manifest, 0, len(items))
	for _, it := range items {
		next = append(next, it)
	}
	slices.SortFunc(next, func(a, b ManifestItem) int { return cmp.Compare(a.Start, b.Start) })
	slices.SortFunc(write, func(a, b Segment) int { return cmp.Compare(a.Start, b.Start) })
	return write, gone, next
}

// SegmentHash is the hash a manifest records for a segment's body.
func SegmentHash(body []byte) uint64 { return xxhash.Sum64(body) }

// A segment's body is a header line "len(actual) len(goal)\n", then its
// three columns as the original routes write them (numbers joined by
// commas), one after the other: a reader slices them without a scan.

// EncodeSegment writes samples (in time order) as a segment's body.
func EncodeSegment(samples []domain.Sample) []byte {
	column := func(b []byte, v func(domain.Sample) int64) []byte {
		for i, s := range samples {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, v(s), 10)
		}
		return b
	}
	cols := column(make([]byte, 0, 24*len(samples)), func(s domain.Sample) int64 { return s.Actual })
	nActual := len(cols)
	cols = column(cols, func(s domain.Sample) int64 { return s.Goal })
	nGoal := len(cols) - nActual
	cols = column(cols, func(s domain.Sample) int64 { return s.Time })
	b := strconv.AppendInt(make([]byte, 0, 24+len(cols)), int64(nActual), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(nGoal), 10)
	b = append(b, '\n')
	return append(b, cols...)
}

// Columns are a segment's three columns, as the original routes write
// them.
type Columns struct{ Actual, Goal, Time []byte }

// SegmentColumns slices a segment's body into its columns.
func SegmentColumns(body []byte) (Columns, error) {
	head, cols, ok := bytes.Cut(body, []byte{'\n'})
	if !ok {
		return Columns{}, errors.New("corrupt history segment: no header")
	}
	a, g, ok := bytes.Cut(head, []byte{' '})
	nA, errA := strconv.Atoi(string(a))
	nG, errG := strconv.Atoi(string(g))
	if !ok || errA != nil || errG != nil || nA < 0 || nG < 0 || nA+nG > len(cols) {
		return Columns{}, fmt.Errorf("corrupt history segment: header %q", head)
	}
	return Columns{Actual: cols[:nA:nA], Goal: cols[nA : nA+nG : nA+nG], Time: cols[nA+nG:]}, nil
}

// DecodeSegment is the inverse of EncodeSegment.
func DecodeSegment(body []byte) ([]domain.Sample, error) {
	c, err := SegmentColumns(body)
	if err != nil {
		return nil, err
	}
	parse := func(col []byte) ([]int64, error) {
		var out []int64
		for len(col) > 0 {
			num, rest, _ := bytes.Cut(col, []byte{','})
			n, err := strconv.ParseInt(string(num), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("corrupt history segment: %q", num)
			}
			out, col = append(out, n), rest
		}
		return out, nil
	}
	actual, errA := parse(c.Actual)
	goal, errG := parse(c.Goal)
	times, errT := parse(c.Time)
	if err := errors.Join(errA, errG, errT); err != nil {
		return nil, err
	}
	if len(actual) != len(times) || len(goal) != len(times) {
		return nil, errors.New("corrupt history segment: columns of different lengths")
	}
	out := make([]domain.Sample, len(times))
	for i := range times {
		out[i] = domain.Sample{Time: times[i], Actual: actual[i], Goal: goal[i]}
	}
	return out, nil
}
