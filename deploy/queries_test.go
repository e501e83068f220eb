package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// exportedMetrics reads the metrics the programs register from their Go
// sources: every prometheus.New{Counter,Gauge,Histogram,Summary}[Vec] call
// with its options' Name and its label names. A histogram exports
// _bucket, _count and _sum. The Go and process collectors' series that the
// dashboard uses count when the registry registers those collectors.
func exportedMetrics(t *testing.T) map[string]metric {
	t.Helper()
	metrics := map[string]metric{}
	fset := token.NewFileSet()
	collectors := map[string]bool{}
	for _, dir := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				pkg, fn := selector(call.Fun)
				if pkg == "collectors" {
					collectors[fn] = true
				}
				kind, ok := strings.CutPrefix(fn, "New")
				if pkg != "prometheus" || !ok || len(call.Args) == 0 {
					return true
				}
				kind = strings.TrimSuffix(kind, "Vec")
				if !slices.Contains([]string{"Counter", "Gauge", "Histogram", "Summary"}, kind) {
					return true
				}
				name, err := optsName(call.Args[0])
				if err != nil {
					t.Errorf("%s: %v", fset.Position(call.Pos()), err)
					return true
				}
				labels := map[string]bool{"job": true, "instance": true}
				if len(call.Args) > 1 {
					if lit, ok := call.Args[1].(*ast.CompositeLit); ok {
						for _, e := range lit.Elts {
							if s, ok := e.(*ast.BasicLit); ok {
								v, _ := strconv.Unquote(s.Value)
								labels[v] = true
							}
						}
					}
				}
				switch kind {
				case "Histogram":
					bucket := map[string]bool{"le": true}
					for l := range labels {
						bucket[l] = true
					}
					metrics[name+"_bucket"] = metric{bucket}
					metrics[name+"_count"] = metric{labels}
					metrics[name+"_sum"] = metric{labels}
				case "Summary":
					metrics[name+"_count"] = metric{labels}
					metrics[name+"_sum"] = metric{labels}
					fallthrough
				default:
					metrics[name] = metric{labels}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	target := map[string]bool{"job": true, "instance": true}
	// Prometheus's own: whether a target answered, and the alerts.
	metrics["up"] = metric{target}
	metrics["ALERTS"] = metric{nil}
	if collectors["NewProcessCollector"] {
		for _, n := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total"} {
			metrics[n] = metric{target}
		}
	}
	if collectors["NewGoCollector"] {
		metrics["go_goroutines"] = metric{target}
	}
	return metrics
}

func selector(e ast.Expr) (pkg, name string) {
	if s, ok := e.(*ast.SelectorExpr); ok {
		if id, ok := s.X.(*ast.Ident); ok {
			return id.Name, s.Sel.Name
		}
	}
	return "", ""
}

// optsName returns the Name of a prometheus.*Opts literal.
func optsName(e ast.Expr) (string, error) {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return "", fmt.Errorf("metric options are not a literal: cannot read the metric's name")
	}
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
			if s, ok := kv.Value.(*ast.BasicLit); ok && s.Kind == token.STRING {
				return strconv.Unquote(s.Value)
			}
			return "", fmt.Errorf("metric name is not a string literal")
		}
	}
	return "", fmt.Errorf("metric options have no Name")
}

// A seriesSelector is a metric name in a PromQL expression and its matchers.
type seriesSelector struct {
	name     string
	matchers []matcher
}

type matcher struct {
	label, op, value string
}

