package devstack

import (
	"context"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Redis is a private redis-server that keeps nothing on disk.
type Redis struct {
	Port int
	dir  string
	proc *process
}

// URL returns the server's URL.
func (r *Redis) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(r.Port) + "/0" }

// Start starts the server and waits until it accepts connections.
func (r *Redis) Start(ctx context.Context) error {
	bin, err := lookPath("redis-server")
	if err != nil {
		return err
	}
	r.proc, err = startProcess("redis", bin, []string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--maxmemory-policy", "noeviction",
	}, nil, filepath.Join(r.dir, "redis.log"), nil, syscall.SIGTERM)
	if err != nil {
		return err
	}
	return waitPort(ctx, r.Port, 10*time.Second)
}

// Stop stops the server; its data is gone.
func (r *Redis) Stop() { r.proc.stop(syscall.SIGTERM, 5*time.Second) }
