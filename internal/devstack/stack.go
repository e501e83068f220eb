package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sprockets-api/sprockets/internal/publicid"
)

// Config says what to run.
type Config struct {
	// Dir holds data and logs. Empty means a new temporary directory that
	// Close removes.
	Dir string
	// BinDir holds the writer, projector and reader binaries.
	BinDir string
	// Ports of each server; zero picks a free one.
	Ports Ports
	// Replica starts a streaming replica of the leader.
	Replica bool
	// EmbeddedNATS runs the current NATS release in-process instead of the
	// installed nats-server.
	EmbeddedNATS bool
	// Durable keeps Postgres's fsync on.
	Durable bool
	// Readers is how many readers to run (at least one).
	Readers int
	// Edge runs HAProxy in front of the writer and the readers.
	Edge bool
	// Env is added to every program's environment (tuning for tests).
	Env []string
}

// Ports of a stack's servers. When Reader is set, readers beyond the first
// take the free ports after it; otherwise every port comes from FreePort.
type Ports struct {
	Leader, Replica, Redis, NATS, Writer, Projector, Reader, Edge, EdgeHealth int
}

// Stack is a running topology.
type Stack struct {
	Dir     string
	Leader  *Postgres
	Replica *Postgres // nil without Config.Replica
	Redis   *Redis
	NATS    *NATS

	Writer, Projector, Reader *Program
	// Readers holds every reader, Reader first.
	Readers []*Program
	// Edge is nil without Config.Edge.
	Edge *Edge

	cfg     Config
	tempDir bool
	// tokenKey seals consistency tokens, and idKey makes the /v1 ids: one
	// of each per stack, kept in Dir so that tokens and ids stay good
	// across restarts of a local run.
	tokenKey, idKey string
	ids             *publicid.Codec
}

// Database is the name of the service's database.
const Database = "sprockets"

// Start starts the servers (not the programs; see StartPrograms).
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	s := &Stack{cfg: cfg, Dir: cfg.Dir}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "sprockets-stack-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	}
	if s.Dir, err = filepath.Abs(s.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	// Postgres runs as another user when we are root: it must reach its
	// directories.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.tokenKey, err = secretKey(filepath.Join(s.Dir, "consistency.key")); err != nil {
		return nil, err
	}
	if s.idKey, err = secretKey(filepath.Join(s.Dir, "id.key")); err != nil {
		return nil, err
	}
	if s.ids, err = publicid.New(s.idKey); err != nil {
		return nil, err
	}
	p := cfg.Ports
	for _, port := range []*int{&p.Leader, &p.Replica, &p.Redis, &p.NATS, &p.Writer, &p.Projector, &p.Reader, &p.Edge, &p.EdgeHealth} {
		if *port == 0 {
			if *port, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	s.cfg.Ports = p

	if s.Leader, err = newLeader(ctx, filepath.Join(s.Dir, "pg-leader"), p.Leader, cfg.Durable); err != nil {
		return nil, fmt.Errorf("postgres leader: %w", err)
	}
	if err := s.Leader.Start(ctx); err != nil {
		return nil, fmt.Errorf("postgres leader: %w", err)
	}
	if err := s.Leader.CreateDatabase(ctx, Database); err != nil {
		return nil, err
	}
	if cfg.Replica {
		if s.Replica, err = newReplica(ctx, s.Leader, filepath.Join(s.Dir, "pg-replica"), p.Replica); err != nil {
			return nil, fmt.Errorf("postgres replica: %w", err)
		}
		if err := s.Replica.Start(ctx); err != nil {
			return nil, fmt.Errorf("postgres replica: %w", err)
		}
	}
	s.Redis = &Redis{Port: p.Redis, dir: filepath.Join(s.Dir, "redis")}
	if err := os.MkdirAll(s.Redis.dir, 0o755); err != nil {
		return nil, err
	}
	if err := s.Redis.Start(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	s.NATS = &NATS{Port: p.NATS, Embedded: cfg.EmbeddedNATS, dir: filepath.Join(s.Dir, "nats")}
	if err := os.MkdirAll(s.NATS.dir, 0o755); err != nil {
		return nil, err
	}
	if err := s.NATS.Start(ctx); err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	s.Writer = s.program("writer", p.Writer)
	s.Projector = s.program("projector", p.Projector)
	s.Reader = s.program("reader", p.Reader)
	s.Readers = []*Program{s.Reader}
	for port := p.Reader + 1; len(s.Readers) < cfg.Readers; port++ {
		if cfg.Ports.Reader == 0 {
			// Ports were not chosen: take another from the allocator.
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		} else if port == p.Projector || port == p.Writer || !PortFree(port) {
			continue
		}
		s.Readers = append(s.Readers, s.NewProgram("reader", port))
	}
	if cfg.Edge {
		s.Edge = &Edge{Port: p.Edge, HealthPort: p.EdgeHealth, dir: filepath.Join(s.Dir, "edge")}
	}
	return s, nil
}

// DatabaseURL is the leader's URL for the service's database.
func (s *Stack) DatabaseURL() string { return s.Leader.URL(Database) }

// ReplicaURL is the replica's URL, "" without one.
func (s *Stack) ReplicaURL() string {
	if s.Replica == nil {
		return ""
	}
	return s.Replica.URL(Database)
}

// Env returns the environment every program of the stack shares.
func (s *Stack) Env() []string {
	p := s.cfg.Ports
	return append([]string{
		"DATABASE_URL=" + s.DatabaseURL(),
		"REPLICA_URLS=" + s.ReplicaURL(),
		"REDIS_URL=" + s.Redis.URL(),
		"NATS_URL=" + s.NATS.URL(),
		"WRITER_ADDR=127.0.0.1:" + strconv.Itoa(p.Writer),
		"PROJECTOR_ADDR=127.0.0.1:" + strconv.Itoa(p.Projector),
		"READER_ADDR=127.0.0.1:" + strconv.Itoa(p.Reader),
		"CONSISTENCY_KEY=" + s.tokenKey,
		"ID_KEY=" + s.idKey,
	}, s.cfg.Env...)
}

// IDs returns the codec of the stack's /v1 ids, for tests to name
// resources by their numbers.
func (s *Stack) IDs() *publicid.Codec { return s.ids }

// secretKey returns the key in the file at path, or a new random one it
// writes there.
func secretKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return string(b), nil
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	key := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		return "", fmt.Errorf("key: %w", err)
	}
	return key, nil
}

