package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTools puts a dpkg, an id and an apt-get on PATH that stand for the
// machine: dpkg knows no package unless installed is true, id says uid,
// apt-get records its arguments in the returned file.
func fakeTools(t *testing.T, uid string, installed bool) (env []string, aptLog string) {
	t.Helper()
	dir := t.TempDir()
	aptLog = filepath.Join(dir, "apt-get.log")
	dpkg := "exit 1"
	if installed {
		dpkg = "exit 0"
	}
	for name, script := range map[string]string{
		"dpkg":    dpkg,
		"id":      "echo " + uid,
		"apt-get": `echo "$@" >> ` + aptLog,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH")), aptLog
}

func makeDeps(t *testing.T, env []string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", "-s", "-C", root, "deps", "DEB_PACKAGES=fake-a fake-b", "DEB_COMMANDS=")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// make run and make test are the two commands of a fresh machine: each
// installs what is missing first, as root, and says so; without root it
// installs nothing and says what to do.
func TestMakeInstallsWhatIsMissing(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is needed")
	}
	t.Run("as root", func(t *testing.T) {
		env, aptLog := fakeTools(t, "0", false)
		out, err := makeDeps(t, env)
		if err != nil {
			t.Fatalf("make deps as root: %v\n%s", err, out)
		}
		if !strings.Contains(out, "installing the missing Debian packages: fake-a fake-b") {
			t.Errorf("it does not say what it installs:\n%s", out)
		}
		calls, _ := os.ReadFile(aptLog)
		if !strings.Contains(string(calls), "install -y -qq fake-a fake-b") {
			t.Errorf("apt-get was called with %q", calls)
		}
	})
	t.Run("not root", func(t *testing.T) {
		env, aptLog := fakeTools(t, "1000", false)
		out, err := makeDeps(t, env)
		if err == nil {
			t.Fatalf("make deps without root succeeded with packages missing:\n%s", out)
		}
		if !strings.Contains(out, "fake-a fake-b") || !strings.Contains(out, "sudo make deps") {
			t.Errorf("the message does not say what is missing and what to do:\n%s", out)
		}
		if _, err := os.Stat(aptLog); err == nil {
			t.Error("apt-get was called without root")
		}
	})
	t.Run("nothing missing", func(t *testing.T) {
		env, aptLog := fakeTools(t, "1000", true)
		out, err := makeDeps(t, env)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("make deps with everything installed: %v %q", err, out)
		}
		if _, err := os.Stat(aptLog); err == nil {
			t.Error("apt-get was called with nothing missing")
		}
	})
	for _, target := range []string{"run", "test", "bench"} {
		t.Run("make "+target+" installs first", func(t *testing.T) {
			out, err := exec.Command("make", "-n", "-C", root, target).CombinedOutput()
			if err != nil {
				t.Fatalf("make -n %s: %v\n%s", target, err, out)
			}
			first := strings.SplitN(strings.TrimSpace(string(out)), "\n", 3)
			if !strings.Contains(strings.Join(first, "\n"), "dpkg -s") {
				t.Errorf("make %s does not start by installing what is missing:\n%s", target, out)
			}
		})
	}
}