// PromQL words that are not metric names.
var promqlKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// selectors returns the series selectors of a PromQL expression. It is a
// small lexer, not a parser: enough for the queries here, and strict where
// it does not understand.
func selectors(expr string) ([]seriesSelector, error) {
	var out []seriesSelector
	s := expr
	i := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	readString := func() (string, error) {
		q := s[i]
		j := i + 1
		for j < len(s) && s[j] != q {
			if s[j] == '\\' && q != '`' {
				j++
			}
			j++
		}
		if j >= len(s) {
			return "", fmt.Errorf("unterminated string in %q", expr)
		}
		v := s[i+1 : j]
		i = j + 1
		return v, nil
	}
	readIdent := func() string {
		j := i
		for i < len(s) && isIdent(s[i]) {
			i++
		}
		return s[j:i]
	}
	for i < len(s) {
		c := s[i]
		switch {
		case strings.ContainsRune(" \t\r\n", rune(c)):
			i++
		case c == '"' || c == '\'' || c == '`':
			if _, err := readString(); err != nil {
				return nil, err
			}
		case c == '[': // a range or subquery: durations and Grafana's $__rate_interval
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [ in %q", expr)
			}
			i += j + 1
		case c == '$': // a Grafana variable
			i++
			if i < len(s) && s[i] == '{' {
				j := strings.IndexByte(s[i:], '}')
				if j < 0 {
					return nil, fmt.Errorf("unterminated ${ in %q", expr)
				}
				i += j + 1
			} else {
				readIdent()
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case c == '{':
			return nil, fmt.Errorf("a selector without a metric name in %q", expr)
		case isIdentStart(c):
			word := readIdent()
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case labelLists[word]:
				if next == '(' {
					j := strings.IndexByte(s[i:], ')')
					if j < 0 {
						return nil, fmt.Errorf("unterminated label list in %q", expr)
					}
					i += j + 1
				}
			case promqlKeywords[word] || next == '(':
				// an aggregation, operator or function
			default:
				sel := seriesSelector{name: word}
				if next == '{' {
					i++
					for {
						skipSpace()
						if i < len(s) && s[i] == '}' {
							i++
							break
						}
						label := readIdent()
						skipSpace()
						op := ""
						for _, o := range []string{"=~", "!~", "!=", "="} {
							if strings.HasPrefix(s[i:], o) {
								op = o
								break
							}
						}
						if label == "" || op == "" {
							return nil, fmt.Errorf("cannot read the matchers of %s in %q", word, expr)
						}
						i += len(op)
						skipSpace()
						if i >= len(s) || !strings.ContainsRune("\"'`", rune(s[i])) {
							return nil, fmt.Errorf("a matcher of %s without a string in %q", word, expr)
						}
						v, err := readString()
						if err != nil {
							return nil, err
						}
						sel.matchers = append(sel.matchers, matcher{label, op, v})
						skipSpace()
						if i < len(s) && s[i] == ',' {
							i++
						}
					}
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
}

func TestSelectorsLexer(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"aggregation with a label list", `sum by (job, status) (rate(a_total{job="x",route!~"/a|/b"}[5m]))`, []string{"a_total job route"}},
		{"arithmetic and offsets", `(b or vector(0)) / c offset 5m > 14.4 * 0.001`, []string{"b", "c"}},
		{"functions with strings", `label_replace(absent(up{job="w"} == 1), "job", "w", "", "")`, []string{"up job"}},
		{"grafana interval", `histogram_quantile(0.99, sum by (le) (rate(d_bucket{le="0.5"}[$__rate_interval])))`, []string{"d_bucket le"}},
		{"recording rule names", `sprockets:read_errors:ratio_rate1h / 0.001`, []string{"sprockets:read_errors:ratio_rate1h"}},
		{"vector matching", `e and on (instance) group_left (x) f{a='b'}`, []string{"e", "f a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sels, err := selectors(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range sels {
				w := []string{s.name}
				for _, m := range s.matchers {
					w = append(w, m.label)
				}
				got = append(got, strings.Join(w, " "))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("selectors(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
	if _, err := selectors(`{__name__="x"}`); err == nil {
		t.Error("a selector without a name was accepted")
	}
}

// dashboardQueries returns every query of every dashboard: panel targets
// (in rows too) and annotation queries, by where they are.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	queries := map[string]string{}
	for _, f := range globbed(t, filepath.Join(dashboardsDir, "*.json")) {
		var d struct {
			Panels      []dashboardPanel `json:"panels"`
			Annotations struct {
				List []struct {
					Name string `json:"name"`
					Expr string `json:"expr"`
				} `json:"list"`
			} `json:"annotations"`
		}
		if err := json.Unmarshal(mustRead(t, f), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var walk func(ps []dashboardPanel)
		walk = func(ps []dashboardPanel) {
			for _, p := range ps {
				for _, tg := range p.Targets {
					queries[fmt.Sprintf("%s: panel %q, target %s", f, p.Title, tg.RefID)] = tg.Expr
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				queries[fmt.Sprintf("%s: annotation %q", f, a.Name)] = a.Expr
			}
		}
	}
	return queries
}

type dashboardPanel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

// Every query of the rules and the dashboard names only series that exist:
// metrics the programs export (with their labels), series the recording
// rules define, and Prometheus's own; and selects only the jobs that the
// scrape configurations name.
func TestQueriesNameKnownMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	for _, want := range []string{"sprockets_http_request_duration_seconds_bucket", "sprockets_projection_delay_seconds_count",
		"sprockets_outbox_backlog", "sprockets_feed_fresh", "sprockets_ratelimit_errors_total"} {
		if _, ok := exported[want]; !ok {
			t.Fatalf("%s not found in the Go sources: is the scan of internal/ and cmd/ broken?", want)
		}
	}
	rules := loadRules(t)
	recorded := map[string]bool{}
	for _, r := range rules {
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	queries := dashboardQueries(t)
	if len(queries) < 20 {
		t.Errorf("only %d dashboard queries found", len(queries))
	}
	for _, r := range rules {
		queries["rule "+r.Record+r.Alert] = r.Expr
	}
	used := map[string]bool{}
	for where, q := range queries {
		sels, err := selectors(q)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", where, q)
		}
		for _, s := range sels {
			used[s.name] = true
			m, ok := exported[s.name]
			if !ok && !recorded[s.name] {
				t.Errorf("%s: %s is neither exported by the programs nor recorded by a rule", where, s.name)
				continue
			}
			for _, mt := range s.matchers {
				if ok && m.labels != nil && !m.labels[mt.label] {
					t.Errorf("%s: %s has no label %q", where, s.name, mt.label)
				}
				if mt.label == "job" {
					for _, job := range jobValues(mt) {
						if !slices.Contains(programs, job) {
							t.Errorf("%s: %s selects job %q; the jobs are %v", where, s.name, job, programs)
						}
					}
				}
			}
		}
	}
	// A recording rule nobody reads is dead weight.
	for r := range recorded {
		if !used[r] {
			t.Errorf("recording rule %s is used by no alert and no dashboard", r)
		}
	}
}

// jobValues returns the job names a job matcher can match, as far as they
// are spelt out.
func jobValues(m matcher) []string {
	switch m.op {
	case "=":
		return []string{m.value}
	case "=~":
		return strings.Split(m.value, "|")
	}
	return nil
}

// ---- compose ------------------------------------------------------------------
