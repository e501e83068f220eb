package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/events"
)

// A token's budget is shared by every reader; going over it is a 429 with
// the headers that say when to come back; a 304 costs nothing; requests
// without a token are limited per client address.
func TestRateLimits(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2, env: []string{"RATE_LIMIT_ANONYMOUS=5"}})
	writerCmd(t, s, "org", "create", "small", "--rate-limit", "10")
	tok := token(t, s, "small", "read,write")
	readers := []string{s.Readers[0].URL(), s.Readers[1].URL()}

	// Conditional reads answered 304 are free.
	first := do(t, "GET", readers[0]+"/api/sprockets", nil, as(tok)...)
	expect(t, first, 200, "first read")
	etag := first.Header.Get("ETag")
	var last reply
	for i := 0; i < 30; i++ {
		last = do(t, "GET", readers[i%2]+"/api/sprockets", nil, append(as(tok), "If-None-Match", etag)...)
		if last.Status != 304 {
			t.Fatalf("conditional read %d: %s", i, last)
		}
	}
	// Charged, they would have spent it all; refunded, at least 7 of 10 are
	// left: the first read spent one, and each reader holds a lease of one
	// (a tenth of the budget), which the refunds go back to.
	if rl := last.Header.Get("RateLimit"); !strings.Contains(rl, `r=7`) && !strings.Contains(rl, `r=8`) &&
		!strings.Contains(rl, `r=9`) && !strings.Contains(rl, `r=10`) {
		t.Errorf("after 30 refunded reads the budget says %q, want 7 to 10 of 10 left", rl)
	}

	// Both readers draw on one budget of 10 per second.
	var ok, limited int
	var tooMany reply
	start := time.Now()
	for i := 0; i < 30; i++ {
		r := do(t, "GET", readers[i%2]+"/api/sprockets", nil, as(tok)...)
		switch r.Status {
		case 200:
			ok++
		case 429:
			limited++
			tooMany = r
		default:
			t.Fatalf("read %d: %s", i, r)
		}
	}
	elapsed := time.Since(start)
	if refill := int(elapsed.Seconds()*10) + 1; ok > 10+refill || limited == 0 {
		t.Fatalf("%d allowed and %d refused in %s with a budget of 10/s shared by two readers", ok, limited, elapsed)
	}
	checkProblem(t, tooMany, 429, "10 per second")
	if tooMany.Header.Get("Retry-After") == "" || !strings.Contains(tooMany.Header.Get("RateLimit-Policy"), "q=10;w=1") ||
		!strings.Contains(tooMany.Header.Get("RateLimit"), "r=0") {
		t.Errorf("429 headers: Retry-After %q, RateLimit-Policy %q, RateLimit %q",
			tooMany.Header.Get("Retry-After"), tooMany.Header.Get("RateLimit-Policy"), tooMany.Header.Get("RateLimit"))
	}
	t.Logf("budget 10/s over two readers: %d allowed, %d refused in %s", ok, limited, elapsed.Round(time.Millisecond))

	// Without a token, the client address has its own small budget. The
	// token's first use on each reader looked it up in Postgres, which the
	// address paid for: 3 to 5 of its 5 are left, and a little came back.
	statuses := map[int]int{}
	for i := 0; i < 12; i++ {
		statuses[do(t, "GET", readers[i%2]+"/api/factories", nil, as("")...).Status]++
	}
	if statuses[401] < 3 || statuses[401] > 7 || statuses[429] < 5 {
		t.Errorf("12 requests without a token: %v, want 3 to 7 401 then 429", statuses)
	}
}

