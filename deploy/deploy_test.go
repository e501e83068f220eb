// Package deploy holds what runs the service outside this machine: the
// image, docker-compose's edge proxy and Postgres replica bootstrap, and the
// Kubernetes manifests. Its tests check them without Docker or a cluster,
// and check the Makefile's first step on a fresh machine.
package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats.go"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// root is the repository root, the compose project's directory.
const root = ".."

// composeSecrets are the settings docker-compose.yml refuses to start
// without (make env-secrets writes them to .env).
var composeSecrets = []string{"CONSISTENCY_KEY", "ID_KEY", "POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "REDIS_PASSWORD", "NATS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}

// secretsEnv sets every compose secret to a value of its own.
// secret is the value secretsEnv gives name.
func secret(name string) string {
	for _, kv := range secretsEnv() {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	panic("no secret " + name)
}

func secretsEnv() []string {
	var env []string
	for _, name := range composeSecrets {
		env = append(env, name+"="+strings.ToLower(name)+"-"+strings.Repeat("k", 32))
	}
	return env
}

func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("sprockets"), cli.WithInterpolation(true),
		cli.WithEnv(append(secretsEnv(), env...)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	want := []string{"edge", "migrate", "nats", "postgres-leader", "postgres-replica", "projector", "reader", "redis", "writer"}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	dependsOn := map[string]map[string]string{
		"postgres-replica": {"postgres-leader": types.ServiceConditionHealthy},
		"migrate":          {"postgres-leader": types.ServiceConditionHealthy},
		"writer":           {"migrate": types.ServiceConditionCompletedSuccessfully, "redis": types.ServiceConditionHealthy, "nats": types.ServiceConditionHealthy},
		"projector":        {"migrate": types.ServiceConditionCompletedSuccessfully, "redis": types.ServiceConditionHealthy, "nats": types.ServiceConditionHealthy},
		"reader":           {"migrate": types.ServiceConditionCompletedSuccessfully, "redis": types.ServiceConditionHealthy, "postgres-replica": types.ServiceConditionHealthy},
		"edge":             {"writer": types.ServiceConditionHealthy, "reader": types.ServiceConditionHealthy},
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+(\.[0-9]+)+(-[a-z0-9]+)?$`)
	for _, s := range p.Services {
		t.Run(s.Name, func(t *testing.T) {
			oneShot := s.Name == "migrate"
			if !oneShot && (s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Disable) {
				t.Errorf("no healthcheck")
			}
			if !oneShot && s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("restart %q", s.Restart)
			}
			if s.Build == nil && !pinned.MatchString(s.Image) {
				t.Errorf("image %q is not pinned to a version", s.Image)
			}
			got := map[string]string{}
			for name, d := range s.DependsOn {
				got[name] = d.Condition
			}
			if w := dependsOn[s.Name]; len(w) > 0 || len(got) > 0 {
				if !mapsEqual(got, w) {
					t.Errorf("depends_on %v, want %v", got, w)
				}
			}
			for _, v := range s.Volumes {
				if v.Type == types.VolumeTypeBind {
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("mounts %s, which does not exist", v.Source)
					}
				} else if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("volume %q is not a named volume of the project", v.Source)
				}
			}
			if s.Build != nil {
				if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
					t.Errorf("builds from %s, which does not exist", s.Build.Dockerfile)
				}
			}
		})
	}
	reader := p.Services["reader"]
	if reader.ContainerName != "" || len(reader.Ports) > 0 {
		t.Errorf("the reader has a container name %q or host ports %v: it could not be scaled", reader.ContainerName, reader.Ports)
	}
	edge := p.Services["edge"]
	if len(edge.Ports) != 1 || edge.Ports[0].Published != "8000" || edge.Ports[0].Target != 8000 {
		t.Errorf("the edge publishes %+v, want 8000", edge.Ports)
	}
	// The programs believe X-Forwarded-For from the edge alone.
	var edgeAddr string
	if n := edge.Networks["default"]; n != nil {
		edgeAddr = n.Ipv4Address
	}
	for _, name := range []string{"writer", "reader"} {
		if v := p.Services[name].Environment["TRUSTED_PROXIES"]; edgeAddr == "" || v == nil || *v != edgeAddr {
			t.Errorf("%s trusts %v as proxies, want only the edge's address %q", name, v, edgeAddr)
		}
	}
	for _, name := range []string{"writer", "projector", "migrate"} {
		if s := p.Services[name]; s.ContainerName != "" || len(s.Ports) > 0 {
			t.Errorf("%s publishes %v: only the edge should", name, s.Ports)
		}
	}
}

// Without its secret the compose file refuses to load, rather than start
// with a key anyone can read here.
func TestComposeNeedsItsSecrets(t *testing.T) {
	for _, name := range composeSecrets {
		opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
			cli.WithWorkingDirectory(root), cli.WithName("sprockets"), cli.WithInterpolation(true),
			cli.WithEnv(append(secretsEnv(), name+"=")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("docker-compose.yml without %s: %v, want an error naming it", name, err)
		}
	}
	// Each secret reaches what uses it, and no password is written into
	// the file itself.
	p := loadCompose(t)
	env := func(service, name string) string {
		t.Helper()
		s, err := p.GetService(service)
		if err != nil {
			t.Fatal(err)
		}
		v := s.Environment[name]
		if v == nil {
			t.Fatalf("%s has no %s", service, name)
		}
		return *v
	}
	for _, program := range []string{"writer", "projector", "reader"} {
		for name, want := range map[string]string{
			"DATABASE_URL": secret("POSTGRES_PASSWORD"),
			"REDIS_URL":    "redis://:" + secret("REDIS_PASSWORD") + "@redis:6379/0",
			"NATS_URL":     "nats://sprockets:" + secret("NATS_PASSWORD") + "@nats:4222",
			"ID_KEY":       secret("ID_KEY"),
		} {
			if got := env(program, name); !strings.Contains(got, want) {
				t.Errorf("%s's %s is %q, want it to hold %q", program, name, got, want)
			}
		}
	}
	if got := env("redis", "REDIS_PASSWORD"); got != secret("REDIS_PASSWORD") {
		t.Errorf("redis's password is %q", got)
	}
	if got := env("nats", "NATS_PASSWORD"); got != secret("NATS_PASSWORD") {
		t.Errorf("nats's password is %q", got)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?i)[a-z_]*PASSWORD[A-Z_]*:-[^}]+}|local-only`).Find(raw); m != nil {
		t.Errorf("docker-compose.yml falls back to a known password: %s", m)
	}
}

// The NATS of docker-compose.yml takes no client without its password.
func TestNATSConfigNeedsThePassword(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	port := freePort(t)
	cmd := exec.Command(bin, "-c", filepath.Join("nats", "nats.conf"), "-js", "-sd", t.TempDir(), "-a", "127.0.0.1",
		"-p", strconv.Itoa(port), "-m", strconv.Itoa(freePort(t)))
	password := composeSecretsFromMake(t)["NATS_PASSWORD"]
	cmd.Env = append(os.Environ(), "NATS_PASSWORD="+password)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("nats-server is needed (make deps): %v", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var nc *nats.Conn
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if nc, err = nats.Connect(url, nats.UserInfo("sprockets", password)); err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("connect with the password: %v\n%s", err, out.String())
		}
	}
	nc.Close()
	for _, opt := range []nats.Option{nats.UserInfo("sprockets", "wrong"), nats.UserInfo("", "")} {
		if nc, err := nats.Connect(url, opt); err == nil {
			nc.Close()
			t.Error("nats.conf let in a client without the password")
		}
	}
}

