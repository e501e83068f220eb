package devstack

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Program is one of the service's programs (writer, projector, reader) run
// from its built binary.
type Program struct {
	Name string
	Port int
	bin  string
	env  []string
	dir  string
	proc *process
}

// URL returns the program's base URL.
func (p *Program) URL() string { return "http://127.0.0.1:" + strconv.Itoa(p.Port) }

// LogFile is where the program's output goes.
func (p *Program) LogFile() string { return filepath.Join(p.dir, p.Name+".log") }

// Start starts the program and waits until /healthz answers.
func (p *Program) Start(ctx context.Context) error {
	proc, err := startProcess(p.Name, p.bin, nil, p.env, p.LogFile(), nil, syscall.SIGTERM)
	if err != nil {
		return err
	}
	p.proc = proc
	deadline := time.Now().Add(30 * time.Second)
	for {
		if proc.exited() {
			return fmt.Errorf("%s exited at start:\n%s", p.Name, tail(p.LogFile(), 3000))
		}
		resp, err := http.Get(p.URL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after 30s:\n%s", p.Name, tail(p.LogFile(), 3000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Stop asks the program to shut down gracefully.
func (p *Program) Stop() { p.proc.stop(syscall.SIGTERM, 15*time.Second) }

// Terminate sends SIGTERM and waits up to within for the program to end; it
// returns how long that took, and an error when the program did not end in
// time (it is then killed) or ended with another exit code than 0.
func (p *Program) Terminate(within time.Duration) (time.Duration, error) {
	start := time.Now()
	p.proc.stop(syscall.SIGTERM, within)
	took := time.Since(start)
	if took >= within {
		return took, fmt.Errorf("%s did not stop within %s of SIGTERM", p.Name, within)
	}
	if code := p.proc.exitCode(); code != 0 {
		return took, fmt.Errorf("%s exited with %d after SIGTERM", p.Name, code)
	}
	return took, nil
}

// Kill ends the program at once, as a crash would.
func (p *Program) Kill() { p.proc.kill() }

// Exec runs the program's binary with args (a subcommand) to completion and
// returns its standard output; the error carries standard error.
func (p *Program) Exec(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, p.bin, args...)
	cmd.Env = append(cmd.Environ(), p.env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", p.Name, strings.Join(args, " "), err, out.String(), tailString(errb.String(), 3000))
	}
	return out.String(), nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Build compiles the main packages pkgs of the module at root into outDir,
// with the race detector when race is set.
func Build(ctx context.Context, root, outDir string, race bool, pkgs ...string) error {
	args := []string{"build", "-o", outDir + "/"}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}
