package writer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/httpapi/httpapitest"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// store answers every write as if it succeeded, from what it was given:
// the fuzz target is the decoding of requests, not the database.
type store struct{}

func (store) CreateSprocket(_ context.Context, _ domain.Actor, spec domain.SprocketSpec, _ domain.Idempotency) (domain.Sprocket, domain.Receipt, error) {
	return domain.Sprocket{ID: 1, OrgID: 1, Version: 1, SprocketSpec: spec}, domain.Receipt{Version: 1, LSN: "0/1"}, nil
}

func (store) UpdateSprocket(_ context.Context, _ domain.Actor, id, _ int64, change func(domain.SprocketSpec) domain.SprocketSpec) (domain.Sprocket, domain.Receipt, error) {
	spec := change(domain.SprocketSpec{Teeth: 5, PitchDiameter: 1, OutsideDiameter: 1, Pitch: 1})
	if err := spec.Validate(); err != nil {
		return domain.Sprocket{}, domain.Receipt{}, err
	}
	return domain.Sprocket{ID: id, OrgID: 1, Version: 2, SprocketSpec: spec}, domain.Receipt{Version: 2, LSN: "0/1"}, nil
}

func (store) DeleteSprocket(context.Context, domain.Actor, int64, int64) (domain.Receipt, error) {
	return domain.Receipt{Version: 2, LSN: "0/1"}, nil
}

func (store) CreateFactory(_ context.Context, _ domain.Actor, spec domain.FactorySpec, _ []domain.Sample, _ domain.Idempotency) (domain.Factory, domain.Receipt, error) {
	return domain.Factory{ID: 1, OrgID: 1, Version: 1, Name: spec.Name}, domain.Receipt{Version: 1, LSN: "0/1"}, nil
}

func (store) UpdateFactory(_ context.Context, _ domain.Actor, id, _ int64, change func(domain.FactorySpec) domain.FactorySpec) (domain.Factory, domain.Receipt, error) {
	spec := change(domain.FactorySpec{Name: "F"})
	if err := spec.Validate(); err != nil {
		return domain.Factory{}, domain.Receipt{}, err
	}
	return domain.Factory{ID: id, OrgID: 1, Version: 2, Name: spec.Name}, domain.Receipt{Version: 2, LSN: "0/1"}, nil
}

func (store) DeleteFactory(context.Context, domain.Actor, int64, int64) (domain.Receipt, error) {
	return domain.Receipt{Version: 2, LSN: "0/1"}, nil
}

func (store) AppendSamples(_ context.Context, _ domain.Actor, id, _ int64, samples []domain.Sample) (domain.Factory, int, domain.Receipt, error) {
	return domain.Factory{ID: id, OrgID: 1, Version: 2, Name: "F"}, len(samples), domain.Receipt{Version: 2, LSN: "0/1"}, nil
}

// Whatever a client sends to the write API (method, path, headers, body:
// the original routes' path parameters, JSON bodies, merge patches), the
// answer is never a 5xx, and an error is problem+json.
func FuzzWriteRequests(f *testing.F) {
	ids := httpapitest.IDs()
	spr, fac := "/v1/sprockets/"+ids.Encode(publicid.Sprocket, 4), "/v1/factories/"+ids.Encode(publicid.Factory, 1)
	for _, seed := range [][4]string{
		{"POST", "/api/sprocket/create/5/6/4/7/", "", ""},
		{"POST", "/api/sprocket/create/1e3/0.5/-1/NaN", "", ""},
		{"POST", "/api/sprocket/3/update/5/6/4/7", "", ""},
		{"POST", "/api/sprocket/99999999999999999999/update/5/6/4/7", "", ""},
		{"POST", "/v1/sprockets", "application/json", `{"teeth":12,"pitch_diameter":3.5,"outside_diameter":4,"pitch":0.5}`},
		{"POST", "/v1/sprockets", "application/json", `{"teeth":1e400,"pitch_diameter":null}`},
		{"PUT", spr, "application/json", `{"teeth":1,"pitch_diameter":1,"outside_diameter":1,"pitch":1,"extra":1}`},
		{"PATCH", spr, "application/merge-patch+json", `{"pitch":0.75}`},
		{"PATCH", spr, "application/merge-patch+json", `{"pitch":null,"teeth":"5"}`},
		{"PATCH", "/v1/sprockets/4", "application/merge-patch+json", `{"pitch":0.75}`},
		{"PATCH", fac, "application/merge-patch+json", `{"name":"\u0000"}`},
		{"POST", "/v1/factories", "application/json", `{"name":"Plant","samples":[{"time":1,"actual":2,"goal":3}]}`},
		{"POST", "/v1/factories", "application/json", `{"name":"Plant","chart_data":{"time":[1,2],"sprocket_production_actual":[1],"sprocket_production_goal":[]}}`},
		{"POST", fac + "/samples", "application/json", `{"samples":[{"time":-1,"actual":2,"goal":3}]}`},
		{"DELETE", fac, "", ""},
		{"DELETE", "/v1/factories/fac_AAAAAAAAAAAAAAAAAAAAAA", "", ""},
		{"POST", "/v1/sprockets", "text/plain", `{`},
	} {
		f.Add(methodIndex(seed[0]), seed[1], seed[2], seed[3], `"1"`, "key-1")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tokens, err := consistency.NewSigner(strings.Repeat("k", consistency.MinKeyLen))
	if err != nil {
		f.Fatal(err)
	}
	app := httpapi.NewApp(httpapi.ServerConfig{Name: "fuzz", BodyLimit: 1 << 20}, log, prometheus.NewRegistry())
	// Every request acts with the write scope.
	writer := httpapitest.As{OrgID: 1, TokenID: 1, Scopes: []string{domain.ScopeWrite}}
	app.Use(httpapi.Access(writer, httpapitest.Unlimited{}, httpapi.AccessConfig{RateLimit: 1000, AnonymousRateLimit: 10}, log))
	Routes(app, New(store{}, tokens, httpapitest.IDs()))
	f.Fuzz(func(t *testing.T, m uint8, path, contentType, body, ifMatch, idempotencyKey string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") {
			return // not a request line the HTTP parser would pass on
		}
		// Methods outside HTTP's own are refused by Fiber before any route,
		// with a plain-text 400: not this API's answer.
		method := methods[int(m)%len(methods)]
		req := httptest.NewRequest("GET", "/", strings.NewReader(body))
		req.Method, req.URL.Path, req.URL.RawPath = method, path, ""
		req.RequestURI = path
		req.Header.Set("Authorization", "Bearer x")
		httpapitest.SetHeaders(req, map[string]string{"Content-Type": contentType, "If-Match": ifMatch, "Idempotency-Key": idempotencyKey})
		httpapitest.CheckAnswer(t, app, req, fmt.Sprintf("%s %s (%q)", method, path, body), http.StatusMethodNotAllowed)
	})
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func methodIndex(m string) uint8 {
	for i, x := range methods {
		if x == m {
			return uint8(i)
		}
	}
	return 0
}
