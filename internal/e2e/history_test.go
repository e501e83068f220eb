package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// A long history on the original routes: kept in segments, sent in pieces,
// it is byte for byte what encoding/json makes of the seed file's shape;
// an append shows at once, read-your-writes holds with a token, the
// compressed answers decode to the same bytes, and HEAD and If-None-Match
// work on bodies sent in pieces as on any other.
func TestLongHistoryOnTheOriginalRoutes(t *testing.T) {
	s := newStack(t, stackOptions{noSeed: true})
	const n = 30_000
	var all []domain.Sample
	for i := int64(0); i < n; i++ {
		all = append(all, domain.Sample{Time: 1_600_000_000 + 60*i, Actual: i % 101, Goal: 100})
	}
	samplesJSON := func(samples []domain.Sample) string {
		b, _ := json.Marshal(samples)
		return string(b)
	}
	r := do(t, "POST", s.Writer.URL()+"/v1/factories", `{"name":"Long","samples":`+samplesJSON(all[:domain.MaxSamplesPerWrite])+`}`)
	expect(t, r, 201, "create a factory")
	var f factoryV1
	r.JSON(t, &f)
	for start := domain.MaxSamplesPerWrite; start < n; start += domain.MaxSamplesPerWrite {
		r := do(t, "POST", s.Writer.URL()+"/v1/factories/"+f.ID+"/samples", `{"samples":`+samplesJSON(all[start:min(start+domain.MaxSamplesPerWrite, n)])+`}`)
		expect(t, r, 200, "append samples")
	}
	id := num(t, s, f.ID)
	rd := s.Reader.URL()
	chartURL := fmt.Sprintf("%s/api/factory/%d/chart-data", rd, id)
	factoryURL := fmt.Sprintf("%s/api/factory/%d", rd, id)
	wantChart := func() string {
		b, _ := json.Marshal(domain.ChartDataOf(all))
		return string(b)
	}
	eventually(t, chartURL, 200, func(b []byte) bool { return string(b) == wantChart() })

	// An append at the end shows on every original route, and a read with
	// the append's token sees it (from the read model, or a database when
	// the projector is slower than the consistency wait).
	last := all[len(all)-1].Time
	for k := int64(1); k <= 3; k++ {
		sample := domain.Sample{Time: last + 60*k, Actual: 7, Goal: 8}
		r := do(t, "POST", s.Writer.URL()+"/v1/factories/"+f.ID+"/samples", `{"samples":[`+strings.Trim(samplesJSON([]domain.Sample{sample}), "[]")+`]}`)
		expect(t, r, 200, "append one sample")
		all = append(all, sample)
		got := do(t, "GET", chartURL, nil, "Accept-Encoding", "identity", "X-Consistency-Token", r.Header.Get("X-Consistency-Token"))
		expect(t, got, 200, "chart data with the append's token")
		if string(got.Body) != wantChart() {
			t.Fatalf("append %d: the chart data read with its token does not show it (%d bytes, want %d)", k, len(got.Body), len(wantChart()))
		}
	}
	eventually(t, factoryURL, 200, func(b []byte) bool {
		return string(b) == fmt.Sprintf(`{"factory":{"id":%d,"chart_data":%s}}`, id, wantChart())
	})
	eventually(t, rd+"/api/factories", 200, func(b []byte) bool {
		return string(b) == fmt.Sprintf(`{"factories":[{"factory":{"id":%d,"chart_data":%s}}]}`, id, wantChart())
	})
	again := do(t, "GET", chartURL, nil, "Accept-Encoding", "identity")
	if again.Header.Get("X-Read-Source") != "memory" {
		t.Errorf("a second read came from %q, not the reader's memory", again.Header.Get("X-Read-Source"))
	}

	// Compressed, piece by piece, it decodes to the same bytes.
	plain := do(t, "GET", chartURL, nil, "Accept-Encoding", "identity")
	for _, enc := range []string{"gzip", "zstd"} {
		r := do(t, "GET", chartURL, nil, "Accept-Encoding", enc)
		expect(t, r, 200, "GET "+enc)
		if r.Header.Get("Content-Encoding") != enc {
			t.Fatalf("Accept-Encoding %s: Content-Encoding %q", enc, r.Header.Get("Content-Encoding"))
		}
		body, err := decodeAs(enc, r.Body)
		if err != nil || !bytes.Equal(body, plain.Body) {
			t.Errorf("%s: the answer does not decode to the body (%v)", enc, err)
		}
		if len(r.Body) > len(plain.Body)/3 {
			t.Errorf("%s: %d bytes for a body of %d", enc, len(r.Body), len(plain.Body))
		}
		if r.Header.Get("ETag") == plain.Header.Get("ETag") {
			t.Errorf("%s shares the identity's ETag", enc)
		}
	}

	// HEAD announces the length and sends nothing; a current ETag is a 304.
	head := do(t, "HEAD", chartURL, nil, "Accept-Encoding", "identity")
	if head.Status != 200 || len(head.Body) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(plain.Body)) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q (want %d)", head.Status, len(head.Body), head.Header.Get("Content-Length"), len(plain.Body))
	}
	cond := do(t, "GET", chartURL, nil, "Accept-Encoding", "identity", "If-None-Match", plain.Header.Get("ETag"))
	expect(t, cond, 304, "GET with a current ETag")
	whole := do(t, "GET", factoryURL, nil, "Accept-Encoding", "identity")
	if whole.Header.Get("ETag") == plain.Header.Get("ETag") {
		t.Errorf("the factory and its chart data share the ETag %s", plain.Header.Get("ETag"))
	}

	// The projector's check finds nothing to repair.
	checkFor(t, 10*time.Second, func() string {
		out, err := s.Projector.Exec(t.Context(), "verify")
		if err != nil {
			return fmt.Sprintf("verify: %v\n%s", err, out)
		}
		return ""
	})
}

