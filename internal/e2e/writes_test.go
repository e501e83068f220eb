package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

type sprocketV1 struct {
	ID              string  `json:"id"`
	Teeth           int64   `json:"teeth"`
	PitchDiameter   float64 `json:"pitch_diameter"`
	OutsideDiameter float64 `json:"outside_diameter"`
	Pitch           float64 `json:"pitch"`
	Version         int64   `json:"version"`
}

type factoryV1 struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Version     int64  `json:"version"`
	SampleCount int64  `json:"sample_count"`
	FirstTime   *int64 `json:"first_time"`
	LastTime    *int64 `json:"last_time"`
}

// sid and fid return the /v1 ids of sprocket and factory number n (the
// original routes' id), as the stack's programs make them.
func sid(s *devstack.Stack, n int64) string { return s.IDs().Encode(publicid.Sprocket, n) }
func fid(s *devstack.Stack, n int64) string { return s.IDs().Encode(publicid.Factory, n) }

// num returns the number behind a /v1 id: the original routes' id.
func num(t *testing.T, s *devstack.Stack, id string) int64 {
	t.Helper()
	for _, k := range []publicid.Kind{publicid.Sprocket, publicid.Factory} {
		if n, ok := s.IDs().Decode(k, id); ok {
			return n
		}
	}
	t.Fatalf("%q is no /v1 id of this stack", id)
	return 0
}

// bodyHas returns a matcher for eventually: the body holds every fragment.
func bodyHas(fragments ...string) func([]byte) bool {
	return func(b []byte) bool {
		for _, f := range fragments {
			if !strings.Contains(string(b), f) {
				return false
			}
		}
		return true
	}
}

