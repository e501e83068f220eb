package readmodel

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// A long history, in many segments, joins into exactly what encoding/json
// makes of its chart data.
func TestLongHistoryIsWhatJSONMakes(t *testing.T) {
	var samples []domain.Sample
	for i := int64(0); i < 30_000; i++ {
		samples = append(samples, domain.Sample{Time: 1_600_000_000 + 60*i, Actual: i % 97, Goal: 1 << 40})
	}
	segs := segmentsOf(1, samples)
	if len(segs) < 5 {
		t.Fatalf("30,000 samples make %d segments; want several", len(segs))
	}
	want, _ := json.Marshal(domain.ChartDataOf(samples))
	if got := chartBody(samples); string(got) != string(want) {
		t.Fatalf("chart data differs from encoding/json's (len %d, want %d)", len(got), len(want))
	}
	// The manifest alone gives the answers' lengths.
	for _, n := range []int{0, 1, 2, 30_000} {
		man, _ := HeldHistory(testLayouts, domain.Factory{ID: 12, Version: 1}, samples[:n])
		m, err := DecodeManifest(man.Body)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ChartSize(m), len(chartBody(samples[:n])); got != want {
			t.Errorf("%d samples: ChartSize %d, the body %d bytes", n, got, want)
		}
		if got, want := FactorySize(12, m), len(factoryBody(12, samples[:n])); got != want {
			t.Errorf("%d samples: FactorySize %d, the body %d bytes", n, got, want)
		}
	}
}

// Whatever order samples arrive in, and however they are batched, the
// segments the appends leave are those a rebuild from the whole history
// lays out: the test applies Extend step by step to a store of segments
// and compares it, after every step, with the layout of what was added so
// far.
func TestExtendLaysOutAsARebuild(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 3))
		n := 500 + r.IntN(20_000)
		times := r.Perm(4 * n)[:n] // sparse times, in random order
		store := map[int64][]domain.Sample{}
		var m Manifest
		var all []domain.Sample
		for len(times) > 0 {
			k := min(len(times), 1+r.IntN(300))
			if r.IntN(4) == 0 {
				k = 1 // the usual append: one sample
			}
			var added []domain.Sample
			for _, tm := range times[:k] {
				added = append(added, domain.Sample{Time: int64(tm), Actual: int64(tm) * 3, Goal: int64(tm) % 7})
			}
			times = times[k:]
			slices.SortFunc(added, func(a, b domain.Sample) int { return int(a.Time - b.Time) })
			have := map[int64][]domain.Sample{}
			for start := range m.Touched(added) {
				if _, ok := m.Item(start); ok {
					have[start] = store[start]
				}
			}
			write, gone, next := m.Extend(testLayouts.History(1), have, added)
			for _, start := range gone {
				delete(store, start)
			}
			for _, s := range write {
				store[s.Start] = s.Samples
			}
			m = next
			all = MergeSamples(all, added)

			var want Manifest
			wantStore := map[int64][]domain.Sample{}
			for _, s := range testLayouts.History(1).Segments(all) {
				want = append(want, ItemOf(s.Start, EncodeSegment(s.Samples)))
				wantStore[s.Start] = s.Samples
			}
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("seed %d: after %d samples the manifest lists %d segments, a rebuild %d", seed, len(all), len(m), len(want))
			}
			if !reflect.DeepEqual(store, wantStore) {
				t.Fatalf("seed %d: after %d samples the segments differ from a rebuild's", seed, len(all))
			}
		}
	}
}

func TestManifestAndSegmentsRoundTrip(t *testing.T) {
	m := Manifest{{HeadSegment, 0xabc, 5}, {0, 1, 0}, {1_600_000_000, ^uint64(0), 1 << 20}}
	got, err := DecodeManifest(EncodeManifest(m))
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("manifest round trip: %v, %v", got, err)
	}
	if got, err := DecodeManifest(nil); err != nil || len(got) != 0 {
		t.Fatalf("empty manifest: %v, %v", got, err)
	}
	for _, bad := range []string{"h 1 1", "x 1 1\n", "-5 1 1\n", "1 zz 1\n", "1 1\n", "1 1 -1\n", "1\n"} {
		if _, err := DecodeManifest([]byte(bad)); err == nil {
			t.Errorf("manifest %q decoded", bad)
		}
	}
	for _, it := range m {
		if !it.Names(SegmentETag(it.Hash)) || it.Names(SegmentETag(it.Hash+1)) || it.Names("") {
			t.Errorf("item %+v names the wrong ETags", it)
		}
	}
	samples := []domain.Sample{{Time: 5, Actual: 0, Goal: 12}, {Time: 9, Actual: 1_000_000_000_000, Goal: 3}}
	back, err := DecodeSegment(EncodeSegment(samples))
	if err != nil || !reflect.DeepEqual(back, samples) {
		t.Fatalf("segment round trip: %v, %v", back, err)
	}
	for _, bad := range []string{"", "3 1\n1", "a b\n", "1 1\n1,2,3", "1 1\n12x,3"} {
		if _, err := DecodeSegment([]byte(bad)); err == nil {
			t.Errorf("segment %q decoded", bad)
		}
	}
}

func TestFactoryETag(t *testing.T) {
	chart := HashETag([]byte("x"))
	if !IsFactoryETag(FactoryETag(chart), chart) {
		t.Errorf("%s is not the factory tag of %s", FactoryETag(chart), chart)
	}
	for _, other := range []string{chart, FactoryETag(HashETag([]byte("y"))), `"-f"`, ""} {
		if IsFactoryETag(other, chart) {
			t.Errorf("%s taken for the factory tag of %s", other, chart)
		}
	}
}

var testLayouts = LayoutsOf(testIDs)

// Another key, or another factory, lays a history out elsewhere.
func TestLayoutsDependOnTheKeyAndTheOwner(t *testing.T) {
	other, err := publicid.New(strings.Repeat("k", publicid.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]Layout{"another key": LayoutsOf(other).History(1), "another factory": testLayouts.History(2)} {
		differ := 0
		for tm := int64(0); tm < 1_000_000; tm++ {
			if testLayouts.History(1).StartsSegment(tm) != l.StartsSegment(tm) {
				differ++
			}
		}
		if differ < 500 {
			t.Errorf("%s: the layouts disagree on %d of a million times", name, differ)
		}
	}
}
