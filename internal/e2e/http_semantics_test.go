package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// Idempotency keys, conditional requests and method rules behave as HTTP
// clients expect.
func TestHTTPSemantics(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := leader(t, s)
	w, rd := s.Writer.URL(), s.Reader.URL()

	t.Run("an idempotency key replays the first answer", func(t *testing.T) {
		body := `{"teeth":7,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`
		first := do(t, "POST", w+"/v1/sprockets", body, "Idempotency-Key", "order-1")
		expect(t, first, 201, "first")
		before := count(t, db, `SELECT count(*) FROM sprockets`)
		// Same request, other spacing: the same request.
		again := do(t, "POST", w+"/v1/sprockets", `{ "teeth": 7, "pitch_diameter": 2, "outside_diameter": 3, "pitch": 1 }`, "Idempotency-Key", "order-1")
		expect(t, again, 201, "retry")
		if string(again.Body) != string(first.Body) || again.Header.Get("Location") != first.Header.Get("Location") {
			t.Errorf("retry answered %s %q, first %s %q", again.Body, again.Header.Get("Location"), first.Body, first.Header.Get("Location"))
		}
		if again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the replay does not say so")
		}
		other := do(t, "POST", w+"/v1/sprockets", `{"teeth":8,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, "Idempotency-Key", "order-1")
		checkProblem(t, other, 422, "order-1")
		compat := do(t, "POST", w+"/api/sprocket/create/7/2/3/1", nil, "Idempotency-Key", "order-1")
		checkProblem(t, compat, 422, "order-1")
		if after := count(t, db, `SELECT count(*) FROM sprockets`); after != before {
			t.Errorf("replays created %d sprockets", after-before)
		}
	})

	t.Run("concurrent requests with one key create once", func(t *testing.T) {
		before := count(t, db, `SELECT count(*) FROM sprockets`)
		var wg sync.WaitGroup
		locations := make([]string, 8)
		for i := range locations {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r, err := call("POST", w+"/api/sprocket/create/3/2/3/1", nil, "Idempotency-Key", "burst")
				if err == nil && r.Status == 201 {
					locations[i] = r.Header.Get("Location")
				}
			}(i)
		}
		wg.Wait()
		for i, l := range locations {
			if l == "" || l != locations[0] {
				t.Fatalf("answer %d: Location %q, first %q", i, l, locations[0])
			}
		}
		if after := count(t, db, `SELECT count(*) FROM sprockets`); after != before+1 {
			t.Errorf("8 concurrent creates with one key made %d sprockets", after-before)
		}
	})

	t.Run("ETag and If-None-Match", func(t *testing.T) {
		// Lists come from the replica: let it catch up with the writes of the
		// subtests above, so that both reads of a list see the same state.
		if err := devstack.WaitReplay(context.Background(), s.Leader, s.Replica, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/api/factories", "/api/factory/1", "/api/factory/1/chart-data", "/api/sprockets",
			"/api/sprocket/1", "/v1/sprockets/" + sid(s, 1), "/v1/factories/" + fid(s, 1), "/v1/factories/" + fid(s, 1) + "/chart-data", "/v1/sprockets"} {
			r := eventually(t, rd+path, 200, nil)
			etag := r.Header.Get("ETag")
			if etag == "" {
				t.Fatalf("%s: no ETag", path)
			}
			nm := do(t, "GET", rd+path, nil, "If-None-Match", etag)
			if nm.Status != 304 || len(nm.Body) != 0 || nm.Header.Get("ETag") != etag {
				t.Errorf("%s with If-None-Match %s: %s ETag %q", path, etag, nm, nm.Header.Get("ETag"))
			}
			head := do(t, "HEAD", rd+path, nil)
			if head.Status != 200 || len(head.Body) != 0 {
				t.Errorf("HEAD %s: %s", path, head)
			}
		}
	})

	t.Run("If-Match guards updates", func(t *testing.T) {
		r := do(t, "POST", w+"/v1/sprockets", `{"teeth":1,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`)
		var sp sprocketV1
		r.JSON(t, &sp)
		url := fmt.Sprintf("%s/v1/sprockets/%s", w, sp.ID)
		expect(t, do(t, "PATCH", url, `{"teeth":2}`, "If-Match", `"1"`), 200, "patch at the current version")
		checkProblem(t, do(t, "PATCH", url, `{"teeth":3}`, "If-Match", `"1"`), 412, "version 2")
		r = do(t, "PUT", url, `{"teeth":2,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`)
		expect(t, r, 200, "a PUT that changes nothing")
		if r.Header.Get("ETag") != `"2"` {
			t.Errorf("an unchanged PUT moved the version to %s", r.Header.Get("ETag"))
		}
	})

	t.Run("write routes refuse GET with Allow", func(t *testing.T) {
		for _, base := range []string{w, rd} {
			for _, path := range []string{"/api/sprocket/create/5/6/4/7/", "/api/sprocket/1/update/5/6/4/7"} {
				r := do(t, "GET", base+path, nil)
				if r.Status != 405 || r.Header.Get("Allow") != "POST" {
					t.Errorf("GET %s%s: %s Allow %q", base, path, r, r.Header.Get("Allow"))
				}
			}
		}
	})

	t.Run("trailing slashes are optional", func(t *testing.T) {
		for _, path := range []string{"/api/factories/", "/api/factory/1/", "/api/factory/1/chart-data/", "/api/sprockets/", "/api/sprocket/1/"} {
			expect(t, do(t, "GET", rd+path, nil), 200, "GET "+path)
		}
		expect(t, do(t, "POST", w+"/api/sprocket/create/5/6/4/7", nil), 201, "create without the slash")
	})

	t.Run("the OpenAPI document is served", func(t *testing.T) {
		r := do(t, "GET", rd+"/v1/openapi.json", nil)
		expect(t, r, 200, "openapi")
		var doc struct {
			OpenAPI string         `json:"openapi"`
			Paths   map[string]any `json:"paths"`
		}
		r.JSON(t, &doc)
		if doc.OpenAPI == "" || doc.Paths["/v1/sprockets/{id}"] == nil {
			t.Errorf("not the OpenAPI document: %.200s", r.Body)
		}
	})
}
