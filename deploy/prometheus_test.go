package deploy

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// The rules of deploy/prometheus/rules are the one source: the Kubernetes
// PrometheusRule is generated from them with
// go test ./deploy -run TestKubernetesMonitoring -update.
var update = flag.Bool("update", false, "rewrite k8s/monitoring/prometheus-rule.yaml from prometheus/rules/*.yml")

const (
	rulesGlob      = "prometheus/rules/*.yml"
	ruleTestsGlob  = "prometheus/tests/*_test.yml"
	prometheusRule = "k8s/monitoring/prometheus-rule.yaml"
	dashboardsDir  = "grafana/dashboards"
	operationsDoc  = "../docs/operations.md"
)

// programs are the scrape jobs, named after the programs; the rules select
// by them.
var programs = []string{"projector", "reader", "writer"}

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is needed to check the Prometheus rules: run make deps")
	}
	return p
}

func globbed(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	return files
}

// loadRules returns every rule of every rules file, in file order.
func loadRules(t *testing.T) []rule {
	t.Helper()
	var rules []rule
	for _, f := range globbed(t, rulesGlob) {
		var rf ruleFile
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			rules = append(rules, g.Rules...)
		}
	}
	return rules
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// promtool checks every rules file and runs every unit test file: each
// alert fires on the series of its failure and stays quiet on healthy ones.
func TestPrometheusRules(t *testing.T) {
	promtool := promtool(t)
	for _, f := range globbed(t, rulesGlob) {
		if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
	for _, f := range globbed(t, ruleTestsGlob) {
		if out, err := exec.Command(promtool, "test", "rules", f).CombinedOutput(); err != nil {
			t.Errorf("promtool test rules %s: %v\n%s", f, err, out)
		}
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", "prometheus/prometheus.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool check config prometheus/prometheus.yml: %v\n%s", err, out)
	}
}

type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name      string `yaml:"name"`
		AlertTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// Every alert says how bad it is, what it means and where its runbook is,
// and is tested both ways: firing, and quiet on healthy series.
func TestAlertsAreDocumentedAndTested(t *testing.T) {
	anchors := markdownAnchors(t, operationsDoc)
	fires, quiet := map[string]bool{}, map[string]bool{}
	tested := map[string]bool{}
	for _, f := range globbed(t, ruleTestsGlob) {
		var tf ruleTestFile
		readYAML(t, f, &tf)
		for _, rf := range tf.RuleFiles {
			tested[filepath.Clean(filepath.Join(filepath.Dir(f), rf))] = true
		}
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, f := range globbed(t, rulesGlob) {
		if !tested[filepath.Clean(f)] {
			t.Errorf("%s is in no unit test file's rule_files", f)
		}
	}
	doc := string(mustRead(t, operationsDoc))
	runbook := regexp.MustCompile(`^docs/operations\.md#([a-z0-9-]+)$`)
	alerts := 0
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts++
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if m := runbook.FindStringSubmatch(r.Annotations["runbook"]); m == nil {
			t.Errorf("%s: runbook %q, want docs/operations.md#anchor", r.Alert, r.Annotations["runbook"])
		} else if !anchors[m[1]] {
			t.Errorf("%s: runbook %s: docs/operations.md has no heading with that anchor", r.Alert, r.Annotations["runbook"])
		}
		if !fires[r.Alert] {
			t.Errorf("%s: no unit test makes it fire", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no unit test shows it quiet on healthy series", r.Alert)
		}
		if !strings.Contains(doc, "`"+r.Alert+"`") {
			t.Errorf("%s is not in docs/operations.md", r.Alert)
		}
	}
	if alerts < 10 {
		t.Errorf("only %d alerts found", alerts)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// markdownAnchors returns the anchors GitHub gives the headings of a
// Markdown file: lower case, punctuation dropped, spaces as hyphens.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	fenced := false
	for _, line := range strings.Split(string(mustRead(t, path)), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
	}
	return anchors
}

// ---- metric names ------------------------------------------------------------

// metric is a series name the programs export, with its labels.
type metric struct {
	labels map[string]bool
}