func (s *Stack) program(name string, port int) *Program {
	dir := filepath.Join(s.Dir, "logs")
	_ = os.MkdirAll(dir, 0o755)
	return &Program{Name: name, Port: port, bin: filepath.Join(s.cfg.BinDir, name), env: s.Env(), dir: dir}
}

// NewProgram returns another instance of a program (a second reader, say)
// on its own port, with extra settings after the stack's.
func (s *Stack) NewProgram(name string, port int, env ...string) *Program {
	p := s.program(name, port)
	p.Name = name + "-" + strconv.Itoa(port)
	p.bin = filepath.Join(s.cfg.BinDir, name)
	addr := strings.ToUpper(name) + "_ADDR=127.0.0.1:" + strconv.Itoa(port)
	p.env = append(append(p.env, addr), env...)
	return p
}

// Migrate applies the migrations and, with seedDir set, loads the seeds.
func (s *Stack) Migrate(ctx context.Context, seedDir string) error {
	if _, err := s.Writer.Exec(ctx, "migrate"); err != nil {
		return err
	}
	if seedDir == "" {
		return nil
	}
	_, err := s.Writer.Exec(ctx, "seed", seedDir)
	return err
}

// StartPrograms starts the writer, the projector, the readers and, when
// configured, the edge.
func (s *Stack) StartPrograms(ctx context.Context) error {
	for _, p := range append([]*Program{s.Writer, s.Projector}, s.Readers...) {
		if err := p.Start(ctx); err != nil {
			return err
		}
	}
	if s.Edge == nil {
		return nil
	}
	readers := make([]string, len(s.Readers))
	for i, r := range s.Readers {
		readers[i] = "127.0.0.1:" + strconv.Itoa(r.Port)
	}
	return s.Edge.Start(ctx, "127.0.0.1:"+strconv.Itoa(s.Writer.Port), readers)
}

// Close stops everything the stack started (see Stop) and removes a
// temporary directory.
func (s *Stack) Close() {
	s.Stop()
	if s.tempDir {
		os.RemoveAll(s.Dir)
	}
}

// Stop stops everything the stack started, the edge and programs first,
// and keeps its directory: their logs can still be read.
func (s *Stack) Stop() {
	if s.Edge != nil {
		s.Edge.Stop()
	}
	for _, p := range append(append([]*Program{}, s.Readers...), s.Projector, s.Writer) {
		if p != nil {
			p.Stop()
		}
	}
	if s.NATS != nil {
		s.NATS.Stop()
	}
	if s.Redis != nil && s.Redis.proc != nil {
		s.Redis.Stop()
	}
	for _, pg := range []*Postgres{s.Replica, s.Leader} {
		if pg != nil {
			pg.Stop()
		}
	}
}

// CreateToken creates a token of org with scopes (e.g. "read,write") and
// returns its secret. extra are further flags of `writer token create`.
func (s *Stack) CreateToken(ctx context.Context, org, scopes string, extra ...string) (string, error) {
	out, err := s.Writer.Exec(ctx, append([]string{"token", "create", "--org", org, "--scopes", scopes}, extra...)...)
	if err != nil {
		return "", err
	}
	secret, _, _ := strings.Cut(out, "\n")
	return strings.TrimSpace(secret), nil
}
