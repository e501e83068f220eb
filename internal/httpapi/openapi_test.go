package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/httpapi/reader"
	"github.com/sprockets-api/sprockets/internal/httpapi/writer"
)

// The OpenAPI document describes exactly the routes the programs serve.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	served := map[string]bool{}
	param := regexp.MustCompile(`:(\w+)`)
	collect := func(app *fiber.App) {
		for _, r := range app.GetRoutes(true) {
			if r.Method == fiber.MethodHead || r.Method == fiber.MethodConnect || r.Method == fiber.MethodTrace ||
				r.Method == fiber.MethodOptions || strings.HasPrefix(r.Path, "/healthz") || r.Path == "/readyz" || r.Path == "/metrics" {
				continue
			}
			if onlyMethodNotAllowed(r) {
				continue
			}
			served[r.Method+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
		}
	}
	w := httpapi.NewApp(httpapi.ServerConfig{Name: "w"}, log, prometheus.NewRegistry())
	writer.Routes(w, writer.New(nil, nil))
	collect(w)
	r := httpapi.NewApp(httpapi.ServerConfig{Name: "r"}, log, prometheus.NewRegistry())
	reader.Routes(r, reader.New(nil, nil, nil, nil, reader.Config{}, log, func(string) {}))
	collect(r)

	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	if missing := diff(served, documented); len(missing) > 0 {
		t.Errorf("served but not in the OpenAPI document: %v", missing)
	}
	if extra := diff(documented, served); len(extra) > 0 {
		t.Errorf("in the OpenAPI document but not served: %v", extra)
	}
}

// onlyMethodNotAllowed tells a method a path answers only with 405 (Fiber
// merges the catch-all's handler into the real route of the same method).
func onlyMethodNotAllowed(r fiber.Route) bool {
	for _, h := range r.Handlers {
		name := runtime.FuncForPC(reflect.ValueOf(h).Pointer()).Name()
		if !strings.Contains(name, ".MethodNotAllowed.") && !strings.Contains(name, ".Require.") {
			return false
		}
	}
	return true
}

func diff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
