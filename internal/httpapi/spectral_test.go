package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spectralDir holds the pinned Spectral CLI: package.json and
// package-lock.json, and .spectral.yaml, the ruleset.
var spectralDir = filepath.Join("..", "..", "tools", "spectral")

const spectralPackage = "@stoplight/spectral-cli"

// The OpenAPI document passes Spectral's spectral:oas ruleset with no
// finding: no error and no warning (every operation has an operationId, a
// tag and a description, generated clients get real method names). It runs
// the version tools/spectral pins, installing it with npm ci first when
// node_modules lacks it. Node.js and npm are needed: without them the test
// fails rather than skips.
func TestOpenAPIPassesSpectral(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs(spectralDir)
	if err != nil {
		t.Fatal(err)
	}
	spectral := installedSpectral(t, dir)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	doc, err := filepath.Abs("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, spectral, "lint", doc,
		"--ruleset", filepath.Join(dir, ".spectral.yaml"),
		"--fail-severity=warn", "--format=json", "--quiet")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	var findings []struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Severity int    `json:"severity"`
		Path     []any  `json:"path"`
		Range    struct {
			Start struct {
				Line      int `json:"line"`
				Character int `json:"character"`
			} `json:"start"`
		} `json:"range"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &findings); err != nil {
		t.Fatalf("%s lint did not answer with its findings (%v; exit: %v)\nstdout:\n%s\nstderr:\n%s",
			spectral, err, runErr, stdout.Bytes(), stderr.Bytes())
	}
	severity := []string{"error", "warning", "info", "hint"}
	for _, f := range findings {
		level := fmt.Sprint(f.Severity)
		if f.Severity >= 0 && f.Severity < len(severity) {
			level = severity[f.Severity]
		}
		path := make([]string, len(f.Path))
		for i, p := range f.Path {
			path[i] = fmt.Sprint(p)
		}
		t.Errorf("openapi.json:%d:%d: %s %s: %s (at %s)", f.Range.Start.Line+1, f.Range.Start.Character+1,
			level, f.Code, f.Message, strings.Join(path, "."))
	}
	if runErr != nil && len(findings) == 0 {
		t.Fatalf("%s lint failed with no finding: %v\nstderr:\n%s", spectral, runErr, stderr.Bytes())
	}
	if len(findings) > 0 {
		t.Logf("to see them again: %s lint internal/httpapi/openapi.json --ruleset tools/spectral/.spectral.yaml",
			filepath.Join("tools", "spectral", "node_modules", ".bin", "spectral"))
	}
}

// installedSpectral returns the path of the spectral command in dir's
// node_modules, after running npm ci there when it is missing or is not
// the version package.json pins.
func installedSpectral(t *testing.T, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not on PATH: the OpenAPI lint runs Spectral (tools/spectral), which needs Node.js "+
			"(18.18+ or 20.17+) and npm; install them (Debian: apt-get install nodejs npm) and run the tests again (%v)", err)
	}
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	readJSON(t, filepath.Join(dir, "package.json"), &pkg)
	want := pkg.DevDependencies[spectralPackage]
	if want == "" {
		t.Fatalf("%s does not pin %s in devDependencies", filepath.Join(dir, "package.json"), spectralPackage)
	}
	bin := filepath.Join(dir, "node_modules", ".bin", "spectral")
	if got := installedVersion(dir); got == want && executable(bin) {
		return bin
	}

	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is not on PATH: it installs the pinned Spectral (npm ci in tools/spectral) for the OpenAPI lint; "+
			"install it (Debian: apt-get install npm) and run the tests again (%v)", err)
	}
	t.Logf("installing %s %s: npm ci in %s", spectralPackage, want, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// --ignore-scripts: Spectral needs no install script (one dependency's
	// is usage telemetry).
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s (to install the pinned Spectral) failed: %v\n%s", dir, err, out)
	}
	if got := installedVersion(dir); got != want || !executable(bin) {
		t.Fatalf("after npm ci in %s, node_modules holds %s %q and %s, not %s: package.json and package-lock.json disagree?",
			dir, spectralPackage, got, bin, want)
	}
	return bin
}

// installedVersion is the version of the Spectral CLI in dir's
// node_modules, "" when there is none.
func installedVersion(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", filepath.FromSlash(spectralPackage), "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
