package readmodel

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// compatSprocket is an item of the original service's sprocket file, with
// its id: the shape appendCompatSprocket writes by hand.
type compatSprocket struct {
	ID int64 `json:"id"`
	domain.SprocketSpec
}

// The hand-written sprocket bodies (the compatibility items, and the /v1
// body, alone and in list pages) must be what encoding/json writes, for
// every value a spec can hold.
func TestSprocketBodiesMatchEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var page []domain.Sprocket
	floats := []float64{0, 1, 5, 6.35, 0.1, 1e-6, 9.99e-7, 1e-7, 1.5e-10, 1e20, 1e21, 123456789.125, 1e300, 5e-324, math.MaxFloat64}
	for i := 0; i < 20000; i++ {
		floats = append(floats, r.Float64()*math.Pow(10, float64(r.IntN(50)-25)))
	}
	for i, f := range floats {
		s := domain.Sprocket{ID: int64(i) + 1, SprocketSpec: domain.SprocketSpec{
			Teeth: r.Int64(), PitchDiameter: f, OutsideDiameter: floats[r.IntN(len(floats))], Pitch: -f}}
		want, err := json.Marshal(compatSprocket{ID: s.ID, SprocketSpec: s.SprocketSpec})
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCompatSprocket(nil, s); string(got) != string(want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
		if got := SprocketCompatBody(s); string(got) != string(want) {
			t.Fatalf("compat body\n got %s\nwant %s", got, want)
		}
		s.Version = r.Int64N(1 << 40)
		s.CreatedAt = time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC()
		s.UpdatedAt = s.CreatedAt.Add(time.Duration(r.Int64N(1e15)))
		want, err = json.Marshal(v1Sprocket{ID: testIDs.Encode(publicid.Sprocket, s.ID), SprocketSpec: s.SprocketSpec, Version: s.Version, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt})
		if err != nil {
			t.Fatal(err)
		}
		if got := SprocketBody(testIDs, s); string(got) != string(want) {
			t.Fatalf("v1 body\n got %s\nwant %s", got, want)
		}
		page = append(page, s)
		cursor := ""
		if r.IntN(2) == 0 {
			cursor = fmt.Sprintf("c<%d>&\"", r.Int64())
		}
		want, err = json.Marshal(v1SprocketPage(page, cursor))
		if err != nil {
			t.Fatal(err)
		}
		if got := SprocketListBody(testIDs, page, cursor); string(got) != string(want) {
			t.Fatalf("list body\n got %s\nwant %s", got, want)
		}
		if len(page) == 5 {
			page = page[:0]
		}
	}
}

// v1Sprocket is what encoding/json would make of a /v1 sprocket: the
// hand-written bodies are compared with it.
type v1Sprocket struct {
	ID string `json:"id"`
	domain.SprocketSpec
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func v1SprocketPage(items []domain.Sprocket, next string) any {
	out := []v1Sprocket{}
	for _, s := range items {
		out = append(out, v1Sprocket{ID: testIDs.Encode(publicid.Sprocket, s.ID), SprocketSpec: s.SprocketSpec, Version: s.Version, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt})
	}
	var cursor *string
	if next != "" {
		cursor = &next
	}
	return struct {
		Items      []v1Sprocket `json:"items"`
		NextCursor *string      `json:"next_cursor"`
	}{out, cursor}
}

// A long list, in many segments, some of whose sprockets are all deleted,
// joins into exactly what encoding/json makes of the seed file's shape;
// the manifest alone gives its length; and a segment's range holds just
// its sprockets.
func TestLongSprocketListIsWhatJSONMakes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	var all []domain.Sprocket
	var items []compatSprocket
	for id := int64(1); id <= 20_000; id++ {
		s := sprocket(id, 1+r.Int64N(5), id > 4000 && id < 9000 || r.IntN(10) == 0)
		s.Teeth = r.Int64N(100)
		all = append(all, s)
		if !s.Deleted() {
			items = append(items, compatSprocket{ID: s.ID, SprocketSpec: s.SprocketSpec})
		}
	}
	want, _ := json.Marshal(struct {
		Sprockets []compatSprocket `json:"sprockets"`
	}{items})
	records := SprocketListRecords(testLayouts, 1, all)
	if len(records) < 6 {
		t.Fatalf("20,000 sprockets make %d segments; want several", len(records)-1)
	}
	if got := sprocketsBody(all); string(got) != string(want) {
		t.Fatalf("the list differs from encoding/json's (len %d, want %d)", len(got), len(want))
	}
	m, err := DecodeManifest(records[len(records)-1].Entry.Body)
	if err != nil || SprocketsSize(m) != len(want) {
		t.Errorf("SprocketsSize %d, the body %d bytes (%v)", SprocketsSize(m), len(want), err)
	}
	for i, it := range m {
		lo, hi := m.Range(it.Start)
		members := records[i].Entry.Members
		if first, last := members.id(0), members.id(members.Len()-1); first < lo || last >= hi {
			t.Errorf("segment %d holds %d to %d, its range is %d to %d", it.Start, first, last, lo, hi)
		}
	}
}
