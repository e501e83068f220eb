package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// as returns header arguments that send token instead of the stack's own.
func as(token string) []string {
	if token == "" {
		return []string{"Authorization", ""}
	}
	return []string{"Authorization", "Bearer " + token}
}

func token(t *testing.T, s *devstack.Stack, org, scopes string, extra ...string) string {
	t.Helper()
	tok, err := s.CreateToken(context.Background(), org, scopes, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writerCmd(t *testing.T, s *devstack.Stack, args ...string) string {
	t.Helper()
	out, err := s.Writer.Exec(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Each scope opens exactly its routes.
func TestScopeMatrix(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()
	tokens := map[string]string{
		"none":   "",
		"forged": "spk_" + strings.Repeat("A", 43),
		"read":   token(t, s, "default", "read"),
		"write":  token(t, s, "default", "write"),
		"admin":  token(t, s, "default", "admin"),
	}
	type route struct {
		name, method, url, body string
		ok                      int
		scope                   string
	}
	var seq int
	routes := func() []route {
		seq++
		return []route{
			{"list factories", "GET", rd + "/api/factories", "", 200, "read"},
			{"one sprocket", "GET", rd + "/api/sprocket/1", "", 200, "read"},
			{"v1 sprockets", "GET", rd + "/v1/sprockets", "", 200, "read"},
			{"v1 chart data", "GET", rd + "/v1/factories/" + fid(s, 1) + "/chart-data", "", 200, "read"},
			{"compat create", "POST", w + "/api/sprocket/create/5/6/4/7", "", 201, "write"},
			{"v1 create", "POST", w + "/v1/sprockets", `{"teeth":1,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, 201, "write"},
			{"v1 patch", "PATCH", w + "/v1/sprockets/" + sid(s, 2), fmt.Sprintf(`{"teeth":%d}`, 10+seq), 200, "write"},
			{"append", "POST", w + "/v1/factories/" + fid(s, 1) + "/samples", fmt.Sprintf(`{"samples":[{"time":%d,"actual":1,"goal":1}]}`, 1700000000+seq), 200, "write"},
			{"audit", "GET", rd + "/v1/audit", "", 200, "admin"},
		}
	}
	for _, who := range []string{"none", "forged", "read", "write", "admin"} {
		for _, r := range routes() {
			t.Run(who+"/"+r.name, func(t *testing.T) {
				var body any
				if r.body != "" {
					body = r.body
				}
				got := do(t, r.method, r.url, body, as(tokens[who])...)
				want := r.ok
				switch {
				case who == "none" || who == "forged":
					want = 401
				case who != "admin" && who != r.scope:
					want = 403
				}
				if got.Status != want {
					t.Fatalf("got %s, want %d", got, want)
				}
				if want >= 400 {
					checkProblem(t, got, want, "")
				}
				if want == 401 && got.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
			})
		}
	}
	// Delete, last: it needs the write scope too.
	checkProblem(t, do(t, "DELETE", w+"/v1/sprockets/"+sid(s, 3), nil, as(tokens["read"])...), 403, "write")
	expect(t, do(t, "DELETE", w+"/v1/sprockets/"+sid(s, 3), nil, as(tokens["write"])...), 204, "delete with write")
	// Probes, metrics and the API description need no token.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json"} {
		expect(t, do(t, "GET", rd+path, nil, as("")...), 200, "GET "+path+" without a token")
	}
}

// Organization B can neither see nor change organization A's data, whether
// the reader answers from Redis, a replica or the leader, and its lists
// hold only its own items.
func TestOrganizationsAreIsolated(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()
	writerCmd(t, s, "org", "create", "other")
	b := token(t, s, "other", "read,write")
	r := do(t, "POST", w+"/v1/sprockets", `{"teeth":77,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, as(b)...)
	expect(t, r, 201, "B creates a sprocket")
	var mine sprocketV1
	r.JSON(t, &mine)
	mineToken := r.Header.Get("X-Consistency-Token")
	eventually(t, rd+"/api/sprockets", 200, bodyHas(`"id":3`)) // A's collection is built

	reads := []string{"/api/sprocket/1", "/v1/sprockets/" + sid(s, 1), "/api/factory/1", "/api/factory/1/chart-data",
		"/v1/factories/" + fid(s, 1), "/v1/factories/" + fid(s, 1) + "/chart-data"}
	writes := [][3]string{
		{"POST", "/api/sprocket/1/update/5/6/4/7", ""},
		{"PUT", "/v1/sprockets/" + sid(s, 1), `{"teeth":1,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`},
		{"PATCH", "/v1/sprockets/" + sid(s, 1), `{"teeth":2}`},
		{"DELETE", "/v1/sprockets/" + sid(s, 2), ""},
		{"PUT", "/v1/factories/" + fid(s, 1), `{"name":"stolen"}`},
		{"PATCH", "/v1/factories/" + fid(s, 1), `{"name":"stolen"}`},
		{"POST", "/v1/factories/" + fid(s, 1) + "/samples", `{"samples":[{"time":1,"actual":1,"goal":1}]}`},
		{"DELETE", "/v1/factories/" + fid(s, 2), ""},
	}
	check := func(rd, source string) {
		t.Helper()
		// A reads its own from where this phase reads; its reads fill the
		// reader's memory, where there is one.
		checkFor(t, 10*time.Second, func() string {
			for _, path := range reads {
				do(t, "GET", rd+path, nil)
			}
			if got := do(t, "GET", rd+"/v1/sprockets/"+sid(s, 1), nil).Header.Get("X-Read-Source"); got != source {
				return "A's read came from " + got + ", want " + source
			}
			return ""
		})
		for _, path := range reads {
			checkProblem(t, do(t, "GET", rd+path, nil, as(b)...), 404, "not found")
		}
		lists := map[string]string{"/api/sprockets": `"sprockets":[{"id":` + fmt.Sprint(num(t, s, mine.ID)) + `,`,
			"/v1/sprockets": `"items":[{"id":"` + mine.ID + `",`, "/api/factories": `{"factories":[]}`, "/v1/factories": `{"items":[],`}
		for path, want := range lists {
			r := do(t, "GET", rd+path, nil, append(as(b), "X-Consistency-Token", mineToken)...)
			expect(t, r, 200, "B lists "+path)
			if !strings.Contains(string(r.Body), want) || strings.Contains(string(r.Body), `"id":1,`) {
				t.Errorf("B's %s holds another organization's items: %s", path, r.Body)
			}
		}
	}
	check(rd, "memory")
	// A reader without memory of its own reads Redis.
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	redisOnly := s.NewProgram("reader", port, "NEAR_CACHE_BYTES=0")
	if err := redisOnly.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer redisOnly.Stop()
	authenticate(t, s, mustToken(t, s), redisOnly)
	check(redisOnly.URL(), "cache")
	for _, wr := range writes {
		var body any
		if wr[2] != "" {
			body = wr[2]
		}
		checkProblem(t, do(t, wr[0], w+wr[1], body, as(b)...), 404, "not found")
	}
	s.Redis.Stop() // reads now come from the replica, once the memory is dropped
	check(rd, "replica")
	s.Replica.Stop() // and from the leader
	check(rd, "leader")
}

// A revoked or expired token is refused on its very next request, by the
// reader and the writer; no token is stored in plain text.
func TestRevokedAndExpiredTokens(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2})
	w := s.Writer.URL()
	tok := token(t, s, "default", "read,write", "--name", "to-revoke")
	short := token(t, s, "default", "read", "--expires", "6s")
	created := time.Now() // the token expires at most 6s after this
	for _, base := range []string{s.Readers[0].URL(), s.Readers[1].URL()} {
		expect(t, do(t, "GET", base+"/api/sprocket/1", nil, as(tok)...), 200, "before revocation")
		expect(t, do(t, "GET", base+"/api/sprocket/1", nil, as(short)...), 200, "before expiry")
	}
	expect(t, do(t, "POST", w+"/api/sprocket/create/5/6/4/7", nil, as(tok)...), 201, "before revocation")

	writerCmd(t, s, "token", "revoke", tokenID(t, s, "default", "to-revoke"))
	for _, base := range []string{s.Readers[0].URL(), s.Readers[1].URL()} {
		checkProblem(t, do(t, "GET", base+"/api/sprocket/1", nil, as(tok)...), 401, "revoked")
	}
	checkProblem(t, do(t, "POST", w+"/api/sprocket/create/5/6/4/7", nil, as(tok)...), 401, "revoked")

	time.Sleep(time.Until(created.Add(6*time.Second + 200*time.Millisecond)))
	for _, base := range []string{s.Readers[0].URL(), s.Readers[1].URL()} {
		checkProblem(t, do(t, "GET", base+"/api/sprocket/1", nil, as(short)...), 401, "expired")
	}

	dump, err := exec.Command(pgDump(t), "--data-only", "--dbname", s.DatabaseURL()).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{tok, short, strings.TrimPrefix(tok, "spk_")} {
		if strings.Contains(string(dump), secret) {
			t.Fatalf("the database dump holds a token in plain text")
		}
	}
	if !strings.Contains(string(dump), "to-revoke") {
		t.Fatalf("the dump does not hold the tokens table (%d bytes)", len(dump))
	}
}

// tokenID returns the id of the token named name in org, from token list.
func tokenID(t *testing.T, s *devstack.Stack, org, name string) string {
	t.Helper()
	for _, line := range strings.Split(writerCmd(t, s, "token", "list", "--org", org), "\n") {
		if id, rest, ok := strings.Cut(line, "\t"); ok && strings.Contains(rest, "\t"+name+"\t") {
			return id
		}
	}
	t.Fatalf("no token named %q", name)
	return ""
}

// A revocation holds as soon as the command returns, even when Redis
// cannot be told: first when the command cannot reach Redis but every
// instance can (their memory and Redis hold the token as valid), then with
// Redis down. The writer puts the revocation into Redis once it can.
func TestRevocationWithoutRedis(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2})
	db := leader(t, s)
	ctx := context.Background()
	accepted := func(tok string, ok bool, when string) {
		t.Helper()
		read, write := 200, 201
		if !ok {
			read, write = 401, 401
		}
		for _, base := range []string{s.Readers[0].URL(), s.Readers[1].URL()} {
			expect(t, do(t, "GET", base+"/api/sprocket/1", nil, as(tok)...), read, when)
		}
		expect(t, do(t, "POST", s.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil, as(tok)...), write, when)
	}
	repaired := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int
			if err := db.GetContext(ctx, &n, `SELECT count(*) FROM grant_repairs`); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d revocations still wait for Redis after 10s", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	cutOff := token(t, s, "default", "read,write", "--name", "cut-off")
	accepted(cutOff, true, "before revocation")
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	noRedis := s.NewProgram("writer", port, fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", port))
	out, err := noRedis.Exec(ctx, "token", "revoke", tokenID(t, s, "default", "cut-off"))
	if err != nil || !strings.Contains(out, "revoked") || !strings.Contains(out, "could not be carried through to Redis") {
		t.Fatalf("revoke without Redis: %v\n%s", err, out)
	}
	accepted(cutOff, false, "revoked by a command that could not reach Redis")
	repaired()
	accepted(cutOff, false, "once the writer put the revocation into Redis")

	down := token(t, s, "default", "read,write", "--name", "while-redis-is-down")
	accepted(down, true, "before revocation")
	s.Redis.Stop()
	out = writerCmd(t, s, "token", "revoke", tokenID(t, s, "default", "while-redis-is-down"))
	if !strings.Contains(out, "revoked") {
		t.Fatalf("revoke with Redis down: %s", out)
	}
	accepted(down, false, "revoked with Redis down")
	if err := s.Redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	repaired()
	accepted(down, false, "revoked with Redis down, once it is back")
}

func pgDump(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/lib/postgresql/15/bin/pg_dump", "/usr/lib/postgresql/16/bin/pg_dump", "/usr/lib/postgresql/17/bin/pg_dump"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Fatal("pg_dump is needed")
	}
	return p
}

// A program started with another ID_KEY than the one the service's ids
// were first made with refuses to run: the writer and the projector at
// start, a reader as soon as the leader answers. Its ids would be no
// other program's.
func TestAnotherIDKeyIsRefused(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	for _, name := range []string{"reader", "writer", "projector"} {
		port, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		p := s.NewProgram(name, port, "ID_KEY="+strings.Repeat("another key ", 4))
		if err := p.Start(ctx); err == nil {
			checkFor(t, 10*time.Second, func() string {
				if resp, err := http.Get(p.URL() + "/healthz"); err == nil {
					resp.Body.Close()
					return name + " with another ID_KEY still runs"
				}
				return ""
			})
			p.Stop()
		}
		if log, _ := os.ReadFile(p.LogFile()); !strings.Contains(string(log), "ID_KEY") {
			t.Errorf("%s with another ID_KEY: its log does not say why it stopped:\n%s", name, log)
		}
	}
	// The stack's own programs, with the service's key, run on.
	expect(t, do(t, "GET", s.Reader.URL()+"/v1/sprockets/"+sid(s, 1), nil), 200, "the service's own reader")
}