// Every write leaves exactly one audit row, in its transaction, naming the
// token, address, user agent (escaped and cut) and request id; an admin
// reads the trail through the API.
func TestAuditTrail(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := leader(t, s)
	w := s.Writer.URL()
	tok := token(t, s, "default", "read,write", "--name", "auditor")
	hostile := "evil\x1b[31mred\x07bell\u202eexe.\u009b" + strings.Repeat("A", 600)
	writes := []struct{ method, path, body, action string }{
		{"POST", "/api/sprocket/create/5/6/4/7", "", "sprocket.created"},
		{"POST", "/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, "sprocket.created"},
		{"PUT", "/v1/sprockets/" + sid(s, 1), `{"teeth":6,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, "sprocket.updated"},
		{"PATCH", "/v1/sprockets/" + sid(s, 1), `{"pitch":4}`, "sprocket.updated"},
		{"POST", "/api/sprocket/2/update/5/6/4/7", "", "sprocket.updated"},
		{"DELETE", "/v1/sprockets/" + sid(s, 3), "", "sprocket.deleted"},
		{"POST", "/v1/factories", `{"name":"Audited"}`, "factory.created"},
		{"POST", "/v1/factories/" + fid(s, 1) + "/samples", `{"samples":[{"time":1700000000,"actual":1,"goal":2}]}`, "factory.samples_appended"},
		{"PATCH", "/v1/factories/" + fid(s, 1), `{"name":"Renamed"}`, "factory.updated"},
		{"DELETE", "/v1/factories/" + fid(s, 2), "", "factory.deleted"},
	}
	for _, wr := range writes {
		before := count(t, db, `SELECT count(*) FROM audit_log`)
		r, err := raw(w, fmt.Sprintf("%s %s HTTP/1.1\r\nAuthorization: Bearer %s\r\nUser-Agent: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n",
			wr.method, wr.path, tok, hostile, len(wr.body)), wr.body)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status/100 != 2 {
			t.Fatalf("%s %s: %s", wr.method, wr.path, r)
		}
		if n := count(t, db, `SELECT count(*) FROM audit_log`) - before; n != 1 {
			t.Fatalf("%s %s left %d audit rows", wr.method, wr.path, n)
		}
		var row struct {
			Action    string `db:"action"`
			UserAgent string `db:"user_agent"`
			Actor     string `db:"actor"`
			Client    string `db:"client_addr"`
			RequestID string `db:"request_id"`
			HasToken  bool   `db:"has_token"`
		}
		if err := db.Get(&row, `SELECT action, user_agent, actor, client_addr, request_id, token_id IS NOT NULL AS has_token
			FROM audit_log ORDER BY id DESC LIMIT 1`); err != nil {
			t.Fatal(err)
		}
		if row.Action != wr.action || row.Actor != "token" || !row.HasToken || row.Client != "127.0.0.1" ||
			row.RequestID != r.Header.Get("X-Request-ID") {
			t.Errorf("%s %s: audit row %+v", wr.method, wr.path, row)
		}
		if strings.ContainsAny(row.UserAgent, "\x1b\x07\u202e\u009b") || !strings.HasPrefix(row.UserAgent, `evil'\x1b'[31mred'\a'bell'\u202e'exe.'\u009b'`) || len(row.UserAgent) > 300 {
			t.Errorf("user agent stored as %q", row.UserAgent)
		}
	}
	// The request id in the audit trail is the service's, whatever the
	// client sent in X-Request-ID.
	tagged := do(t, "POST", w+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, "X-Request-ID", "not-unique")
	var stored string
	if err := db.Get(&stored, `SELECT request_id FROM audit_log ORDER BY id DESC LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if stored == "not-unique" || stored != tagged.Header.Get("X-Request-ID") {
		t.Errorf("the audit row holds request id %q; the answer said %q", stored, tagged.Header.Get("X-Request-ID"))
	}

	// Refused and replayed writes change nothing, so they leave no row.
	before := count(t, db, `SELECT count(*) FROM audit_log`)
	do(t, "POST", w+"/v1/sprockets", `{"teeth":0}`)
	created := do(t, "POST", w+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, "Idempotency-Key", "k")
	do(t, "POST", w+"/v1/sprockets", `{"teeth":9,"pitch_diameter":1,"outside_diameter":2,"pitch":3}`, "Idempotency-Key", "k")
	if n := count(t, db, `SELECT count(*) FROM audit_log`) - before; n != 1 {
		t.Errorf("a refused write, a create and its replay left %d audit rows, want 1", n)
	}

	// The trail is read from a replica: the write's consistency token makes
	// the answer at least as new as the write.
	r := do(t, "GET", s.Reader.URL()+"/v1/audit?limit=500", nil, "X-Consistency-Token", created.Header.Get("X-Consistency-Token"))
	expect(t, r, 200, "GET /v1/audit as admin")
	var page struct {
		Items []struct {
			ID           string          `json:"id"`
			TokenID      *string         `json:"token_id"`
			Action       string          `json:"action"`
			UserAgent    string          `json:"user_agent"`
			ResourceType string          `json:"resource_type"`
			ResourceID   string          `json:"resource_id"`
			Changes      json.RawMessage `json:"changes"`
		} `json:"items"`
	}
	r.JSON(t, &page)
	if want := 6 + len(writes) + 2; len(page.Items) != want { // the seeds, the writes above, the two creates
		t.Errorf("the audit API lists %d entries, want %d", len(page.Items), want)
	}
	// No number the service counts up shows: entries, tokens and resources
	// have opaque ids, in the changes too, and no organization number.
	for _, it := range page.Items {
		prefix := map[string]string{"sprocket": "spr_", "factory": "fac_"}[it.ResourceType]
		if !strings.HasPrefix(it.ID, "aud_") || (it.TokenID != nil && !strings.HasPrefix(*it.TokenID, "tok_")) ||
			!strings.HasPrefix(it.ResourceID, prefix) || bytes.Contains(it.Changes, []byte(`"org_id"`)) ||
			(string(it.Changes) != "null" && !bytes.Contains(it.Changes, []byte(`"id":"`+it.ResourceID+`"`))) {
			t.Errorf("an audit entry shows numbers: %+v %s", it, it.Changes)
		}
	}
	if bytes.Contains(r.Body, []byte(`"org_id"`)) {
		t.Errorf("the audit API shows organization numbers: %s", tailBytes(r.Body, 300))
	}
	checkProblem(t, do(t, "GET", s.Reader.URL()+"/v1/audit", nil, as(tok)...), 403, "admin")
	if out := writerCmd(t, s, "audit", "--org", "default", "--limit", "3"); strings.Count(out, "\n") != 3 || !json.Valid([]byte(strings.Split(out, "\n")[0])) {
		t.Errorf("writer audit printed %q", out)
	}
}

// Deleting an organization revokes its tokens at once, removes its data
// (its trail and its tokens included) from Postgres, Redis and the stream,
// keeping only the record of the deletion, and neither a rebuild nor a
// replayed event brings any of it back.
func TestDeletingAnOrganization(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := leader(t, s)
	ctx := context.Background()
	w, rd := s.Writer.URL(), s.Reader.URL()
	writerCmd(t, s, "org", "create", "doomed")
	tok := token(t, s, "doomed", "read,write")
	var ids []int64
	for i := 0; i < 3; i++ {
		r := do(t, "POST", w+"/v1/sprockets", `{"teeth":3,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, as(tok)...)
		var sp sprocketV1
		r.JSON(t, &sp)
		ids = append(ids, num(t, s, sp.ID))
	}
	r := do(t, "POST", w+"/v1/factories", `{"name":"Doomed plant","samples":[{"time":1700000000,"actual":1,"goal":1},{"time":1700090000,"actual":2,"goal":2}]}`, as(tok)...)
	var created factoryV1
	r.JSON(t, &created)
	f := struct{ ID int64 }{num(t, s, created.ID)}
	for _, path := range []string{"/v1/sprockets/" + sid(s, ids[2]), fmt.Sprintf("/api/factory/%d", f.ID), "/api/sprockets"} {
		checkFor(t, 10*time.Second, func() string {
			r := do(t, "GET", rd+path, nil, as(tok)...)
			if r.Status != 200 || !fromReadModel(r.Header.Get("X-Read-Source")) {
				return path + ": " + r.String() + " from " + r.Header.Get("X-Read-Source")
			}
			return ""
		})
	}
	org := orgID(t, db, "doomed")
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	// orgKeys lists the read-model keys the organization owns.
	orgKeys := func() []string {
		t.Helper()
		var found []string
		iter := rdb.Scan(ctx, 0, "rm:*", 1000).Iterator()
		for iter.Next(ctx) {
			if o, _ := rdb.HGet(ctx, iter.Val(), "o").Result(); o == fmt.Sprint(org) {
				found = append(found, iter.Val())
			}
		}
		return found
	}
	if keys := orgKeys(); len(keys) < 8 {
		t.Fatalf("only %d keys of the organization before deleting it: %v", len(keys), keys)
	}

	// One of its events, to replay after the deletion as a redelivery would.
	nc, err := nats.Connect(s.NATS.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "SPROCKETS")
	if err != nil {
		t.Fatal(err)
	}
	old, err := stream.GetLastMsgForSubject(ctx, fmt.Sprintf("events.sprocket.%d.created", ids[0]))
	if err != nil {
		t.Fatal(err)
	}

	// A write the relay cannot publish yet (NATS is away): the deletion
	// removes its event with the rest.
	s.NATS.Stop()
	r = do(t, "POST", w+"/v1/sprockets", `{"teeth":4,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, as(tok)...)
	expect(t, r, 201, "a create while NATS is away")
	var pending sprocketV1
	r.JSON(t, &pending)
	ids = append(ids, num(t, s, pending.ID))
	writerCmd(t, s, "org", "delete", "doomed", "--yes")
	if n := count(t, db, fmt.Sprintf(`SELECT count(*) FROM outbox WHERE org_id = %d AND aggregate_type <> 'organization'`, org)); n != 0 {
		t.Errorf("%d unpublished events of the deleted organization are left in the outbox", n)
	}
	if err := s.NATS.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkProblem(t, do(t, "GET", rd+"/api/sprockets", nil, as(tok)...), 401, "revoked")
	checkProblem(t, do(t, "POST", w+"/v1/sprockets", `{"teeth":3,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, as(tok)...), 401, "revoked")
	for table, query := range map[string]string{
		"sprockets":        `SELECT count(*) FROM sprockets WHERE org_id = $1`,
		"factories":        `SELECT count(*) FROM factories WHERE org_id = $1`,
		"samples":          fmt.Sprintf(`SELECT count(*) FROM factory_samples WHERE factory_id = %d AND $1 > 0`, f.ID),
		"idempotency keys": `SELECT count(*) FROM idempotency_keys WHERE org_id = $1`,
		"tokens":           `SELECT count(*) FROM tokens WHERE org_id = $1`,
		// The deletion's own rows are the record that it happened.
		"audit rows": `SELECT count(*) FROM audit_log WHERE org_id = $1 AND resource_type <> 'organization'`,
	} {
		var n int
		if err := db.Get(&n, query, org); err != nil || n != 0 {
			t.Errorf("%s of the deleted organization: %d (%v)", table, n, err)
		}
	}
	checkFor(t, 10*time.Second, func() string {
		if keys := orgKeys(); len(keys) > 0 {
			return fmt.Sprintf("keys left in Redis: %v", keys)
		}
		return ""
	})

	// Its events leave the stream; the deletion's stays, as its record.
	var filters []string
	for _, id := range ids {
		filters = append(filters, events.AggregateFilter(events.Sprocket, id))
	}
	filters = append(filters, events.AggregateFilter(events.Factory, f.ID))
	checkFor(t, 10*time.Second, func() string {
		for _, filter := range filters {
			info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
			if err != nil {
				return err.Error()
			}
			if len(info.State.Subjects) > 0 {
				return fmt.Sprintf("the stream still holds %v", info.State.Subjects)
			}
		}
		return ""
	})
	if info, err := stream.Info(ctx, jetstream.WithSubjectFilter(events.AggregateFilter(events.Organization, org))); err != nil || len(info.State.Subjects) == 0 {
		t.Errorf("the deletion's event is not in the stream: %v", err)
	}

	// Replay one of its events, as a redelivery would; then rebuild.
	if _, err := js.Publish(ctx, old.Subject, old.Data); err != nil {
		t.Fatal(err)
	}
	r = do(t, "POST", w+"/api/sprocket/create/5/6/4/7", nil) // a later event, to know the replay was handled
	var later struct{ ID int64 }
	r.JSON(t, &later)
	eventually(t, fmt.Sprintf("%s/api/sprocket/%d", rd, later.ID), 200, nil)
	if out, err := s.Projector.Exec(ctx, "rebuild"); err != nil {
		t.Fatal(err, out)
	}
	if keys := orgKeys(); len(keys) > 0 {
		t.Errorf("the replay or the rebuild brought keys back: %v", keys)
	}
	verifyConverges(t, s, 20*time.Second)
}

func orgID(t *testing.T, db interface {
	Get(any, string, ...any) error
}, name string) int64 {
	t.Helper()
	var id int64
	if err := db.Get(&id, `SELECT id FROM organizations WHERE name = $1`, name); err != nil {
		t.Fatal(err)
	}
	return id
}

// A conditional request is charged before it is served, like any other; a
// 304 is refunded afterwards. Concurrent requests with If-None-Match cannot
// slip past a spent budget.
func TestConditionalRequestsAreCharged(t *testing.T) {
	s := newStack(t, stackOptions{})
	writerCmd(t, s, "org", "create", "tiny", "--rate-limit", "2")
	tok := token(t, s, "tiny", "read")
	url := s.Reader.URL() + "/api/sprockets"
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := call("GET", url, nil, append(as(tok), "If-None-Match", `"no-such-version"`)...)
			if err == nil {
				statuses[i] = r.Status
			}
		}()
	}
	wg.Wait()
	counts := map[int]int{}
	for _, st := range statuses {
		counts[st]++
	}
	if counts[200] > 3 || counts[429] < 17 {
		t.Errorf("20 concurrent conditional requests at a budget of 2/s: %v, want at most 3 served", counts)
	}
}

// Made-up tokens cost their sender's budget, not a query each: a thousand
// well-formed random tokens from one address, at an anonymous budget of
// 5/s, make a handful of Postgres lookups and are refused with 401 or 429.
func TestUnknownTokensCostLittle(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"RATE_LIMIT_ANONYMOUS=5"}})
	rd := s.Reader.URL()
	// The leader logs every statement meanwhile: the grant lookups are
	// counted there.
	db := leader(t, s)
	for _, q := range []string{`ALTER SYSTEM SET log_statement = 'all'`, `SELECT pg_reload_conf()`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the reload reaches every backend
	lookups := func() int {
		b, err := os.ReadFile(s.Leader.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "FROM tokens t JOIN organizations o ON o.id = t.org_id WHERE t.hash")
	}
	before := lookups()
	start := time.Now()
	statuses := map[int]int{}
	for range 1000 {
		made, _, _ := auth.NewSecret()
		statuses[do(t, "GET", rd+"/api/sprocket/1", nil, as(made)...).Status]++
	}
	elapsed := time.Since(start)
	n := lookups() - before
	t.Logf("1000 made-up tokens in %s: %v, %d lookups in Postgres", elapsed.Round(time.Millisecond), statuses, n)
	if most := 5 + 5*elapsed.Seconds() + 1; float64(n) > most {
		t.Errorf("%d lookups in Postgres, more than the budget's %.0f", n, most)
	}
	if statuses[401]+statuses[429] != 1000 || statuses[429] < 900 {
		t.Errorf("answers %v", statuses)
	}
}
