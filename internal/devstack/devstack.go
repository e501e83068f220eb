// Package devstack runs the service's whole topology on one machine from its
// installed binaries, in a private directory on private ports: a Postgres
// leader and a streaming replica, Redis, NATS with JetStream, and the
// writer, projector and reader. Tests use it to get real servers they may
// stop, kill and restart; `make run` uses it to start the service locally.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 for a server to listen on, that
// no other caller gets while this process lives: ports are picked at random
// below the kernel's ephemeral range (so no outgoing connection takes one
// before the server binds it), never twice in this process, and reserved
// across processes with a lock file that dies with its holder. Asking the
// kernel for port 0 and closing it is not enough: it may hand the same port
// to the next caller, and two servers would race for it.
func FreePort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if err := os.MkdirAll(portLockDir, 0o777); err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	for range 1000 {
		port := portMin + rand.IntN(portMax-portMin)
		if ports.held[port] != nil || !PortFree(port) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another process holds it
			continue
		}
		ports.held[port] = f // kept open: the lock lasts as long as we do
		return port, nil
	}
	return 0, errors.New("free port: none found")
}

// Ports are taken from [portMin, portMax): below Linux's default ephemeral
// range (32768-60999).
const (
	portMin     = 20000
	portMax     = 32000
	portLockDir = "/tmp/sprockets-devstack-ports"
)

var ports = struct {
	mu   sync.Mutex
	held map[int]*os.File
}{held: make(map[int]*os.File)}

// waitPort waits until something accepts connections on port.
func waitPort(ctx context.Context, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s", addr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lookPath finds a server binary in PATH or in the usual Debian places.
func lookPath(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range append(dirs, "/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin") {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install it (make deps) or put it on PATH", name)
}

// run runs a command to completion and returns its combined output in the
// error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return nil
}

// tail returns the last n bytes of the file at path, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, 2)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(b[:k])
}

// PortFree reports whether nothing listens on port on 127.0.0.1.
func PortFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
