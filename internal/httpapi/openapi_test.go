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
	"github.com/sprockets-api/sprockets/internal/publicid"
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
	writer.Routes(w, writer.New(nil, nil, nil))
	collect(w)
	r := httpapi.NewApp(httpapi.ServerConfig{Name: "r"}, log, prometheus.NewRegistry())
	ids, err := publicid.New("openapi tests' key of 32 bytes!!")
	if err != nil {
		t.Fatal(err)
	}
	reader.Routes(r, reader.New(nil, nil, nil, nil, reader.Config{IDs: ids}, log, func(string) {}))
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

// Every operation has an operationId, unique and camelCase, that generated
// clients name their methods after, and at least one tag, each declared in
// the document's tags. (Spectral checks more, slower: spectral_test.go.)
func TestOpenAPIOperationsAreNamedAndTagged(t *testing.T) {
	var doc struct {
		Tags []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"tags"`
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, tag := range doc.Tags {
		if declared[tag.Name] {
			t.Errorf("tag %q is declared twice", tag.Name)
		}
		if tag.Description == "" {
			t.Errorf("tag %q has no description", tag.Name)
		}
		declared[tag.Name] = true
	}
	camel := regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)
	ids := map[string]string{}
	type operation struct{ method, path string }
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}
	var ops []operation
	for path, item := range doc.Paths {
		for method := range item {
			if methods[method] { // not the path item's parameters, summary...
				ops = append(ops, operation{method, path})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { // the same messages in the same order each time
		return ops[i].path < ops[j].path || ops[i].path == ops[j].path && ops[i].method < ops[j].method
	})
	for _, o := range ops {
		where := strings.ToUpper(o.method) + " " + o.path
		var op struct {
			OperationID string   `json:"operationId"`
			Tags        []string `json:"tags"`
			Description string   `json:"description"`
		}
		if err := json.Unmarshal(doc.Paths[o.path][o.method], &op); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		switch {
		case op.OperationID == "":
			t.Errorf("%s has no operationId", where)
		case !camel.MatchString(op.OperationID):
			t.Errorf("%s: operationId %q is not camelCase", where, op.OperationID)
		case ids[op.OperationID] != "":
			t.Errorf("%s and %s have the same operationId %q", ids[op.OperationID], where, op.OperationID)
		default:
			ids[op.OperationID] = where
		}
		if len(op.Tags) == 0 {
			t.Errorf("%s has no tag", where)
		}
		for _, tag := range op.Tags {
			if !declared[tag] {
				t.Errorf("%s: tag %q is not declared in the document's tags", where, tag)
			}
		}
		if strings.TrimSpace(op.Description) == "" {
			t.Errorf("%s has no description", where)
		}
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
