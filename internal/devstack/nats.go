package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is a private NATS server with JetStream, either the installed
// nats-server binary (Debian's 2.9) or, embedded, the current release.
type NATS struct {
	Port     int
	Embedded bool
	dir      string
	proc     *process
	srv      *server.Server
}

// URL returns the server's URL.
func (n *NATS) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// Version returns the server's version, or "binary" for the installed one.
func (n *NATS) Version() string {
	if n.Embedded {
		return server.VERSION
	}
	return "installed nats-server"
}

// Start starts the server; JetStream data in its directory survives a
// Stop and Start.
func (n *NATS) Start(ctx context.Context) error {
	store := filepath.Join(n.dir, "jetstream")
	if n.Embedded {
		srv, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: n.Port, JetStream: true, StoreDir: store, NoSigs: true,
		})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			return fmt.Errorf("embedded nats not ready")
		}
		n.srv = srv
		return nil
	}
	bin, err := lookPath("nats-server")
	if err != nil {
		return err
	}
	n.proc, err = startProcess("nats", bin, []string{
		"-a", "127.0.0.1", "-p", strconv.Itoa(n.Port), "-js", "-sd", store,
	}, nil, filepath.Join(n.dir, "nats.log"), nil, syscall.SIGTERM)
	if err != nil {
		return err
	}
	if err := waitPort(ctx, n.Port, 10*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(filepath.Join(n.dir, "nats.log"), 2000))
	}
	return nil
}

// Stop stops the server.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
		return
	}
	n.proc.stop(syscall.SIGTERM, 5*time.Second)
}

// RemoveStore deletes JetStream's data, as a server that lost its disk
// would: streams and consumers are gone when it starts again. The server
// must be stopped.
func (n *NATS) RemoveStore() error {
	return os.RemoveAll(filepath.Join(n.dir, "jetstream"))
}
