package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

func loadComposeWithProfiles(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("sprockets"), cli.WithInterpolation(true),
		cli.WithEnv(secretsEnv()), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load with profiles %v: %v", profiles, err)
	}
	return p
}

type scrapeConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName     string `yaml:"job_name"`
		MetricsPath string `yaml:"metrics_path"`
		DNSSD       []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
		Static []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// docker compose --profile observability up adds Prometheus, scraping every
// program directly (never the edge), and Grafana with the dashboard; plain
// docker compose up starts neither.
func TestObservabilityProfile(t *testing.T) {
	plain := loadCompose(t)
	for _, s := range []string{"prometheus", "grafana"} {
		if _, ok := plain.Services[s]; ok {
			t.Errorf("%s runs without the observability profile", s)
		}
	}
	p := loadComposeWithProfiles(t, "observability")
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:v?[0-9]+(\.[0-9]+)+$`)
	mounts := map[string]map[string]string{} // service: source below root -> target
	for _, name := range []string{"prometheus", "grafana"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no %s service in the observability profile", name)
		}
		if !pinned.MatchString(s.Image) {
			t.Errorf("%s: image %q is not pinned to a version", name, s.Image)
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: needs a healthcheck and restart: unless-stopped", name)
		}
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s:%s on every interface; this machine only, please", name, port.HostIP, port.Published)
			}
		}
		mounts[name] = map[string]string{}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %q is not a named volume of the project", name, v.Source)
				}
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist", name, v.Source)
			}
			abs, _ := filepath.Abs(root)
			rel, _ := filepath.Rel(abs, v.Source)
			mounts[name][filepath.ToSlash(rel)] = v.Target
		}
	}
	// Started after the edge, whose fixed address they could take otherwise.
	if _, ok := p.Services["prometheus"].DependsOn["edge"]; !ok {
		t.Error("prometheus does not start after the edge")
	}
	if _, ok := p.Services["grafana"].DependsOn["prometheus"]; !ok {
		t.Error("grafana does not start after prometheus")
	}

	// Prometheus: each program through DNS on its own port, the rules mounted
	// where the configuration reads them.
	var cfg scrapeConfig
	readYAML(t, "prometheus/prometheus.yml", &cfg)
	if got := mounts["prometheus"]["deploy/prometheus/prometheus.yml"]; got != "/etc/prometheus/prometheus.yml" {
		t.Errorf("prometheus.yml is mounted at %q, want /etc/prometheus/prometheus.yml", got)
	}
	rulesAt := mounts["prometheus"]["deploy/prometheus/rules"]
	if len(cfg.RuleFiles) != 1 || rulesAt == "" || filepath.Dir(cfg.RuleFiles[0]) != rulesAt {
		t.Errorf("rule_files %v, rules mounted at %q", cfg.RuleFiles, rulesAt)
	}
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
		if len(sc.Static) > 0 || sc.MetricsPath != "" {
			t.Errorf("job %s: static targets or another metrics path; each program is found through DNS", sc.JobName)
		}
		svc, ok := p.Services[sc.JobName]
		if !ok || len(sc.DNSSD) != 1 {
			t.Errorf("job %s: not a compose service found through one dns_sd_config", sc.JobName)
			continue
		}
		d := sc.DNSSD[0]
		if !slices.Equal(d.Names, []string{sc.JobName}) || d.Type != "A" || !slices.Contains(svc.Expose, strconv.Itoa(d.Port)) {
			t.Errorf("job %s: dns_sd %v type %s port %d; want the service name, type A and its port %v", sc.JobName, d.Names, d.Type, d.Port, svc.Expose)
		}
	}
	if jobs = sorted(jobs); !slices.Equal(jobs, programs) {
		t.Errorf("scrape jobs %v, want %v", jobs, programs)
	}

	// Grafana: the datasource and the dashboards where the providers look.
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("datasources %+v, want the compose Prometheus", ds.Datasources)
	}
	uid := ds.Datasources[0].UID
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/sprockets.yml", &providers)
	dashboardsAt := mounts["grafana"]["deploy/"+dashboardsDir]
	if len(providers.Providers) != 1 || dashboardsAt == "" || providers.Providers[0].Options.Path != dashboardsAt {
		t.Errorf("dashboards provided from %+v, mounted at %q", providers.Providers, dashboardsAt)
	}
	if got := mounts["grafana"]["deploy/grafana/provisioning"]; got != "/etc/grafana/provisioning" {
		t.Errorf("provisioning mounted at %q, want /etc/grafana/provisioning", got)
	}
	if home := p.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != nil {
		if _, err := os.Stat(filepath.Join(dashboardsDir, strings.TrimPrefix(*home, dashboardsAt+"/"))); err != nil || !strings.HasPrefix(*home, dashboardsAt+"/") {
			t.Errorf("home dashboard %s is not a provisioned dashboard", *home)
		}
	}
	for _, f := range globbed(t, filepath.Join(dashboardsDir, "*.json")) {
		var d struct {
			UID    string           `json:"uid"`
			Panels []dashboardPanel `json:"panels"`
		}
		if err := json.Unmarshal(mustRead(t, f), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" {
			t.Errorf("%s has no uid", f)
		}
		var walk func(ps []dashboardPanel)
		walk = func(ps []dashboardPanel) {
			for _, pn := range ps {
				if pn.Type != "row" && (pn.Datasource == nil || pn.Datasource.UID != uid) {
					t.Errorf("%s: panel %q does not use the datasource %q", f, pn.Title, uid)
				}
				for _, tg := range pn.Targets {
					if tg.Datasource != nil && tg.Datasource.UID != uid {
						t.Errorf("%s: panel %q target %s uses datasource %q", f, pn.Title, tg.RefID, tg.Datasource.UID)
					}
				}
				walk(pn.Panels)
			}
		}
		walk(d.Panels)
	}
}

// ---- Kubernetes -------------------------------------------------------------------

// generatedPrometheusRule is the PrometheusRule of the rules files: their
// groups, in file order, with their comments.
func generatedPrometheusRule(t *testing.T) []byte {
	t.Helper()
	groups := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, f := range globbed(t, rulesGlob) {
		var doc yaml.Node
		if err := yaml.Unmarshal(mustRead(t, f), &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		top := doc.Content[0]
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value == "groups" {
				groups.Content = append(groups.Content, top.Content[i+1].Content...)
			}
		}
	}
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	mapping := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
	}
	rule := mapping(
		str("apiVersion"), str("monitoring.coreos.com/v1"),
		str("kind"), str("PrometheusRule"),
		str("metadata"), mapping(str("name"), str("sprockets")),
		str("spec"), mapping(str("groups"), groups))
	var buf bytes.Buffer
	buf.WriteString("# Generated from deploy/prometheus/rules/*.yml, the one source of the rules:\n" +
		"#   go test ./deploy -run TestKubernetesMonitoring -update\n" +
		"# Edit those files, not this one; go test ./deploy fails while they differ.\n")
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(rule); err != nil {
		t.Fatal(err)
	}
	enc.Close()
	return buf.Bytes()
}

// The manifests scrape the programs with a PodMonitor whose jobs are the
// programs' names, let Prometheus through the NetworkPolicy, and carry the
// rules as a PrometheusRule equal to the rules files.
func TestKubernetesMonitoring(t *testing.T) {
	if *update {
		if err := os.WriteFile(prometheusRule, generatedPrometheusRule(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The service (deploy/k8s) and its monitoring (deploy/k8s/monitoring),
	// applied one after the other.
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), "k8s")
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	monitoring, err := k.Run(filesys.MakeFsOnDisk(), "k8s/monitoring")
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/monitoring: %v", err)
	}
	if err := resMap.AppendAll(monitoring); err != nil {
		t.Fatal(err)
	}
	var (
		groups   []any
		monitors int
		scraped  = map[string]string{} // program -> its port named http
	)
	for _, r := range resMap.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		switch r.GetKind() {
		case "Deployment":
			if r.GetName() == "edge" {
				continue
			}
			c, _ := r.Pipe(yaml.Lookup("spec", "template", "spec", "containers", "[name="+r.GetName()+"]", "ports", "[name=http]", "containerPort"))
			label, _ := r.Pipe(yaml.Lookup("spec", "template", "metadata", "labels", "app.kubernetes.io/name"))
			if c == nil || label == nil || yaml.GetValue(label) != r.GetName() {
				t.Errorf("Deployment/%s: no port named http, or its pods are not labelled app.kubernetes.io/name=%s", r.GetName(), r.GetName())
				continue
			}
			scraped[r.GetName()] = yaml.GetValue(c)
		case "PodMonitor":
			monitors++
			var pm struct {
				Spec struct {
					JobLabel string `json:"jobLabel"`
					Selector struct {
						MatchExpressions []struct {
							Key, Operator string
							Values        []string
						} `json:"matchExpressions"`
					} `json:"selector"`
					Endpoints []struct {
						Port, Path string
					} `json:"podMetricsEndpoints"`
				} `json:"spec"`
			}
			remarshal(t, m, &pm)
			sel := pm.Spec.Selector.MatchExpressions
			if pm.Spec.JobLabel != "app.kubernetes.io/name" || len(sel) != 1 || sel[0].Key != "app.kubernetes.io/name" ||
				sel[0].Operator != "In" || !slices.Equal(sorted(sel[0].Values), programs) {
				t.Errorf("PodMonitor/%s selects %+v with job from %q; want the pods of %v, job from app.kubernetes.io/name", r.GetName(), sel, pm.Spec.JobLabel, programs)
			}
			if len(pm.Spec.Endpoints) != 1 || pm.Spec.Endpoints[0].Port != "http" || pm.Spec.Endpoints[0].Path != "/metrics" {
				t.Errorf("PodMonitor/%s endpoints %+v, want port http, /metrics", r.GetName(), pm.Spec.Endpoints)
			}
		case "PrometheusRule":
			spec, _ := m["spec"].(map[string]any)
			groups, _ = spec["groups"].([]any)
		case "NetworkPolicy":
			var np struct {
				Spec struct {
					PodSelector struct {
						MatchLabels map[string]string `json:"matchLabels"`
					} `json:"podSelector"`
					Ingress []struct {
						From []struct {
							NamespaceSelector *struct {
								MatchLabels map[string]string `json:"matchLabels"`
							} `json:"namespaceSelector"`
						} `json:"from"`
					} `json:"ingress"`
				} `json:"spec"`
			}
			remarshal(t, m, &np)
			if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] == "edge" {
				break // the edge is not scraped: only the programs are
			}
			monitoring := false
			for _, in := range np.Spec.Ingress {
				for _, from := range in.From {
					monitoring = monitoring || from.NamespaceSelector != nil && from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "monitoring"
				}
			}
			if !monitoring {
				t.Errorf("NetworkPolicy/%s does not let Prometheus (namespace monitoring) scrape the programs", r.GetName())
			}
		}
	}
	if monitors != 1 {
		t.Errorf("%d PodMonitors, want 1", monitors)
	}
	if got := sorted(mapKeys(scraped)); !slices.Equal(got, programs) {
		t.Errorf("programs with an http port %v, want %v", got, programs)
	}

	var want []any
	for _, f := range globbed(t, rulesGlob) {
		var rf map[string]any
		readYAML(t, f, &rf)
		g, _ := rf["groups"].([]any)
		want = append(want, g...)
	}
	if !reflect.DeepEqual(normalize(t, groups), normalize(t, want)) {
		t.Errorf("%s differs from %s: run go test ./deploy -run TestKubernetesMonitoring -update", prometheusRule, rulesGlob)
	}
}

func mapKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// remarshal converts v into out through JSON.
func remarshal(t *testing.T, v, out any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// normalize makes values decoded by different YAML and JSON paths
// comparable.
func normalize(t *testing.T, v any) any {
	t.Helper()
	var out any
	remarshal(t, v, &out)
	return out
}
