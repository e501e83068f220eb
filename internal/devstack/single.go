package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// StartRedis starts a private Redis in a new directory under dir.
func StartRedis(ctx context.Context, dir string) (*Redis, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Port: port, dir: filepath.Join(dir, "redis")}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	return r, r.Start(ctx)
}

// StartPostgres starts a private Postgres leader with the service's
// database in a new directory under dir, and with replica set a streaming
// replica of it. Stop them with their Stop methods.
func StartPostgres(ctx context.Context, dir string, replica bool) (leader, standby *Postgres, err error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, nil, err
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return nil, nil, err
		}
	}
	if leader, err = newLeader(ctx, filepath.Join(dir, "pg-leader"), ports[0], false); err != nil {
		return nil, nil, err
	}
	if err := leader.Start(ctx); err != nil {
		return nil, nil, err
	}
	if err := leader.CreateDatabase(ctx, Database); err != nil {
		leader.Stop()
		return nil, nil, err
	}
	if !replica {
		return leader, nil, nil
	}
	if standby, err = newReplica(ctx, leader, filepath.Join(dir, "pg-replica"), ports[1]); err == nil {
		err = standby.Start(ctx)
	}
	if err != nil {
		leader.Stop()
		return nil, nil, fmt.Errorf("replica: %w", err)
	}
	return leader, standby, nil
}

// StartNATS starts a private NATS server with JetStream in a new directory
// under dir: the installed nats-server, or embedded the current release.
func StartNATS(ctx context.Context, dir string, embedded bool) (*NATS, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	n := &NATS{Port: port, Embedded: embedded, dir: filepath.Join(dir, "nats")}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	return n, n.Start(ctx)
}
