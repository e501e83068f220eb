package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// Every kind of bad input gets a 4xx application/problem+json answer that
// says what was wrong, and changes nothing in the database.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := leader(t, s)
	w, rd := s.Writer.URL(), s.Reader.URL()
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	many := make([]string, 10_001)
	for i := range many {
		many[i] = fmt.Sprintf(`{"time":%d,"actual":1,"goal":1}`, i)
	}
	tests := []struct {
		name    string
		method  string
		url     string
		body    string
		header  []string
		status  int
		mention string // the answer's detail must contain this
	}{
		// The original routes, by path.
		{"teeth not a number", "POST", w + "/api/sprocket/create/abc/6/4/7", "", nil, 400, "teeth"},
		{"teeth negative", "POST", w + "/api/sprocket/create/-5/6/4/7", "", nil, 400, "teeth"},
		{"teeth zero", "POST", w + "/api/sprocket/create/0/6/4/7", "", nil, 400, "teeth"},
		{"teeth fractional", "POST", w + "/api/sprocket/create/5.5/6/4/7", "", nil, 400, "teeth"},
		{"teeth beyond 64 bits", "POST", w + "/api/sprocket/create/99999999999999999999/6/4/7", "", nil, 400, "teeth"},
		{"teeth over the limit", "POST", w + "/api/sprocket/create/100001/6/4/7", "", nil, 400, "teeth"},
		{"pitch diameter NaN", "POST", w + "/api/sprocket/create/5/NaN/4/7", "", nil, 400, "pitch_diameter"},
		{"pitch diameter Inf", "POST", w + "/api/sprocket/create/5/Inf/4/7", "", nil, 400, "pitch_diameter"},
		{"pitch diameter Infinity", "POST", w + "/api/sprocket/create/5/Infinity/4/7", "", nil, 400, "pitch_diameter"},
		{"pitch diameter exponent", "POST", w + "/api/sprocket/create/5/1e400/4/7", "", nil, 400, "pitch_diameter"},
		{"pitch diameter negative", "POST", w + "/api/sprocket/create/5/-6/4/7", "", nil, 400, "pitch_diameter"},
		{"pitch diameter zero", "POST", w + "/api/sprocket/create/5/0/4/7", "", nil, 400, "pitch_diameter"},
		{"outside diameter 0.0", "POST", w + "/api/sprocket/create/5/6/0.0/7", "", nil, 400, "outside_diameter"},
		{"pitch in hex", "POST", w + "/api/sprocket/create/5/6/4/0x10", "", nil, 400, "pitch"},
		{"pitch overlong", "POST", w + "/api/sprocket/create/5/6/4/" + strings.Repeat("9", 40), "", nil, 400, "pitch"},
		{"pitch over the limit", "POST", w + "/api/sprocket/create/5/6/4/1000001", "", nil, 400, "pitch"},
		{"create with a segment missing", "POST", w + "/api/sprocket/create/5/6/4", "", nil, 404, "Cannot POST"},
		{"create by GET at the writer", "GET", w + "/api/sprocket/create/5/6/4/7/", "", nil, 405, "POST"},
		{"create by GET at the reader", "GET", rd + "/api/sprocket/create/5/6/4/7/", "", nil, 405, "POST"},
		{"update by GET at the reader", "GET", rd + "/api/sprocket/1/update/5/6/4/7", "", nil, 405, "POST"},
		{"update id not a number", "POST", w + "/api/sprocket/abc/update/5/6/4/7", "", nil, 400, "id"},
		{"update id zero", "POST", w + "/api/sprocket/0/update/5/6/4/7", "", nil, 400, "id"},
		{"update id beyond 64 bits", "POST", w + "/api/sprocket/9223372036854775808/update/5/6/4/7", "", nil, 400, "id"},
		{"update unknown id", "POST", w + "/api/sprocket/999999/update/5/6/4/7", "", nil, 404, "999999"},
		{"update with bad teeth", "POST", w + "/api/sprocket/1/update/x/6/4/7", "", nil, 400, "teeth"},

		// /v1 sprockets, by body.
		{"malformed JSON", "POST", w + "/v1/sprockets", `{"teeth":`, nil, 400, "JSON"},
		{"text/plain body", "POST", w + "/v1/sprockets", `{"teeth":5}`, []string{"Content-Type", "text/plain"}, 415, "Content-Type"},
		{"no content type", "POST", w + "/v1/sprockets", `{"teeth":5}`, []string{"Content-Type", ""}, 415, "Content-Type"},
		{"empty body", "POST", w + "/v1/sprockets", ` `, nil, 400, "empty"},
		{"unknown field", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1,"color":"red"}`, nil, 400, "color"},
		{"teeth as a string", "POST", w + "/v1/sprockets", `{"teeth":"5","pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 400, "teeth"},
		{"teeth fractional in JSON", "POST", w + "/v1/sprockets", `{"teeth":5.5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 400, "teeth"},
		{"teeth null", "POST", w + "/v1/sprockets", `{"teeth":null,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 400, "teeth"},
		{"every field missing", "POST", w + "/v1/sprockets", `{}`, nil, 400, "teeth"},
		{"an array, not an object", "POST", w + "/v1/sprockets", `[]`, nil, 400, "object"},
		{"deeply nested", "POST", w + "/v1/sprockets", `{"teeth":` + deep + `}`, nil, 400, "teeth"},
		{"two objects", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}{}`, nil, 400, "one JSON object"},
		{"pitch overflows float64", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1e400}`, nil, 400, "pitch"},
		{"pitch negative in JSON", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":-1}`, nil, 400, "pitch"},
		{"idempotency key too long", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, "Idempotency-Key"},
		{"idempotency key not ASCII", "POST", w + "/v1/sprockets", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, []string{"Idempotency-Key", "ключ"}, 400, "Idempotency-Key"},
		{"replace unknown sprocket", "PUT", w + "/v1/sprockets/" + sid(s, 999999), `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 404, sid(s, 999999)},
		{"replace a sprocket by its number", "PUT", w + "/v1/sprockets/1", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 400, "spr_"},
		{"replace a sprocket by a made-up id", "PUT", w + "/v1/sprockets/spr_AAAAAAAAAAAAAAAAAAAAAA", `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 404, "spr_AAAAAAAAAAAAAAAAAAAAAA"},
		{"replace a sprocket by a factory's id", "PUT", w + "/v1/sprockets/" + fid(s, 1), `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, nil, 400, "not a valid sprocket id"},
		{"replace with a stale If-Match", "PUT", w + "/v1/sprockets/" + sid(s, 1), `{"teeth":5,"pitch_diameter":5,"outside_diameter":6,"pitch":2}`, []string{"If-Match", `"99"`}, 412, "version"},
		{"patch to zero", "PATCH", w + "/v1/sprockets/" + sid(s, 1), `{"pitch":0}`, nil, 400, "pitch"},
		{"patch with null", "PATCH", w + "/v1/sprockets/" + sid(s, 1), `{"pitch":null}`, nil, 400, "null"},
		{"patch as form data", "PATCH", w + "/v1/sprockets/" + sid(s, 1), `pitch=2`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"delete id not a number", "DELETE", w + "/v1/sprockets/abc", "", nil, 400, "id"},
		{"delete with a stale If-Match", "DELETE", w + "/v1/sprockets/" + sid(s, 1), "", []string{"If-Match", `"7"`}, 412, "version"},
		{"delete with a weak If-Match", "DELETE", w + "/v1/sprockets/" + sid(s, 1), "", []string{"If-Match", `W/"1"`}, 412, "If-Match"},

		// /v1 factories.
		{"factory name empty", "POST", w + "/v1/factories", `{"name":"  "}`, nil, 400, "name"},
		{"factory name too long", "POST", w + "/v1/factories", `{"name":"` + strings.Repeat("n", 201) + `"}`, nil, 400, "name"},
		{"factory name with a control character", "POST", w + "/v1/factories", `{"name":"a\u0001b"}`, nil, 400, "name"},
		{"sample with negative actual", "POST", w + "/v1/factories", `{"name":"x","samples":[{"time":1,"actual":-1,"goal":1}]}`, nil, 400, "actual"},
		{"samples sharing a time", "POST", w + "/v1/factories", `{"name":"x","samples":[{"time":1,"actual":1,"goal":1},{"time":1,"actual":2,"goal":1}]}`, nil, 400, "time"},
		{"sample time after year 9999", "POST", w + "/v1/factories", `{"name":"x","samples":[{"time":253402300800,"actual":1,"goal":1}]}`, nil, 400, "time"},
		{"samples and chart_data both", "POST", w + "/v1/factories", `{"name":"x","samples":[{"time":1,"actual":1,"goal":1}],"chart_data":{"time":[2],"sprocket_production_actual":[1],"sprocket_production_goal":[1]}}`, nil, 400, "not both"},
		{"chart_data of uneven lengths", "POST", w + "/v1/factories", `{"name":"x","chart_data":{"time":[1,2],"sprocket_production_actual":[1],"sprocket_production_goal":[1,2]}}`, nil, 400, "same length"},
		{"append to an unknown factory", "POST", w + "/v1/factories/" + fid(s, 999999) + "/samples", `{"samples":[{"time":1,"actual":1,"goal":1}]}`, nil, 404, fid(s, 999999)},
		{"append nothing", "POST", w + "/v1/factories/" + fid(s, 1) + "/samples", `{"samples":[]}`, nil, 400, "samples"},
		{"append a sample that contradicts history", "POST", w + "/v1/factories/" + fid(s, 1) + "/samples", `{"samples":[{"time":1611194818,"actual":1,"goal":1}]}`, nil, 409, "1611194818"},
		{"append too many samples", "POST", w + "/v1/factories/" + fid(s, 1) + "/samples", `{"samples":[` + strings.Join(many, ",") + `]}`, nil, 400, "10000"},
		{"rename to nothing", "PATCH", w + "/v1/factories/" + fid(s, 1), `{"name":""}`, nil, 400, "name"},

		// The reader.
		{"factory id not a number", "GET", rd + "/api/factory/abc", "", nil, 400, "id"},
		{"factory id zero", "GET", rd + "/api/factory/0/chart-data", "", nil, 400, "id"},
		{"unknown factory", "GET", rd + "/api/factory/999", "", nil, 404, "999"},
		{"unknown sprocket", "GET", rd + "/v1/sprockets/" + sid(s, 424242), "", nil, 404, sid(s, 424242)},
		{"a sprocket by its number", "GET", rd + "/v1/sprockets/1", "", nil, 400, "spr_"},
		{"a made-up factory id", "GET", rd + "/v1/factories/fac_AAAAAAAAAAAAAAAAAAAAAA/chart-data", "", nil, 404, "fac_AAAAAAAAAAAAAAAAAAAAAA"},
		{"limit zero", "GET", rd + "/v1/sprockets?limit=0", "", nil, 400, "limit"},
		{"limit not a number", "GET", rd + "/v1/factories?limit=ten", "", nil, 400, "limit"},
		{"limit too large", "GET", rd + "/v1/factories?limit=501", "", nil, 400, "limit"},
		{"cursor forged", "GET", rd + "/v1/sprockets?cursor=garbage", "", nil, 400, "cursor"},
		{"chart range backwards", "GET", rd + "/v1/factories/" + fid(s, 1) + "/chart-data?from=10&to=5", "", nil, 400, "from"},
		{"chart range negative", "GET", rd + "/v1/factories/" + fid(s, 1) + "/chart-data?from=-1", "", nil, 400, "from"},
		{"consistency token forged", "GET", rd + "/api/sprocket/1", "", []string{"X-Consistency-Token", "not-a-token"}, 400, "X-Consistency-Token"},
		{"POST to a read route", "POST", rd + "/api/factories", "{}", nil, 405, "GET"},
		{"unknown route", "GET", rd + "/api/nothing-here", "", nil, 404, "Cannot GET"},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	before := fingerprint(t, db)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := do(t, tc.method, tc.url, body, tc.header...)
			checkProblem(t, r, tc.status, tc.mention)
		})
	}
	t.Run("oversized body", func(t *testing.T) {
		for _, base := range []string{w, rd} {
			// Only the head, announcing 2 MiB: a server must refuse an
			// oversized body from its Content-Length, and a client still
			// writing megabytes could not read that answer reliably.
			r, err := raw(base, fmt.Sprintf("POST /v1/sprockets HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", 2<<20), "")
			if err != nil {
				t.Fatal(err)
			}
			checkProblem(t, r, 413, "Too Large")
		}
	})
	if after := fingerprint(t, db); after != before {
		t.Errorf("bad requests changed the database:\n before %s\n after  %s", before, after)
	}
	t.Logf("%d bad requests refused", len(tests)+2)
}

// checkProblem fails the test unless r is a complete problem+json answer
// with status whose detail mentions mention.
func checkProblem(t *testing.T, r reply, status int, mention string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("got %s, want %d", r, status)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("not JSON: %s", r.Body)
	}
	if p.Status != status || p.Title == "" || p.Detail == "" || p.Type == "" {
		t.Errorf("incomplete problem: %s", r.Body)
	}
	if !strings.Contains(p.Detail, mention) {
		t.Errorf("detail %q does not mention %q", p.Detail, mention)
	}
	if status == 405 && r.Header.Get("Allow") == "" {
		t.Errorf("405 without Allow")
	}
}
