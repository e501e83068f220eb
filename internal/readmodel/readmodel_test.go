package readmodel

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

var at = time.Date(2026, 11, 26, 17, 8, 21, 123456000, time.UTC)

func sprocket(id, version int64, deleted bool) domain.Sprocket {
	s := domain.Sprocket{ID: id, OrgID: 1, Version: version, CreatedAt: at, UpdatedAt: at,
		SprocketSpec: domain.SprocketSpec{Teeth: 5, PitchDiameter: 5, OutsideDiameter: 6.35, Pitch: 1}}
	if deleted {
		s.DeletedAt = &at
	}
	return s
}

// The bodies are the API's contract: their exact bytes.
func TestBodies(t *testing.T) {
	samples := []domain.Sample{{Time: 1611194818, Actual: 32, Goal: 31}, {Time: 1611194878, Actual: 29, Goal: 30}}
	first, last := int64(1611194818), int64(1611194878)
	f := domain.Factory{ID: 2, OrgID: 1, Version: 3, Name: "Plant", SampleCount: 2, FirstTime: &first, LastTime: &last, CreatedAt: at, UpdatedAt: at}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"compat sprocket", SprocketCompatBody(sprocket(7, 2, false)),
			`{"id":7,"teeth":5,"pitch_diameter":5,"outside_diameter":6.35,"pitch":1}`},
		{"v1 sprocket", SprocketBody(testIDs, sprocket(7, 2, false)),
			`{"id":"` + testIDs.Encode(publicid.Sprocket, 7) + `","teeth":5,"pitch_diameter":5,"outside_diameter":6.35,"pitch":1,"version":2,"created_at":"2026-11-26T17:08:21.123456Z","updated_at":"2026-11-26T17:08:21.123456Z"}`},
		{"compat sprockets without tombstones", sprocketsBody([]domain.Sprocket{sprocket(1, 1, false), sprocket(2, 3, true)}),
			`{"sprockets":[{"id":1,"teeth":5,"pitch_diameter":5,"outside_diameter":6.35,"pitch":1}]}`},
		{"compat sprockets empty", sprocketsBody(nil), `{"sprockets":[]}`},
		{"compat factory", factoryBody(2, samples),
			`{"factory":{"id":2,"chart_data":{"sprocket_production_actual":[32,29],"sprocket_production_goal":[31,30],"time":[1611194818,1611194878]}}}`},
		{"compat factory without history", factoryBody(2, nil),
			`{"factory":{"id":2,"chart_data":{"sprocket_production_actual":[],"sprocket_production_goal":[],"time":[]}}}`},
		{"compat chart data", chartBody(samples),
			`{"sprocket_production_actual":[32,29],"sprocket_production_goal":[31,30],"time":[1611194818,1611194878]}`},
		{"compat factories", factoriesBody([]domain.Factory{f}, map[int64][]domain.Sample{2: samples}),
			`{"factories":[{"factory":{"id":2,"chart_data":{"sprocket_production_actual":[32,29],"sprocket_production_goal":[31,30],"time":[1611194818,1611194878]}}}]}`},
		{"v1 factory", FactoryBody(testIDs, f),
			`{"id":"` + testIDs.Encode(publicid.Factory, 2) + `","name":"Plant","version":3,"sample_count":2,"first_time":1611194818,"last_time":1611194878,"created_at":"2026-11-26T17:08:21.123456Z","updated_at":"2026-11-26T17:08:21.123456Z"}`},
		{"chart range", ChartRangeBody(testIDs, 2, 0, 1611194818, samples[:1], nil),
			`{"factory_id":"` + testIDs.Encode(publicid.Factory, 2) + `","from":0,"to":1611194818,"chart_data":{"sprocket_production_actual":[32],"sprocket_production_goal":[31],"time":[1611194818]}}`},
		{"last page", SprocketListBody(testIDs, nil, ""), `{"items":[],"next_cursor":null}`},
		{"page with a next one", FactoryListBody(testIDs, nil, "abc"), `{"items":[],"next_cursor":"abc"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("\n got %s\nwant %s", tc.got, tc.want)
			}
		})
	}
}

func TestRecords(t *testing.T) {
	live := SprocketRecords(testIDs, sprocket(7, 2, false))
	if live.V1.Key != "rm:sprocket:7:v1" || live.Compat.Key != "rm:sprocket:7:compat" {
		t.Fatalf("keys %s %s", live.V1.Key, live.Compat.Key)
	}
	if live.V1.Entry.ETag != `"2"` || live.V1.Entry.Version != 2 || live.V1.Entry.Org != 1 {
		t.Errorf("v1 entry %+v", live.V1.Entry)
	}
	if live.Compat.Entry.ETag != HashETag(live.Compat.Entry.Body) {
		t.Errorf("compat ETag %s is not the hash of its body", live.Compat.Entry.ETag)
	}
	gone := SprocketRecords(testIDs, sprocket(7, 3, true))
	for _, r := range gone.All() {
		if !r.Entry.Deleted || r.Entry.Body != nil || r.Entry.Version != 3 {
			t.Errorf("tombstone %s: %+v", r.Key, r.Entry)
		}
	}
	list := SprocketListRecords(testLayouts, 1, []domain.Sprocket{sprocket(1, 4, false), sprocket(2, 3, true)})
	seg, man := list[0].Entry, list[1].Entry
	if len(list) != 2 || man.Version != 7 || seg.Version != 7 {
		t.Errorf("list of %d records, version %d (segment %d), want the sum of member versions 7", len(list), man.Version, seg.Version)
	}
	if seg.Members.Version(1) != 4 || seg.Members.Version(2) != 3 || seg.Members.Version(3) != 0 {
		t.Errorf("members %v", seg.Members)
	}
}

func TestMembers(t *testing.T) {
	versions := map[int64]int64{}
	for i := int64(1); i <= 1000; i += 3 {
		versions[i] = i * 10
	}
	m := EncodeMembers(versions)
	if len(m) != 16*len(versions) {
		t.Fatalf("%d bytes for %d members", len(m), len(versions))
	}
	for id := int64(0); id <= 1002; id++ {
		if got, want := m.Version(id), versions[id]; got != want {
			t.Fatalf("Version(%d) = %d, want %d", id, got, want)
		}
	}
	if string(EncodeMembers(versions)) != string(m) {
		t.Errorf("encoding is not deterministic")
	}
	if Members(nil).Version(5) != 0 {
		t.Errorf("empty members")
	}
}

func TestBuckets(t *testing.T) {
	tests := []struct{ time, bucket int64 }{{0, 0}, {3599, 0}, {3600, 1}, {1611194818, 447554}}
	for _, tc := range tests {
		if got := Bucket(tc.time); got != tc.bucket {
			t.Errorf("Bucket(%d) = %d, want %d", tc.time, got, tc.bucket)
		}
	}
	samples := []domain.Sample{{Time: 10, Actual: 1, Goal: 2}, {Time: 3700, Actual: 3, Goal: 4}}
	back, err := DecodeBucket(EncodeBucket(samples))
	if err != nil || fmt.Sprint(back) != fmt.Sprint(samples) {
		t.Fatalf("round trip %v %v", back, err)
	}
	if string(EncodeBucket(samples)) != `[[10,1,2],[3700,3,4]]` {
		t.Errorf("encoding %s", EncodeBucket(samples))
	}
	if _, err := DecodeBucket([]byte(`{`)); err == nil {
		t.Errorf("a corrupt bucket decoded")
	}
	groups := GroupByBucket(samples)
	if len(groups) != 2 || len(groups[0]) != 1 || len(groups[1]) != 1 {
		t.Errorf("groups %v", groups)
	}
}

func TestMergeSamples(t *testing.T) {
	s := func(ts ...int64) []domain.Sample {
		var out []domain.Sample
		for _, t := range ts {
			out = append(out, domain.Sample{Time: t, Actual: t})
		}
		return out
	}
	tests := []struct {
		name      string
		have, add []domain.Sample
		want      string
	}{
		{"into nothing", nil, s(1, 2), "[1 2]"},
		{"nothing added", s(1, 2), nil, "[1 2]"},
		{"interleaved", s(1, 3, 5), s(2, 4, 6), "[1 2 3 4 5 6]"},
		{"redelivered", s(1, 2, 3), s(2, 3), "[1 2 3]"},
		{"before all", s(5), s(1), "[1 5]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var times []int64
			for _, x := range MergeSamples(tc.have, tc.add) {
				times = append(times, x.Time)
			}
			if fmt.Sprint(times) != tc.want {
				t.Errorf("got %v, want %s", times, tc.want)
			}
		})
	}
}

func TestBodiesAreValidJSON(t *testing.T) {
	for _, b := range [][]byte{SprocketBody(testIDs, sprocket(1, 1, false)), factoriesBody(nil, nil)} {
		if !json.Valid(b) {
			t.Errorf("invalid JSON %s", b)
		}
	}
}

// testIDs makes the /v1 ids of the tests' bodies.
var testIDs = func() *publicid.Codec {
	c, err := publicid.New("readmodel tests' key of 32 bytes!")
	if err != nil {
		panic(err)
	}
	return c
}()

// An audit entry on /v1 shows no number the service counts up: its own,
// its token's and its resource's are opaque ids, in the changes too, and
// the organization's is left out.
func TestAuditEntriesShowNoNumbers(t *testing.T) {
	tok := int64(77)
	at := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	entries := []domain.AuditEntry{
		{ID: 901, OrgID: 3, TokenID: &tok, Actor: "token", Action: "sprocket.updated", ResourceType: "sprocket", ResourceID: 55,
			Version: 2, Changes: json.RawMessage(`{"sprocket":{"id":55,"org_id":3,"teeth":9,"version":2}}`), At: at},
		{ID: 902, OrgID: 3, Actor: "seed", Action: "factory.created", ResourceType: "factory", ResourceID: 8,
			Version: 1, Changes: json.RawMessage(`{"factory":{"id":8,"org_id":3,"name":"F"},"samples":[{"time":1,"actual":2,"goal":3}]}`), At: at},
	}
	got := string(AuditListBody(testIDs, entries, "next"))
	want := `{"items":[` +
		`{"id":"` + testIDs.Encode(publicid.Audit, 901) + `","token_id":"` + testIDs.Encode(publicid.Token, 77) + `","actor":"token","client_addr":"","user_agent":"","request_id":"","action":"sprocket.updated","resource_type":"sprocket","resource_id":"` + testIDs.Encode(publicid.Sprocket, 55) + `","version":2,` +
		`"changes":{"sprocket":{"id":"` + testIDs.Encode(publicid.Sprocket, 55) + `","teeth":9,"version":2}},"at":"2026-12-02T07:00:00Z"},` +
		`{"id":"` + testIDs.Encode(publicid.Audit, 902) + `","token_id":null,"actor":"seed","client_addr":"","user_agent":"","request_id":"","action":"factory.created","resource_type":"factory","resource_id":"` + testIDs.Encode(publicid.Factory, 8) + `","version":1,` +
		`"changes":{"factory":{"id":"` + testIDs.Encode(publicid.Factory, 8) + `","name":"F"},"samples":[{"actual":2,"goal":3,"time":1}]},"at":"2026-12-02T07:00:00Z"}` +
		`],"next_cursor":"next"}`
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

// The original routes' factory bodies, written by hand, are byte for byte
// what encoding/json makes of the seed file's shape, for any history.
func TestCompatFactoryBodiesAreWhatJSONMakes(t *testing.T) {
	type item struct {
		Factory struct {
			ID        int64            `json:"id"`
			ChartData domain.ChartData `json:"chart_data"`
		} `json:"factory"`
	}
	r := rand.New(rand.NewPCG(7, 11))
	var all []domain.Factory
	histories := map[int64][]domain.Sample{}
	var items []item
	for id := int64(1); id <= 40; id++ {
		var samples []domain.Sample
		for i, n := 0, r.IntN(50); i < n; i++ {
			samples = append(samples, domain.Sample{Time: int64(i)*3600 + r.Int64N(3600), Actual: r.Int64N(1 << 40), Goal: r.Int64N(1000)})
		}
		f := domain.Factory{ID: id * 1000003}
		if r.IntN(8) == 0 {
			f.DeletedAt = &time.Time{}
		}
		all = append(all, f)
		histories[f.ID] = samples
		var it item
		it.Factory.ID, it.Factory.ChartData = f.ID, domain.ChartDataOf(samples)
		chart, _ := json.Marshal(it.Factory.ChartData)
		whole, _ := json.Marshal(it)
		if got := chartBody(samples); string(got) != string(chart) {
			t.Fatalf("chart data\n got %s\nwant %s", got, chart)
		}
		if got := factoryBody(f.ID, samples); string(got) != string(whole) {
			t.Fatalf("factory\n got %s\nwant %s", got, whole)
		}
		if !f.Deleted() {
			items = append(items, it)
		}
	}
	want, _ := json.Marshal(struct {
		Factories []item `json:"factories"`
	}{items})
	if got := factoriesBody(all, histories); string(got) != string(want) {
		t.Fatalf("factories\n got %.300s\nwant %.300s", got, want)
	}
}

// The bodies of the original routes, sent in pieces, joined.

func segmentsOf(id int64, samples []domain.Sample) []HeldSegment {
	_, segs := HeldHistory(testLayouts, domain.Factory{ID: id, Version: 1}, samples)
	return segs
}

func chartBody(samples []domain.Sample) []byte {
	return Join(AppendChartPieces(nil, segmentsOf(1, samples)))
}

func factoryBody(id int64, samples []domain.Sample) []byte {
	return Join(AppendFactoryPieces(nil, id, segmentsOf(id, samples)))
}

func factoriesBody(all []domain.Factory, samples map[int64][]domain.Sample) []byte {
	var items []FactoryHistory
	for _, f := range all {
		if !f.Deleted() {
			items = append(items, FactoryHistory{ID: f.ID, Segments: segmentsOf(f.ID, samples[f.ID])})
		}
	}
	return Join(FactoriesPieces(items))
}

// sprocketsBody is GET /api/sprockets for all, sent in pieces, joined.
func sprocketsBody(all []domain.Sprocket) []byte {
	records := SprocketListRecords(testLayouts, 1, all)
	m, _ := DecodeManifest(records[len(records)-1].Entry.Body)
	held := make([]HeldBody, len(m))
	for i, it := range m {
		held[i] = HeldBody{Key: records[i].Key, Hash: it.Hash, Body: records[i].Entry.Body}
	}
	return Join(SprocketsPieces(held))
}
