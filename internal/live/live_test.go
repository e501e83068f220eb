package live

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/readmodel"
	"github.com/sprockets-api/sprockets/internal/rediscache"
)

var server *devstack.Redis

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "live-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if server, err = devstack.StartRedis(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "a real Redis is required:", err)
		return 1
	}
	defer server.Stop()
	return m.Run()
}

// tokens is an authenticator whose one token can be revoked.
type tokens struct{ revoked atomic.Bool }

func (a *tokens) Authenticate(context.Context, string, auth.Admit) (domain.Principal, error) {
	if a.revoked.Load() {
		return domain.Principal{}, auth.ErrUnauthenticated
	}
	return reader, nil
}

var reader = domain.Principal{OrgID: 1, TokenID: 5, Scopes: []string{domain.ScopeRead}}

type fixture struct {
	cache *rediscache.Cache
	rdb   *redis.Client
	hub   *Hub
	authn *tokens
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	rdb, err := rediscache.Connect(server.URL(), 8, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	cache := rediscache.New(rdb)
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Hour
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 100
	}
	if cfg.MaxPerClient == 0 {
		cfg.MaxPerClient = 100
	}
	if cfg.MaxPerOrg == 0 {
		cfg.MaxPerOrg = 100
	}
	authn := &tokens{}
	hub := New(cache, authn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go hub.Run(ctx) //nolint:errcheck // ends with the test
	for running := false; !running; time.Sleep(time.Millisecond) {
		hub.mu.Lock()
		running = hub.ctx == ctx
		hub.mu.Unlock()
	}
	return &fixture{cache, rdb, hub, authn}
}

// log logs changes of organization 1 and tells the hub, as the feed would.
func (f *fixture) log(t *testing.T, cs ...readmodel.Change) {
	t.Helper()
	if err := f.cache.LogLive(context.Background(), time.Minute, 1000, map[int64][]readmodel.Change{1: cs}); err != nil {
		t.Fatal(err)
	}
	f.hub.Changed(readmodel.LiveKey(1), 0)
}

func sprocket(id, version int64) readmodel.Change {
	return readmodel.Change{Kind: readmodel.LiveSprocket, ID: id, Version: version, Type: readmodel.SprocketUpdated,
		Data: []byte(fmt.Sprintf(`{"id":%d,"version":%d}`, id, version))}
}

func factory(id, version int64) readmodel.Change {
	return readmodel.Change{Kind: readmodel.LiveFactory, ID: id, Version: version, Type: readmodel.FactorySamples,
		Data: []byte(fmt.Sprintf(`{"factory":%d,"version":%d}`, id, version))}
}

// event is one SSE event as a client parses it.
type event struct{ id, name, data string }

// client reads a stream's events as a browser would.
type client struct {
	events chan event
	done   chan string // the reason Serve ended
}

func (f *fixture) open(t *testing.T, r Request) *client {
	t.Helper()
	r.Principal, r.Token = reader, "spk_test"
	if r.Client == "" {
		r.Client = "token:5"
	}
	s, err := f.hub.Open(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	c := &client{events: make(chan event, 100), done: make(chan string, 1)}
	go func() {
		s.Serve(bufio.NewWriter(pw), func(time.Time) error { return nil }, nil)
		c.done <- s.why
		pw.Close()
	}()
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(pr)
		var e event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.id != "" || e.data != "" {
					c.events <- e
				}
				e = event{}
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()
	t.Cleanup(func() { pr.Close() })
	return c
}

func (c *client) next(t *testing.T) event {
	t.Helper()
	select {
	case e, ok := <-c.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return event{}
}

func TestStreamSendsWhatIsLogged(t *testing.T) {
	f := newFixture(t, Config{})
	f.log(t, sprocket(1, 1)) // before the stream: not sent
	all := f.open(t, Request{})
	factories := f.open(t, Request{Filter: Filter{Kinds: map[string]bool{readmodel.LiveFactory: true}}})
	one := f.open(t, Request{Filter: Filter{Kinds: map[string]bool{readmodel.LiveFactory: true}, Factories: map[int64]bool{8: true}}})
	ready := all.next(t)
	if ready.name != "ready" || ready.data != `{"id":"`+ready.id+`"}` {
		t.Fatalf("first event %+v, want ready at the log's end", ready)
	}
	for _, c := range []*client{factories, one} {
		if e := c.next(t); e != ready {
			t.Fatalf("first event %+v, want %+v", e, ready)
		}
	}
	f.log(t, sprocket(1, 2), factory(7, 1))
	f.log(t, factory(8, 1))
	want := []string{"sprocket.updated " + string(sprocket(1, 2).Data), "factory.samples " + string(factory(7, 1).Data), "factory.samples " + string(factory(8, 1).Data)}
	var ids []string
	for _, w := range want {
		e := all.next(t)
		if e.name+" "+e.data != w {
			t.Fatalf("got %+v, want %s", e, w)
		}
		ids = append(ids, e.id)
	}
	if e := factories.next(t); e.name+" "+e.data != want[1] || e.id != ids[1] {
		t.Fatalf("factories only: got %+v, want %s", e, want[1])
	}
	if e := factories.next(t); e.name+" "+e.data != want[2] {
		t.Fatalf("factories only: got %+v, want %s", e, want[2])
	}
	// Factory 8 only: the changes before it, when they come on their own,
	// move the client's id on, and are not sent.
	e := one.next(t)
	if e.data == "" && e.id == ids[1] {
		e = one.next(t)
	}
	if e.name+" "+e.data != want[2] || e.id != ids[2] {
		t.Fatalf("factory 8 only: got %+v, want %s", e, want[2])
	}
}

// A gap in the log reaches every stream, whatever it filters.
func TestLogGapResetsEveryStream(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.open(t, Request{Filter: Filter{Kinds: map[string]bool{readmodel.LiveFactory: true}, Factories: map[int64]bool{8: true}}})
	c.next(t)
	f.log(t, readmodel.LiveGap(time.Now()))
	if e := c.next(t); e.name != "reset" || e.data != `{"reason":"log_gap"}` {
		t.Fatalf("got %+v, want a reset", e)
	}
}

func TestStreamResumes(t *testing.T) {
	f := newFixture(t, Config{})
	first := f.open(t, Request{})
	first.next(t) // ready
	f.log(t, sprocket(1, 1), sprocket(1, 2), sprocket(1, 3))
	var ids []string
	for range 3 {
		ids = append(ids, first.next(t).id)
	}
	// After the first: the two others, then what comes next.
	again := f.open(t, Request{From: ids[0]})
	for _, id := range ids[1:] {
		if e := again.next(t); e.id != id || e.name != "sprocket.updated" {
			t.Fatalf("resumed: got %+v, want %s", e, id)
		}
	}
	f.log(t, sprocket(1, 4))
	if e := again.next(t); e.data != string(sprocket(1, 4).Data) {
		t.Fatalf("after resuming: got %+v", e)
	}
	// An id this log never gave, or one older than what it keeps: reload.
	if e := f.open(t, Request{From: "99999999999999-0"}).next(t); e.name != "reset" || e.data != `{"reason":"unknown_id"}` {
		t.Fatalf("an unknown id: got %+v, want a reset", e)
	}
	for v := int64(5); v < 10; v++ {
		if err := f.cache.LogLive(context.Background(), time.Minute, 2, map[int64][]readmodel.Change{1: {sprocket(1, v)}}); err != nil {
			t.Fatal(err)
		}
	}
	reset := f.open(t, Request{From: ids[2]}).next(t)
	if reset.name != "reset" || reset.data != `{"reason":"too_old"}` {
		t.Fatalf("an id trimmed from the log: got %+v, want a reset", reset)
	}
	if _, err := f.hub.Open(context.Background(), Request{Principal: reader, From: "12-x"}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("a malformed Last-Event-ID: %v", err)
	}

	// Redis restarts without its data: the log starts again, with newer
	// ids than the client's, but what came after the client's is gone.
	lost := f.open(t, Request{})
	lost.next(t)
	f.log(t, sprocket(2, 1))
	before := lost.next(t).id
	if err := f.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	f.log(t, sprocket(2, 3)) // version 2 was lost with the data
	if e := f.open(t, Request{From: before}).next(t); e.name != "reset" || e.data != `{"reason":"log_lost"}` {
		t.Fatalf("resuming after Redis lost the log: got %+v, want a reset", e)
	}
}

func TestRevokedTokenEndsStream(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.open(t, Request{})
	c.next(t)
	f.hub.Recheck() // nothing changed: it goes on
	f.log(t, sprocket(1, 1))
	if e := c.next(t); e.name != "sprocket.updated" {
		t.Fatalf("got %+v", e)
	}
	f.authn.revoked.Store(true)
	f.hub.Recheck()
	if e := c.next(t); e.name != "end" || e.data != `{"reason":"unauthenticated"}` {
		t.Fatalf("got %+v, want the end", e)
	}
	if why := <-c.done; why != "unauthenticated" {
		t.Fatalf("ended: %s", why)
	}
}

func TestStreamLimits(t *testing.T) {
	f := newFixture(t, Config{MaxPerClient: 1, MaxPerOrg: 2})
	c := f.open(t, Request{})
	c.next(t)
	if _, err := f.hub.Open(context.Background(), Request{Principal: reader, Client: "token:5"}); domain.ErrorCode(err) != domain.ELIMITED {
		t.Fatalf("a second stream of one client: %v", err)
	}
	other := f.open(t, Request{Client: "token:6"})
	other.next(t)
	// The organization holds two streams, as many as it may, whatever
	// token a third comes with; another organization still gets one.
	if _, err := f.hub.Open(context.Background(), Request{Principal: reader, Client: "token:8"}); domain.ErrorCode(err) != domain.ELIMITED {
		t.Fatalf("a third stream of one organization: %v", err)
	}
	stranger := reader
	stranger.OrgID = 2
	if _, err := f.hub.Open(context.Background(), Request{Principal: stranger, Client: "token:9"}); err != nil {
		t.Fatalf("another organization's stream: %v", err)
	}
	// Each refusal is counted by the limit in its way.
	for reason, want := range map[string]float64{"client_limit": 1, "org_limit": 1, "reader_full": 0} {
		if n := testutil.ToFloat64(f.hub.refused.WithLabelValues(reason)); n != want {
			t.Errorf("refused for %s: %.0f, want %.0f", reason, n, want)
		}
	}
	f.authn.revoked.Store(true)
	f.hub.Recheck()
	<-c.done
	<-other.done
	f.authn.revoked.Store(false)
	f.open(t, Request{}).next(t) // its first stream ended: room again

	// A stream that does not keep up ends, saying so: its client resumes
	// from the log in Redis.
	s, err := f.hub.Open(context.Background(), Request{Principal: reader, Client: "token:7"})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan string, 1)
	go func() {
		s.Serve(bufio.NewWriterSize(pw, 16), func(time.Time) error { return nil }, nil)
		done <- s.why
		pw.Close()
	}()
	for v := int64(1); v <= 2*keep; v++ { // nobody reads: its first write waits
		s.org.add(delivery{entries: []readmodel.LiveEntry{{ID: fmt.Sprintf("1-%d", v), Change: sprocket(1, v)}}})
	}
	out, _ := io.ReadAll(pr)
	if why := <-done; why != "slow" || !strings.HasSuffix(string(out), "event: end\ndata: {\"reason\":\"slow\"}\n\n") {
		t.Fatalf("ended %q, after %q", why, out)
	}
}