// composeSecretsFromMake runs make env-secrets in a directory holding a
// copy of .env.example as .env, as a user who copied it would, and returns
// what it wrote. Each secret is there, new, and starts with a letter (a
// value that starts with a digit may not parse as a NATS variable); a
// second run writes nothing.
func composeSecretsFromMake(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	example, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".env"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	makefile, _ := filepath.Abs(filepath.Join(root, "Makefile"))
	run := func() string {
		cmd := exec.Command("make", "-s", "-f", makefile, "env-secrets")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make env-secrets: %v\n%s", err, out)
		}
		return string(out)
	}
	run()
	if again := run(); again != "" {
		t.Errorf("a second make env-secrets wrote again: %s", again)
	}
	env, err := os.ReadFile(filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if name, value, ok := strings.Cut(line, "="); ok && slices.Contains(composeSecrets, name) {
			if _, dup := got[name]; dup {
				t.Errorf("%s is in .env twice", name)
			}
			got[name] = value
		}
	}
	for _, name := range composeSecrets {
		if v := got[name]; len(v) < 32 || v[0] < 'a' || v[0] > 'z' {
			t.Errorf("make env-secrets wrote %s=%q", name, v)
		}
	}
	return got
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Every setting the compose file takes from the environment has its default
// in .env.example.
func TestComposeSettingsAreDocumented(t *testing.T) {
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Z_]+):[-?]`).FindAllStringSubmatch(string(compose), -1) {
		if seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).Match(example) {
			t.Errorf("%s is read by docker-compose.yml but not in .env.example", m[1])
		}
	}
	if len(seen) < 5 {
		t.Errorf("only %d settings found in docker-compose.yml", len(seen))
	}
}

func TestHAProxyConfigs(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is needed to check the edge configurations: run make deps")
	}
	for _, cfg := range []string{"haproxy/haproxy.cfg", "k8s/haproxy.cfg"} {
		out, err := exec.Command(haproxy, "-c", "-f", cfg).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Configuration file is valid")) {
			t.Errorf("haproxy -c -f %s: %v\n%s", cfg, err, out)
		}
		// The client must not choose its address: "option forwardfor"
		// appends to the X-Forwarded-For it sent.
		b, _ := os.ReadFile(cfg)
		if bytes.Contains(b, []byte("option forwardfor")) || !bytes.Contains(b, []byte("http-request set-header X-Forwarded-For")) {
			t.Errorf("%s does not replace X-Forwarded-For", cfg)
		}
	}
}

func TestScripts(t *testing.T) {
	scripts, _ := filepath.Glob("postgres/*.sh")
	if len(scripts) != 2 {
		t.Fatalf("scripts %v", scripts)
	}
	for _, s := range scripts {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if n := strings.Count(df, "\nFROM "); n < 2 {
		t.Errorf("%d stages; the image should be built in one and shipped in another", n)
	}
	if !strings.Contains(df, "distroless/static") || !strings.Contains(df, "USER nonroot") || !strings.Contains(df, "CGO_ENABLED=0") {
		t.Errorf("the final image should be static, distroless and non-root")
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(\S+)`).FindAllStringSubmatch(df, -1) {
		if strings.Contains(m[0], "--from=") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
			t.Errorf("COPY %s: %v", m[1], err)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), "k8s")
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	kinds := map[string][]string{}
	for _, r := range resMap.Resources() {
		kinds[r.GetKind()] = append(kinds[r.GetKind()], r.GetName())
		node := &r.RNode // a kustomize Resource is a YAML node
		switch r.GetKind() {
		case "Deployment", "Job":
			checkWorkload(t, r.GetKind()+"/"+r.GetName(), node, r.GetKind() == "Deployment")
			if name := r.GetName(); name == "writer" || name == "projector" {
				// NATS takes no client without the password (README).
				url, _ := node.Pipe(yaml.Lookup("spec", "template", "spec", "containers", "[name="+name+"]", "env", "[name=NATS_URL]", "value"))
				if url == nil || !strings.Contains(yaml.GetValue(url), ":$(NATS_PASSWORD)@") {
					t.Errorf("%s connects to NATS without the password: %v", name, url)
				}
			}
		case "NetworkPolicy":
			// The edge believes X-Forwarded-For from private addresses:
			// only the Ingress controller may reach its HTTP port.
			if r.GetName() == "edge-from-ingress" {
				checkEdgePolicy(t, node)
			}
		case "HorizontalPodAutoscaler":
			if target, _ := node.Pipe(yaml.Lookup("spec", "scaleTargetRef", "name")); target == nil || yaml.GetValue(target) != "reader" {
				t.Errorf("the autoscaler does not scale the reader")
			}
		case "Secret":
			t.Errorf("Secret/%s is in the manifests; secrets come from the operators", r.GetName())
		}
	}
	for kind, want := range map[string][]string{
		"Deployment":              {"edge", "projector", "reader", "writer"},
		"Job":                     {"migrate"},
		"HorizontalPodAutoscaler": {"reader"},
		"NetworkPolicy":           {"api-from-edge", "edge-from-ingress"},
	} {
		if !slices.Equal(sorted(kinds[kind]), want) {
			t.Errorf("%s: %v, want %v", kind, kinds[kind], want)
		}
	}
}