// A long sprocket list on the original route: kept in segments, it is
// what encoding/json makes of the seed file's shape, and a create, an
// update and a delete show at once to a read with their token; the
// projector's check finds nothing to repair.
func TestLongSprocketList(t *testing.T) {
	s := newStack(t, stackOptions{noSeed: true})
	const n = 5000
	type item struct {
		ID            int64   `json:"id"`
		Teeth         int64   `json:"teeth"`
		PitchDiameter float64 `json:"pitch_diameter"`
		OutsideDiam   float64 `json:"outside_diameter"`
		Pitch         float64 `json:"pitch"`
	}
	var mu sync.Mutex
	byID := map[int64]item{}
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				r, err := call("POST", fmt.Sprintf("%s/api/sprocket/create/%d/6/4.5/7/", s.Writer.URL(), i%50+1), nil)
				if err != nil || r.Status != 201 {
					t.Errorf("create %d: %v %v", i, err, r)
					return
				}
				var it item
				if err := json.Unmarshal(r.Body, &it); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				byID[it.ID] = it
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := func() string {
		ids := make([]int64, 0, len(byID))
		for id := range byID {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		items := make([]item, len(ids))
		for i, id := range ids {
			items[i] = byID[id]
		}
		b, _ := json.Marshal(struct {
			Sprockets []item `json:"sprockets"`
		}{items})
		return string(b)
	}
	url := s.Reader.URL() + "/api/sprockets"
	eventually(t, url, 200, func(b []byte) bool { return string(b) == want() })

	var some []int64
	for id := range byID {
		if len(some) < 2 {
			some = append(some, id)
		}
	}
	steps := []struct {
		method, path string
		change       func(r reply)
	}{
		{"POST", "/api/sprocket/create/9/9/9/9/", func(r reply) {
			var it item
			r.JSON(t, &it)
			byID[it.ID] = it
		}},
		{"POST", fmt.Sprintf("/api/sprocket/%d/update/77/1/2/3/", some[0]), func(r reply) {
			var it item
			r.JSON(t, &it)
			byID[it.ID] = it
		}},
		{"DELETE", "/v1/sprockets/" + s.IDs().Encode(publicid.Sprocket, some[1]), func(reply) { delete(byID, some[1]) }},
	}
	for _, st := range steps {
		r := do(t, st.method, s.Writer.URL()+st.path, nil)
		if r.Status >= 300 {
			t.Fatalf("%s %s: %v", st.method, st.path, r)
		}
		st.change(r)
		got := do(t, "GET", url, nil, "X-Consistency-Token", r.Header.Get("X-Consistency-Token"))
		if string(got.Body) != want() {
			t.Fatalf("%s %s: the list read with its token does not show it (%d bytes, want %d; from %s)",
				st.method, st.path, len(got.Body), len(want()), got.Header.Get("X-Read-Source"))
		}
	}
	checkFor(t, 10*time.Second, func() string {
		out, err := s.Projector.Exec(t.Context(), "verify")
		if err != nil {
			return fmt.Sprintf("verify: %v\n%s", err, out)
		}
		return ""
	})
}
