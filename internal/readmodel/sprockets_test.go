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

// Patching the changes of a random history into the collection, a few at a
// time, gives at each step exactly the entry a full build gives.
func TestPatchOrgSprocketsEqualsFullBuild(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		state := map[int64]domain.Sprocket{}
		nextID := int64(1)
		all := func() []domain.Sprocket {
			out := make([]domain.Sprocket, 0, len(state))
			for _, s := range state {
				out = append(out, s)
			}
			return out
		}
		// Start from a full build of some sprockets (or none).
		for i := r.IntN(20); i > 0; i-- {
			state[nextID] = sprocket(nextID, 1, r.IntN(5) == 0)
			nextID += 1 + int64(r.IntN(3))
		}
		entry := OrgSprocketsRecord(1, all()).Entry
		for step := 0; step < 10; step++ {
			var changed []domain.Sprocket
			for k := r.IntN(6); k > 0; k-- {
				var s domain.Sprocket
				switch ids := len(state); {
				case ids == 0 || r.IntN(3) == 0: // a create, maybe in the middle
					id := nextID
					if r.IntN(4) == 0 && nextID > 3 {
						id = 1 + r.Int64N(nextID-1)
						if _, taken := state[id]; taken {
							continue
						}
					} else {
						nextID += 1 + int64(r.IntN(3))
					}
					s = sprocket(id, 1, false)
				default: // an update or a delete of an existing one
					old := all()[r.IntN(ids)]
					s = sprocket(old.ID, old.Version+1, old.Deleted() || r.IntN(4) == 0)
					s.Teeth = old.Teeth + 1
					s.Pitch = r.Float64() * 10
				}
				state[s.ID] = s
				changed = append(changed, s)
				if r.IntN(5) == 0 { // the same change named twice, or an older state beside it
					older := s
					older.Version--
					changed = append(changed, s, older)
				}
			}
			rec, ok := PatchOrgSprockets(1, entry, changed)
			if !ok {
				t.Fatalf("round %d step %d: patch refused its own body %s", round, step, entry.Body)
			}
			want := OrgSprocketsRecord(1, all())
			if rec.Key != want.Key || string(rec.Entry.Body) != string(want.Entry.Body) ||
				string(rec.Entry.Members) != string(want.Entry.Members) || rec.Entry.Version != want.Entry.Version ||
				rec.Entry.ETag != want.Entry.ETag || rec.Entry.Org != 1 {
				t.Fatalf("round %d step %d:\n got %s v%d\nwant %s v%d", round, step, rec.Entry.Body, rec.Entry.Version, want.Entry.Body, want.Entry.Version)
			}
			entry = rec.Entry
		}
		// A change base already holds, or holds newer, changes nothing,
		// however often it is named.
		var stale []domain.Sprocket
		for _, s := range all() {
			s.Teeth = -1
			older := s
			older.Version--
			stale = append(stale, s, older, s)
		}
		if rec, ok := PatchOrgSprockets(1, entry, stale); !ok || string(rec.Entry.Body) != string(entry.Body) ||
			string(rec.Entry.Members) != string(entry.Members) || rec.Entry.Version != entry.Version {
			t.Fatalf("round %d: stale changes were applied: %s", round, rec.Entry.Body)
		}
	}
}

// A body this package did not write is refused, so the caller builds it
// whole instead of patching something it cannot read.
func TestPatchRefusesForeignBodies(t *testing.T) {
	good := OrgSprocketsRecord(1, []domain.Sprocket{sprocket(1, 1, false), sprocket(2, 1, false)}).Entry
	tests := map[string]Entry{
		"empty":             {},
		"other shape":       {Body: []byte(`{"items":[]}`), Members: good.Members},
		"item out of order": {Body: []byte(`{"sprockets":[{"id":2,"teeth":5},{"id":1,"teeth":5}]}`), Members: good.Members},
		"item not a member": {Body: []byte(`{"sprockets":[{"id":1,"teeth":5},{"id":3,"teeth":5}]}`), Members: good.Members},
		"member bytes cut":  {Body: good.Body, Members: good.Members[:20]},
		"unterminated item": {Body: []byte(`{"sprockets":[{"id":1,"teeth":5]}`), Members: good.Members},
		"no id":             {Body: []byte(`{"sprockets":[{"teeth":5}]}`), Members: good.Members},
	}
	for name, base := range tests {
		if _, ok := PatchOrgSprockets(1, base, []domain.Sprocket{sprocket(3, 1, false)}); ok {
			t.Errorf("%s: patched", name)
		}
	}
	if _, ok := PatchOrgSprockets(1, good, nil); !ok {
		t.Errorf("its own body was refused")
	}
}