// checkEdgePolicy fails the test unless the policy selects the edge's
// pods and lets its HTTP port be reached from one namespace only (the
// Ingress controller's), and nothing else but its health port.
func checkEdgePolicy(t *testing.T, node *yaml.RNode) {
	t.Helper()
	if sel, _ := node.Pipe(yaml.Lookup("spec", "podSelector", "matchLabels", "app.kubernetes.io/name")); sel == nil || yaml.GetValue(sel) != "edge" {
		t.Errorf("edge-from-ingress does not select the edge")
	}
	rules, _ := node.Pipe(yaml.Lookup("spec", "ingress"))
	if rules == nil {
		t.Fatal("edge-from-ingress has no ingress rules")
	}
	elems, _ := rules.Elements()
	for _, rule := range elems {
		ports, _ := rule.Pipe(yaml.Lookup("ports"))
		var names []string
		if ports != nil {
			ps, _ := ports.Elements()
			for _, p := range ps {
				names = append(names, yaml.GetValue(p.Field("port").Value))
			}
		}
		from, _ := rule.Pipe(yaml.Lookup("from"))
		switch {
		case slices.Equal(names, []string{"health"}):
		case slices.Equal(names, []string{"http"}) && from != nil:
			sources, _ := from.Elements()
			if len(sources) != 1 || sources[0].Field("namespaceSelector") == nil || sources[0].Field("podSelector") != nil || sources[0].Field("ipBlock") != nil {
				t.Errorf("the edge's HTTP port is open to more than one namespace: %s", from.MustString())
			}
		default:
			t.Errorf("edge-from-ingress opens ports %v to %v", names, from)
		}
	}
}

