package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// reply is one HTTP answer.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%d %s", r.Status, tailBytes(r.Body, 300))
}

// JSON decodes the body into v.
func (r reply) JSON(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// tokens holds, per host:port of a running stack's programs, the token its
// requests carry unless they name their own Authorization.
var tokens sync.Map

// authenticate makes requests to s's programs, and to more programs of its,
// carry token until the test ends.
func authenticate(t *testing.T, s *devstack.Stack, token string, more ...*devstack.Program) {
	programs := append(append([]*devstack.Program{s.Writer, s.Projector}, s.Readers...), more...)
	hosts := []string{}
	for _, p := range programs {
		hosts = append(hosts, strings.TrimPrefix(p.URL(), "http://"))
	}
	if s.Edge != nil {
		hosts = append(hosts, strings.TrimPrefix(s.Edge.URL(), "http://"))
	}
	for _, h := range hosts {
		tokens.Store(h, token)
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			tokens.Delete(h)
		}
	})
}

// mustToken returns the token requests to s carry.
func mustToken(t *testing.T, s *devstack.Stack) string {
	t.Helper()
	tok, ok := tokens.Load(strings.TrimPrefix(s.Writer.URL(), "http://"))
	if !ok {
		t.Fatal("the stack has no token")
	}
	return tok.(string)
}

// fromReadModel reports whether an answer's X-Read-Source is the read
// model: the reader's memory of it, or Redis.
func fromReadModel(source string) bool { return source == "memory" || source == "cache" }

// call sends a request; header is alternating names and values. A body
// given as a string is sent as application/json unless header says
// otherwise. The stack's token is sent unless header names Authorization
// (an empty value sends none).
func call(method, url string, body any, header ...string) (reply, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok, ok := tokens.Load(req.URL.Host); ok {
		req.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
		if header[i+1] == "" {
			req.Header.Del(header[i])
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// do is call that fails the test on a transport error.
func do(t *testing.T, method, url string, body any, header ...string) reply {
	t.Helper()
	r, err := call(method, url, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// expect fails the test unless r has status want.
func expect(t *testing.T, r reply, want int, what string) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: got %s, want %d", what, r, want)
	}
}

// checkFor polls cond every 20ms until it returns "" or timeout passes, then
// fails with the last reason cond gave.
func checkFor(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually waits until GET url answers want status with a body for which
// match returns true, and returns that answer.
func eventually(t *testing.T, url string, want int, match func([]byte) bool) reply {
	t.Helper()
	var last reply
	checkFor(t, 15*time.Second, func() string {
		r, err := call("GET", url, nil)
		if err != nil {
			return err.Error()
		}
		last = r
		if r.Status == want && (match == nil || match(r.Body)) {
			return ""
		}
		return "GET " + url + ": " + r.String()
	})
	return last
}

// canonical re-encodes JSON so that two documents compare by content.
func canonical(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("canonical: %v in %s", err, tailBytes(b, 200))
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// raw sends a request exactly as written, to the host of base: what Go's
// client would refuse or clean up (control characters in a header, a path
// that is not clean, a body announced and not sent). head is the request
// line and the headers, each ending in CRLF, without Host, Connection or
// the blank line; body follows them.
func raw(base, head, body string) (reply, error) {
	u, err := url.Parse(base)
	if err != nil {
		return reply{}, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head+"Host: "+u.Host+"\r\nConnection: close\r\n\r\n"+body); err != nil {
		return reply{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// loadWritesAndReads runs clients pairs of goroutines against s until the
// stop it returns is called: one creates sprockets through the writer, the
// other reads readPath from the reader. Every answer goes to note (err
// set when none came); after a failure or a 5xx a goroutine waits 20 ms.
// stop returns the ids of the creates the writer acknowledged.
func loadWritesAndReads(s *devstack.Stack, clients int, readPath string, note func(kind string, r reply, err error)) (stop func() []int64) {
	var (
		done    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []int64
	)
	pause := func(r reply, err error) {
		if err != nil || r.Status >= 500 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for range clients {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; !done.Load(); i++ {
				r, err := call("POST", s.Writer.URL()+"/v1/sprockets", fmt.Sprintf(`{"teeth":%d,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, i%90+1))
				note("write", r, err)
				if err == nil && r.Status == 201 {
					var sp sprocketV1
					if json.Unmarshal(r.Body, &sp) == nil {
						n, _ := s.IDs().Decode(publicid.Sprocket, sp.ID)
						mu.Lock()
						created = append(created, n)
						mu.Unlock()
					}
				}
				pause(r, err)
			}
		}()
		go func() {
			defer wg.Done()
			for !done.Load() {
				r, err := call("GET", s.Reader.URL()+readPath, nil)
				note("read", r, err)
				pause(r, err)
			}
		}()
	}
	return func() []int64 {
		done.Store(true)
		wg.Wait()
		return created
	}
}

// expectInLeader fails the test unless there are acknowledged creates and
// every one is in the leader.
func expectInLeader(t *testing.T, db *sqlx.DB, created []int64) {
	t.Helper()
	if len(created) == 0 {
		t.Fatal("no create was acknowledged")
	}
	ids := make([]string, len(created))
	for i, id := range created {
		ids[i] = strconv.FormatInt(id, 10)
	}
	if n := count(t, db, `SELECT count(*) FROM sprockets WHERE id IN (`+strings.Join(ids, ",")+`)`); n != len(created) {
		t.Errorf("%d of %d acknowledged creates are in the leader", n, len(created))
	}
}
