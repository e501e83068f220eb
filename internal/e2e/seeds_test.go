package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The seeds load through the write path once however often the loader
// runs, and the compatibility routes serve exactly the seed file's data.
func TestSeedsLoadTwiceAndServeTheOriginalData(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := leader(t, s)
	counts := func() [5]int {
		return [5]int{
			count(t, db, `SELECT count(*) FROM factories`),
			count(t, db, `SELECT count(*) FROM factory_samples`),
			count(t, db, `SELECT count(*) FROM sprockets`),
			count(t, db, `SELECT count(*) FROM idempotency_keys`),
			count(t, db, `SELECT coalesce(sum(version), 0) FROM factories`) + count(t, db, `SELECT coalesce(sum(version), 0) FROM sprockets`),
		}
	}
	before := counts()
	if want := [5]int{3, 60, 3, 6, 6}; before != want {
		t.Fatalf("after the first load: factories, samples, sprockets, keys, versions = %v, want %v", before, want)
	}
	out, err := s.Writer.Exec(context.Background(), "seed", filepath.Join(repoRoot, "seeds"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 created, 3 already loaded") {
		t.Errorf("second load said %q", out)
	}
	if after := counts(); after != before {
		t.Fatalf("second load changed counts: %v, want %v", after, before)
	}

	raw, err := os.ReadFile(filepath.Join(repoRoot, "seeds", "seed_factory_data.json"))
	if err != nil {
		t.Fatal(err)
	}
	var seed struct {
		Factories []struct {
			Factory struct {
				ChartData json.RawMessage `json:"chart_data"`
			} `json:"factory"`
		} `json:"factories"`
	}
	if err := json.Unmarshal(raw, &seed); err != nil {
		t.Fatal(err)
	}

	r := eventually(t, s.Reader.URL()+"/api/factories", 200, func(b []byte) bool { return strings.Contains(string(b), `"id":3`) })
	var got struct {
		Factories []struct {
			Factory struct {
				ID        int64           `json:"id"`
				ChartData json.RawMessage `json:"chart_data"`
			} `json:"factory"`
		} `json:"factories"`
	}
	r.JSON(t, &got)
	if len(got.Factories) != len(seed.Factories) {
		t.Fatalf("GET /api/factories has %d factories, the seed file %d", len(got.Factories), len(seed.Factories))
	}
	for i := range seed.Factories {
		if got.Factories[i].Factory.ID != int64(i+1) {
			t.Errorf("factory %d has id %d", i+1, got.Factories[i].Factory.ID)
		}
		if g, w := canonical(t, got.Factories[i].Factory.ChartData), canonical(t, seed.Factories[i].Factory.ChartData); g != w {
			t.Errorf("factory %d chart_data:\n got %s\nwant %s", i+1, g, w)
		}
	}

	second := canonical(t, seed.Factories[1].Factory.ChartData)
	r = do(t, "GET", s.Reader.URL()+"/api/factory/2", nil)
	expect(t, r, 200, "GET /api/factory/2")
	if want := `{"factory":{"chart_data":` + second + `,"id":2}}`; canonical(t, r.Body) != want {
		t.Errorf("GET /api/factory/2:\n got %s\nwant %s", canonical(t, r.Body), want)
	}
	r = do(t, "GET", s.Reader.URL()+"/api/factory/2/chart-data", nil)
	expect(t, r, 200, "GET /api/factory/2/chart-data")
	if canonical(t, r.Body) != second {
		t.Errorf("GET /api/factory/2/chart-data:\n got %s\nwant %s", canonical(t, r.Body), second)
	}

	r = eventually(t, s.Reader.URL()+"/api/sprockets", 200, func(b []byte) bool { return strings.Contains(string(b), `"id":3`) })
	want := `{"sprockets":[` +
		`{"id":1,"outside_diameter":6,"pitch":1,"pitch_diameter":5,"teeth":5},` +
		`{"id":2,"outside_diameter":6,"pitch":1,"pitch_diameter":5,"teeth":5},` +
		`{"id":3,"outside_diameter":6,"pitch":1,"pitch_diameter":5,"teeth":5}]}`
	if canonical(t, r.Body) != want {
		t.Errorf("GET /api/sprockets:\n got %s\nwant %s", canonical(t, r.Body), want)
	}
}