// Each write route, compatibility and /v1, changes what the reader serves
// on every route that shows the data, and a delete makes it 404.
func TestEveryWriteRouteReachesTheReader(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()

	t.Run("compat create and update", func(t *testing.T) {
		r := do(t, "POST", w+"/api/sprocket/create/5/6/4/7/", nil)
		expect(t, r, 201, "compat create")
		var created struct{ ID int64 }
		r.JSON(t, &created)
		if loc := r.Header.Get("Location"); loc != fmt.Sprintf("/api/sprocket/%d", created.ID) {
			t.Errorf("Location %q", loc)
		}
		want := fmt.Sprintf(`{"id":%d,"teeth":5,"pitch_diameter":6,"outside_diameter":4,"pitch":7}`, created.ID)
		if string(r.Body) != want {
			t.Errorf("create answered %s, want %s", r.Body, want)
		}
		eventually(t, fmt.Sprintf("%s/api/sprocket/%d", rd, created.ID), 200, bodyHas(want))
		eventually(t, rd+"/api/sprockets", 200, bodyHas(want))

		r = do(t, "POST", fmt.Sprintf("%s/api/sprocket/%d/update/9/8.5/10.25/1.5", w, created.ID), nil)
		expect(t, r, 200, "compat update")
		want = fmt.Sprintf(`{"id":%d,"teeth":9,"pitch_diameter":8.5,"outside_diameter":10.25,"pitch":1.5}`, created.ID)
		if string(r.Body) != want {
			t.Errorf("update answered %s, want %s", r.Body, want)
		}
		eventually(t, fmt.Sprintf("%s/api/sprocket/%d", rd, created.ID), 200, bodyHas(want))
		eventually(t, fmt.Sprintf("%s/v1/sprockets/%s", rd, sid(s, created.ID)), 200, bodyHas(`"teeth":9`, `"version":2`))
		eventually(t, rd+"/api/sprockets", 200, bodyHas(want))
	})

	t.Run("v1 sprocket lifecycle", func(t *testing.T) {
		r := do(t, "POST", w+"/v1/sprockets", `{"teeth":12,"pitch_diameter":3.5,"outside_diameter":4,"pitch":0.5}`)
		expect(t, r, 201, "create")
		var sp sprocketV1
		r.JSON(t, &sp)
		if r.Header.Get("ETag") != `"1"` || sp.Version != 1 || r.Header.Get("X-Consistency-Token") == "" {
			t.Fatalf("create: ETag %q, version %d, token %q", r.Header.Get("ETag"), sp.Version, r.Header.Get("X-Consistency-Token"))
		}
		if loc := r.Header.Get("Location"); loc != "/v1/sprockets/"+sp.ID || !strings.HasPrefix(sp.ID, "spr_") {
			t.Errorf("created %q at %q", sp.ID, loc)
		}
		url := fmt.Sprintf("%s/v1/sprockets/%s", rd, sp.ID)
		eventually(t, url, 200, bodyHas(`"teeth":12`, `"version":1`))

		r = do(t, "PUT", fmt.Sprintf("%s/v1/sprockets/%s", w, sp.ID), `{"teeth":13,"pitch_diameter":3.5,"outside_diameter":4,"pitch":0.5}`, "If-Match", `"1"`)
		expect(t, r, 200, "put")
		eventually(t, url, 200, bodyHas(`"teeth":13`, `"version":2`))

		r = do(t, "PATCH", fmt.Sprintf("%s/v1/sprockets/%s", w, sp.ID), `{"pitch":0.75}`, "Content-Type", "application/merge-patch+json")
		expect(t, r, 200, "patch")
		r = eventually(t, url, 200, bodyHas(`"pitch":0.75`, `"teeth":13`, `"version":3`))
		if r.Header.Get("ETag") != `"3"` {
			t.Errorf("GET after patch: ETag %q, want \"3\"", r.Header.Get("ETag"))
		}
		eventually(t, fmt.Sprintf("%s/api/sprocket/%d", rd, num(t, s, sp.ID)), 200, bodyHas(`"pitch":0.75`))

		r = do(t, "DELETE", fmt.Sprintf("%s/v1/sprockets/%s", w, sp.ID), nil, "If-Match", `"3"`)
		expect(t, r, 204, "delete")
		eventually(t, url, 404, nil)
		eventually(t, fmt.Sprintf("%s/api/sprocket/%d", rd, num(t, s, sp.ID)), 404, nil)
		eventually(t, rd+"/api/sprockets", 200, func(b []byte) bool {
			return !strings.Contains(string(b), fmt.Sprintf(`"id":%d,`, num(t, s, sp.ID)))
		})
		r = do(t, "DELETE", fmt.Sprintf("%s/v1/sprockets/%s", w, sp.ID), nil)
		expect(t, r, 404, "second delete")
	})

	t.Run("v1 factory lifecycle", func(t *testing.T) {
		r := do(t, "POST", w+"/v1/factories", `{"name":"Plant 9","samples":[{"time":1700000000,"actual":5,"goal":6},{"time":1700000060,"actual":7,"goal":6}]}`)
		expect(t, r, 201, "create")
		var f factoryV1
		r.JSON(t, &f)
		base := fmt.Sprintf("%s/v1/factories/%s", rd, f.ID)
		n := num(t, s, f.ID)
		eventually(t, base, 200, bodyHas(`"name":"Plant 9"`, `"sample_count":2`))
		eventually(t, fmt.Sprintf("%s/api/factory/%d/chart-data", rd, n), 200,
			bodyHas(`{"sprocket_production_actual":[5,7],"sprocket_production_goal":[6,6],"time":[1700000000,1700000060]}`))

		r = do(t, "POST", fmt.Sprintf("%s/v1/factories/%s/samples", w, f.ID), `{"samples":[{"time":1700003600,"actual":9,"goal":8}]}`)
		expect(t, r, 200, "append")
		if r.Header.Get("X-Samples-Added") != "1" {
			t.Errorf("X-Samples-Added %q", r.Header.Get("X-Samples-Added"))
		}
		eventually(t, base, 200, bodyHas(`"sample_count":3`, `"last_time":1700003600`, `"version":2`))
		eventually(t, base+"/chart-data?from=1700000030&to=1700003600", 200,
			bodyHas(`"chart_data":{"sprocket_production_actual":[7,9],"sprocket_production_goal":[6,8],"time":[1700000060,1700003600]}`))
		eventually(t, fmt.Sprintf("%s/api/factory/%d", rd, n), 200, bodyHas(`"time":[1700000000,1700000060,1700003600]`))
		eventually(t, rd+"/api/factories", 200, bodyHas(fmt.Sprintf(`{"factory":{"id":%d,"chart_data":{"sprocket_production_actual":[5,7,9]`, n)))

		r = do(t, "PUT", fmt.Sprintf("%s/v1/factories/%s", w, f.ID), `{"name":"Plant Nine"}`)
		expect(t, r, 200, "put")
		eventually(t, base, 200, bodyHas(`"name":"Plant Nine"`, `"version":3`))
		r = do(t, "PATCH", fmt.Sprintf("%s/v1/factories/%s", w, f.ID), `{"name":"Plant 9b"}`)
		expect(t, r, 200, "patch")
		eventually(t, base, 200, bodyHas(`"name":"Plant 9b"`, `"version":4`))

		r = do(t, "DELETE", fmt.Sprintf("%s/v1/factories/%s", w, f.ID), nil)
		expect(t, r, 204, "delete")
		for _, path := range []string{"", "/chart-data"} {
			eventually(t, base+path, 404, nil)
			eventually(t, fmt.Sprintf("%s/api/factory/%d%s", rd, n, path), 404, nil)
		}
		eventually(t, rd+"/api/factories", 200, func(b []byte) bool {
			return !strings.Contains(string(b), fmt.Sprintf(`"id":%d,`, n))
		})
	})

	t.Run("v1 lists page with cursors", func(t *testing.T) {
		var last reply
		for i := 0; i < 4; i++ {
			last = do(t, "POST", w+"/v1/sprockets", fmt.Sprintf(`{"teeth":%d,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, 20+i))
			expect(t, last, 201, "create")
		}
		// Pages come from a replica: the last write's token keeps every page
		// at least as new as the writes.
		tok := last.Header.Get("X-Consistency-Token")
		var ids []int64
		next := rd + "/v1/sprockets?limit=2"
		for next != "" {
			r := do(t, "GET", next, nil, "X-Consistency-Token", tok)
			expect(t, r, 200, "list")
			var page struct {
				Items      []sprocketV1 `json:"items"`
				NextCursor *string      `json:"next_cursor"`
			}
			r.JSON(t, &page)
			for _, it := range page.Items {
				ids = append(ids, num(t, s, it.ID))
			}
			next = ""
			if page.NextCursor != nil {
				next = rd + "/v1/sprockets?limit=2&cursor=" + *page.NextCursor
				if !strings.Contains(r.Header.Get("Link"), `rel="next"`) {
					t.Errorf("no Link header on a page with a next one")
				}
			}
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Fatalf("ids not increasing across pages: %v", ids)
			}
		}
		var all struct{ Items []json.RawMessage }
		do(t, "GET", rd+"/v1/sprockets?limit=500", nil, "X-Consistency-Token", tok).JSON(t, &all)
		if len(ids) != len(all.Items) {
			t.Errorf("paging saw %d sprockets, one page of 500 shows %d", len(ids), len(all.Items))
		}
	})
}