// checkWorkload fails the test unless every container asks for CPU and
// memory and, for long-running workloads, has readiness and liveness probes.
func checkWorkload(t *testing.T, name string, node *yaml.RNode, longRunning bool) {
	t.Helper()
	containers, err := node.Pipe(yaml.Lookup("spec", "template", "spec", "containers"))
	if err != nil || containers == nil {
		t.Fatalf("%s: no containers (%v)", name, err)
	}
	elems, _ := containers.Elements()
	for _, c := range elems {
		cname := yaml.GetValue(c.Field("name").Value)
		for _, path := range [][]string{{"resources", "requests", "cpu"}, {"resources", "requests", "memory"}} {
			if v, _ := c.Pipe(yaml.Lookup(path...)); v == nil {
				t.Errorf("%s container %s: no %s", name, cname, strings.Join(path, "."))
			}
		}
		if !longRunning {
			continue
		}
		for _, probe := range []string{"readinessProbe", "livenessProbe"} {
			if c.Field(probe) == nil {
				t.Errorf("%s container %s: no %s", name, cname, probe)
			}
		}
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// make help lists every target of the Makefile, one line each.
func TestMakeHelpListsEveryTarget(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-s", "-C", root, "help").Output()
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			listed[f[0]] = true
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(makefile), -1) {
		if !listed[m[1]] {
			t.Errorf("make help does not list %s", m[1])
		}
	}
	for _, want := range []string{"run", "test", "bench", "up", "down", "logs", "scale", "deps", "local-build", "local-run", "local-load-data"} {
		if !listed[want] {
			t.Errorf("no %s target", want)
		}
	}
}
