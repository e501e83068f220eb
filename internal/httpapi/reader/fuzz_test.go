package reader

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/compress"
	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/httpapi/httpapitest"
	"github.com/sprockets-api/sprockets/internal/nearcache"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// emptyCache holds nothing: every read goes to the database.
type emptyCache struct{}

func (emptyCache) Get(context.Context, string, bool) (readmodel.Entry, bool, error) {
	return readmodel.Entry{}, false, nil
}

func (emptyCache) GetMany(_ context.Context, keys []string) ([]readmodel.Entry, []bool, error) {
	return make([]readmodel.Entry, len(keys)), make([]bool, len(keys)), nil
}

func (emptyCache) Members(context.Context, string) (string, readmodel.Members, bool, error) {
	return "", nil, false, nil
}

// database has one sprocket and one factory of organization 1, whose
// history is two samples.
type database struct{}

func (database) Do(ctx context.Context, _ string, fn func(Queries) error) (string, error) {
	return "leader", fn(queries{})
}

type queries struct{}

var (
	aSprocket = domain.Sprocket{ID: 1, OrgID: 1, Version: 1, SprocketSpec: domain.SprocketSpec{Teeth: 5, PitchDiameter: 1, OutsideDiameter: 2, Pitch: 3}}
	aFactory  = domain.Factory{ID: 1, OrgID: 1, Version: 1, Name: "F"}
	twoPoints = []domain.Sample{{Time: 10, Actual: 1, Goal: 2}, {Time: 20, Actual: 3, Goal: 4}}
)

func (queries) Sprocket(_ context.Context, id int64) (domain.Sprocket, error) {
	if id != 1 {
		return domain.Sprocket{}, domain.Errorf(domain.ENOTFOUND, "no sprocket %d", id)
	}
	return aSprocket, nil
}
func (queries) ListSprockets(context.Context, int64, domain.PageRequest) ([]domain.Sprocket, error) {
	return []domain.Sprocket{aSprocket}, nil
}
func (queries) SprocketSpecsOfOrg(context.Context, int64) ([]domain.Sprocket, error) {
	return []domain.Sprocket{aSprocket}, nil
}
func (queries) Factory(_ context.Context, id int64) (domain.Factory, error) {
	if id != 1 {
		return domain.Factory{}, domain.Errorf(domain.ENOTFOUND, "no factory %d", id)
	}
	return aFactory, nil
}
func (queries) ListFactories(context.Context, int64, domain.PageRequest) ([]domain.Factory, error) {
	return []domain.Factory{aFactory}, nil
}
func (q queries) FactoryHistory(ctx context.Context, org, id int64) (domain.Factory, []domain.Sample, error) {
	f, err := q.Factory(ctx, id)
	return f, twoPoints, err
}
func (q queries) SampleAggregates(ctx context.Context, id, from, to, width int64) ([]domain.Aggregate, error) {
	var out []domain.Aggregate
	for _, s := range twoPoints {
		if s.Time < from || s.Time > to {
			continue
		}
		if n := len(out); n == 0 || out[n-1].Start != s.Time-s.Time%width {
			out = append(out, domain.Aggregate{Start: s.Time - s.Time%width})
		}
		out[len(out)-1].Add(s)
	}
	return out, nil
}
func (q queries) FactorySamples(ctx context.Context, org, id, from, to int64, limit int) (domain.Factory, []domain.Sample, error) {
	f, err := q.Factory(ctx, id)
	var in []domain.Sample
	for _, s := range twoPoints {
		if s.Time >= from && s.Time <= to && len(in) < limit {
			in = append(in, s)
		}
	}
	return f, in, err
}
func (queries) FactoriesWithSamples(context.Context, int64) ([]domain.Factory, map[int64][]domain.Sample, error) {
	return []domain.Factory{aFactory}, map[int64][]domain.Sample{1: twoPoints}, nil
}
func (queries) AuditLog(context.Context, int64, domain.PageRequest) ([]domain.AuditEntry, error) {
	return nil, nil
}

type fresh struct{}

func (fresh) Fresh() bool { return true }

// Whatever a client asks the read API (path, query, If-None-Match, a
// consistency token of its making), the answer is never a 5xx, and an
// error is problem+json.
func FuzzReadRequests(f *testing.F) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tokens, err := consistency.NewSigner(strings.Repeat("k", consistency.MinKeyLen))
	if err != nil {
		f.Fatal(err)
	}
	good := tokens.Encode(consistency.Token{Org: 1, Aggregate: "sprocket", ID: 1, Version: 1, LSN: "0/1"})
	ids := httpapitest.IDs()
	spr, fac := ids.Encode(publicid.Sprocket, 1), ids.Encode(publicid.Factory, 1)
	for _, path := range []string{"/api/factories", "/api/factory/1", "/api/factory/1/chart-data", "/api/sprockets",
		"/api/sprocket/1", "/v1/sprockets?limit=2&cursor=abc", "/v1/sprockets?cursor=" + ids.Encode(publicid.SprocketCursor, 1), "/v1/factories?cursor=" + ids.Encode(publicid.SprocketCursor, 1),
		"/v1/sprockets/" + spr, "/v1/sprockets/1", "/v1/sprockets/" + fac, "/v1/factories?limit=0",
		"/v1/factories/" + fac, "/v1/factories/" + fac + "/chart-data?from=5&to=15&limit=1",
		"/v1/factories/" + fac + "/chart-data?from=9&to=1", "/v1/factories/" + fac + "/chart-data?points=1", "/v1/factories/fac_AAAAAAAAAAAAAAAAAAAAAA",
		"/v1/factories/99999999999999999999", "/v1/audit?cursor=%zz", "/api/sprocket/create/1/2/3/4"} {
		f.Add(path, `"x"`, good)
		f.Add(path, "*", "e30.AAAA")
	}
	app := httpapi.NewApp(httpapi.ServerConfig{Name: "fuzz", BodyLimit: 64 << 10}, log, prometheus.NewRegistry())
	// Every request reads as organization 1 with every scope.
	admin := httpapitest.As{OrgID: 1, TokenID: 1, Scopes: []string{domain.ScopeAdmin}}
	app.Use(httpapi.Access(admin, httpapitest.Unlimited{}, httpapi.AccessConfig{RateLimit: 1000, AnonymousRateLimit: 10}, log))
	near := nearcache.New(1<<20, fresh{}, prometheus.NewRegistry())
	Routes(app, New(near, emptyCache{}, database{}, compress.New(1<<20, prometheus.NewRegistry()), Config{ConsistencyWait: time.Millisecond, CacheBackoff: time.Second,
		MaxChartBuckets: 10, Tokens: tokens, IDs: ids}, log, func(string) {}))
	f.Fuzz(func(t *testing.T, target, ifNoneMatch, token string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") {
			return // not a request line the HTTP parser would pass on
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.RequestURI = target
		path, query, _ := strings.Cut(target, "?")
		req.URL.Path, req.URL.RawPath, req.URL.RawQuery = path, "", query
		req.Header.Set("Authorization", "Bearer x")
		httpapitest.SetHeaders(req, map[string]string{"If-None-Match": ifNoneMatch, "X-Consistency-Token": token})
		httpapitest.CheckAnswer(t, app, req, "GET "+target)
	})
}
