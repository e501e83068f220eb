package devstack

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq" // to create the database
)

// Postgres is one private Postgres server, a leader or a streaming replica,
// run as our child process.
type Postgres struct {
	Port    int
	DataDir string
	dir     string
	bin     string
	owner   *syscall.Credential // the OS user the server runs as when we are root
	proc    *process
}

// URL returns the connection URL of database db on this server.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// LogFile is the server's log, for tests that count what it logged.
func (p *Postgres) LogFile() string { return filepath.Join(p.dir, "postgres.log") }

// pgBin finds the newest installed Postgres server binaries: Debian keeps
// them, all together, outside PATH.
func pgBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("pg_basebackup"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("postgres server binaries not found (install postgresql: make deps)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// postgresOwner returns the OS user to run Postgres as: Postgres refuses to
// run as root, so as root we use the postgres account.
func postgresOwner() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres OS user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// tool runs a Postgres client or utility to completion, as the owner.
func (p *Postgres) tool(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.owner}
	cmd.Dir = p.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// mkdirOwned creates dir for the Postgres owner.
func mkdirOwned(dir string, owner *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if owner == nil {
		return nil
	}
	return os.Chown(dir, int(owner.Uid), int(owner.Gid))
}

// newLeader initializes a cluster in dir (unless it exists) listening on
// port. With durable false, fsync is off: fine for tests, never for data
// you keep.
func newLeader(ctx context.Context, dir string, port int, durable bool) (*Postgres, error) {
	bin, err := pgBin()
	if err != nil {
		return nil, err
	}
	owner, err := postgresOwner()
	if err != nil {
		return nil, err
	}
	p := &Postgres{Port: port, DataDir: filepath.Join(dir, "data"), dir: dir, bin: bin, owner: owner}
	if err := mkdirOwned(dir, owner); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p.DataDir, "PG_VERSION")); err == nil {
		return p, nil // initialized by an earlier run
	}
	if err := p.tool(ctx, "initdb", "-D", p.DataDir, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-instructions", "--nosync"); err != nil {
		return nil, err
	}
	conf := `
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '512MB'
hot_standby = on
max_connections = 300
shared_buffers = '128MB'
log_min_messages = warning
`
	if !durable {
		conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
	}
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.WriteString(conf); err != nil {
		return nil, err
	}
	return p, nil
}

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	// A server left by a run that was killed outright: stop it first.
	if pid := p.stalePID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGQUIT)
		time.Sleep(time.Second)
	}
	proc, err := startProcess("postgres", filepath.Join(p.bin, "postgres"),
		[]string{"-D", p.DataDir, "-p", strconv.Itoa(p.Port), "-k", p.dir},
		nil, p.LogFile(), p.owner, syscall.SIGINT)
	if err != nil {
		return err
	}
	p.proc = proc
	deadline := time.Now().Add(60 * time.Second)
	for {
		if proc.exited() {
			return fmt.Errorf("postgres exited at start:\n%s", tail(p.LogFile(), 2000))
		}
		if p.tool(ctx, "pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port)) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 60s:\n%s", tail(p.LogFile(), 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stalePID returns the pid in the data directory's postmaster.pid when that
// process is alive and not ours.
func (p *Postgres) stalePID() int {
	b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// Stop shuts the server down cleanly (fast shutdown).
func (p *Postgres) Stop() { p.proc.stop(syscall.SIGINT, 30*time.Second) }

// CreateDatabase creates db unless it exists.
func (p *Postgres) CreateDatabase(ctx context.Context, db string) error {
	conn, err := sql.Open("postgres", p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close()
	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
		return fmt.Errorf("check database %s: %w", db, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.ExecContext(ctx, `CREATE DATABASE "`+db+`"`); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

// newReplica makes a streaming replica of leader in dir (unless it exists)
// listening on port.
func newReplica(ctx context.Context, leader *Postgres, dir string, port int) (*Postgres, error) {
	r := &Postgres{Port: port, DataDir: filepath.Join(dir, "data"), dir: dir, bin: leader.bin, owner: leader.owner}
	if err := mkdirOwned(dir, r.owner); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(r.DataDir, "PG_VERSION")); err == nil {
		return r, nil
	}
	if err := r.tool(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(leader.Port), "-U", "postgres",
		"-D", r.DataDir, "-R", "-X", "stream", "--no-sync", "-c", "fast"); err != nil {
		return nil, err
	}
	return r, nil
}

// WaitReplay waits until the replica has replayed everything the leader has
// written so far.
func WaitReplay(ctx context.Context, leader, replica *Postgres, timeout time.Duration) error {
	l, err := sql.Open("postgres", leader.URL("postgres"))
	if err != nil {
		return err
	}
	defer l.Close()
	r, err := sql.Open("postgres", replica.URL("postgres"))
	if err != nil {
		return err
	}
	defer r.Close()
	var lsn string
	if err := l.QueryRowContext(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := r.QueryRowContext(ctx, `SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&ok)
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica did not replay %s within %s (last error: %v)", lsn, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
