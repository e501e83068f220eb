package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// vars returns an environment of kv, with a consistency token key unless kv
// sets one (to "" for none).
func vars(kv ...string) func(string) string {
	m := map[string]string{"CONSISTENCY_KEY": key}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

const (
	db  = "postgres://app:secret@db:5432/sprockets"
	key = "secret-token-key-0123456789abcdef"
)

func TestDefaults(t *testing.T) {
	w, err := LoadWriter(vars("DATABASE_URL", db))
	if err != nil {
		t.Fatal(err)
	}
	if w.Addr != ":8081" || w.NATSURL != "nats://127.0.0.1:4222" || w.RelayBatch != 256 || w.StreamName != "SPROCKETS" {
		t.Errorf("writer defaults %+v", w)
	}
	r, err := LoadReader(vars("DATABASE_URL", db, "REPLICA_URLS", db+","+db))
	if err != nil {
		t.Fatal(err)
	}
	if r.Addr != ":8082" || len(r.ReplicaURLs) != 2 || r.ReplicaMaxLag != 5*time.Second {
		t.Errorf("reader defaults %+v", r)
	}
	p, err := LoadProjector(vars("DATABASE_URL", db))
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != ":8083" || p.ConsumerName != "projector" {
		t.Errorf("projector defaults %+v", p)
	}
}

// A bad or missing value stops the program with a message naming the
// variable.
func TestErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name string
		load func(func(string) string) error
		env  func(string) string
		want []string
	}{
		{"missing DATABASE_URL", writer, vars(), []string{"DATABASE_URL is required"}},
		{"empty DATABASE_URL", reader, vars("DATABASE_URL", ""), []string{"DATABASE_URL"}},
		{"wrong scheme", writer, vars("DATABASE_URL", "mysql://x/y"), []string{"DATABASE_URL", "postgres"}},
		{"not a number", writer, vars("DATABASE_URL", db, "RELAY_BATCH", "many"), []string{"RELAY_BATCH"}},
		{"not a duration", reader, vars("DATABASE_URL", db, "REPLICA_MAX_LAG", "soon"), []string{"REPLICA_MAX_LAG"}},
		{"zero", projector, vars("DATABASE_URL", db, "FETCH_BATCH", "0"), []string{"FETCH_BATCH"}},
		{"bad address", writer, vars("DATABASE_URL", db, "WRITER_ADDR", "8081"), []string{"WRITER_ADDR"}},
		{"bad replica", reader, vars("DATABASE_URL", db, "REPLICA_URLS", "http://x"), []string{"REPLICA_URLS"}},
		{"bad redis", projector, vars("DATABASE_URL", db, "REDIS_URL", "memcache://x"), []string{"REDIS_URL"}},
		{"bad nats", projector, vars("DATABASE_URL", db, "NATS_URL", "http://x"), []string{"NATS_URL"}},
		{"bad log level", writer, vars("DATABASE_URL", db, "LOG_LEVEL", "loud"), []string{"LOG_LEVEL"}},
		{"bad stream name", writer, vars("DATABASE_URL", db, "STREAM_NAME", "a.b"), []string{"STREAM_NAME"}},
		{"short token key", writer, vars("DATABASE_URL", db, "CONSISTENCY_KEY", "short"), []string{"CONSISTENCY_KEY", "32"}},
		{"short previous key", reader, vars("DATABASE_URL", db, "CONSISTENCY_KEY_PREVIOUS", "short"), []string{"CONSISTENCY_KEY_PREVIOUS"}},
		{"short id key", projector, vars("DATABASE_URL", db, "ID_KEY", "short"), []string{"ID_KEY", "32"}},
		{"two problems at once", writer, vars("DATABASE_URL", db, "RELAY_BATCH", "0", "BODY_LIMIT", "-1"), []string{"RELAY_BATCH", "BODY_LIMIT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load(tc.env)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// Serving needs the consistency token key; the writer's admin commands do
// not.
func TestConsistencyKeys(t *testing.T) {
	w, err := LoadWriter(vars("DATABASE_URL", db, "CONSISTENCY_KEY", ""))
	if err != nil {
		t.Fatalf("the writer without a token key (for its admin commands): %v", err)
	}
	if _, _, err := w.Keys(); err == nil || !strings.Contains(err.Error(), "CONSISTENCY_KEY is required") {
		t.Errorf("Keys without a key: %v", err)
	}
	r, err := LoadReader(vars("DATABASE_URL", db, "CONSISTENCY_KEY_PREVIOUS", key+"-old"))
	if err != nil {
		t.Fatal(err)
	}
	if cur, prev, err := r.Keys(); cur != key || prev != key+"-old" || err != nil {
		t.Errorf("Keys: %q %q %v", cur, prev, err)
	}
}

// The /v1 ids need their key to serve (and, in the projector, to build
// bodies); loading without one works, for the admin commands.
func TestIDKey(t *testing.T) {
	p, err := LoadProjector(vars("DATABASE_URL", db))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublicIDKey(); err == nil || !strings.Contains(err.Error(), "ID_KEY is required") {
		t.Errorf("PublicIDKey without a key: %v", err)
	}
	r, err := LoadReader(vars("DATABASE_URL", db, "ID_KEY", key))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.PublicIDKey(); got != key || err != nil {
		t.Errorf("PublicIDKey: %q %v", got, err)
	}
}

func writer(e func(string) string) error    { _, err := LoadWriter(e); return err }
func reader(e func(string) string) error    { _, err := LoadReader(e); return err }
func projector(e func(string) string) error { _, err := LoadProjector(e); return err }

func TestAttrsMaskSecrets(t *testing.T) {
	r, err := LoadReader(vars("DATABASE_URL", db, "REPLICA_URLS", db))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, a := range Attrs(r) {
		b.WriteString(a.(interface{ String() string }).String())
	}
	if strings.Contains(b.String(), "secret") || !strings.Contains(b.String(), "REPLICA_URLS") || !strings.Contains(b.String(), "CONSISTENCY_KEY") {
		t.Errorf("attrs %s", b.String())
	}
}

// The container's memory limit, from cgroup v2 or v1, and the values that
// mean none.
func TestContainerMemory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		files []string
		want  int64
	}{
		{"v2 limit", []string{write("v2", "268435456\n"), write("v1", "1")}, 268435456},
		{"v2 without a limit", []string{write("v2max", "max\n")}, 0},
		{"v1 without a limit", []string{filepath.Join(dir, "none"), write("v1huge", "9223372036854771712\n")}, 0},
		{"v1 limit", []string{filepath.Join(dir, "none"), write("v1lim", "536870912")}, 536870912},
		{"no cgroup", []string{filepath.Join(dir, "none")}, 0},
	}
	for _, tc := range tests {
		if got := containerMemory(tc.files); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	saved := cgroupLimits
	defer func() { cgroupLimits = saved }()
	limit := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(limit, []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cgroupLimits = []string{limit}
	if soft := TuneGC(func(string) string { return "" }); soft != 900_000_000 || debug.SetMemoryLimit(-1) != 900_000_000 {
		t.Errorf("in a container of 1 GB, a soft limit of %d", soft)
	}
	if got := debug.SetGCPercent(100); got != DefaultGOGC {
		t.Errorf("without GOGC the target is %d, want %d", got, DefaultGOGC)
	}
	if soft := TuneGC(func(k string) string { return map[string]string{"GOMEMLIMIT": "100MiB", "GOGC": "100"}[k] }); soft != 0 {
		t.Errorf("with GOMEMLIMIT set, TuneGC set a limit of %d", soft)
	}
	TuneGC(func(k string) string { return map[string]string{"GOGC": "50"}[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, TuneGC changed the target to %d", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's flush timer.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Log lines are written out in batches, within a fraction of a second, and
// at once from a warning up.
func TestLogBuffer(t *testing.T) {
	out := &syncBuffer{}
	log, buf := Common{LogLevel: slog.LevelInfo, LogFormat: "json"}.Logger(out, "test")
	log.Info("first")
	if strings.Contains(out.String(), "first") {
		t.Errorf("an info line was written at once, not batched")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(out.String(), "first") {
		if time.Now().After(deadline) {
			t.Fatal("an info line was not written within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Info("second")
	log.Warn("third")
	if got := out.String(); !strings.Contains(got, "second") || !strings.Contains(got, "third") || !strings.Contains(got, `"program":"test"`) {
		t.Errorf("a warning did not flush what was buffered: %q", got)
	}
	log.Info("last")
	if err := buf.Flush(); err != nil || !strings.Contains(out.String(), "last") {
		t.Errorf("Flush: %v, %q", err, out.String())
	}
}
