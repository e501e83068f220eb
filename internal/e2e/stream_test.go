package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sse is a client's stream of Server-Sent Events.
type sse struct {
	resp   *http.Response
	events chan sseEvent
	beats  chan struct{}
}

type sseEvent struct{ ID, Name, Data string }

// openStream opens GET url as a dashboard would, with token and, when
// lastID is not empty, Last-Event-ID; it fails the test unless the answer
// is a stream.
func openStream(t *testing.T, url, token, lastID string) *sse {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{resp: resp, events: make(chan sseEvent, 1000), beats: make(chan struct{}, 1000)}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var e sseEvent
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if e.Data != "" {
					s.events <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.beats <- struct{}{}
			case strings.HasPrefix(line, "id: "):
				e.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.Name = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.Data = line[6:]
			}
		}
	}()
	return s
}

// next returns the next event with data, failing the test after timeout.
func (s *sse) next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return sseEvent{}
}

// until returns the first event named name, skipping others.
func (s *sse) until(t *testing.T, name string) sseEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e := s.next(t, time.Until(deadline))
		if e.Name == name {
			return e
		}
	}
}

// The stream of changes, through the edge as make run serves it: what is
// written comes as it is projected, in the bodies GET answers with; a
// stream sees its own organization only; Last-Event-ID resumes; a revoked
// token ends the stream; idle streams get heartbeats; bad requests are
// 400s.
func TestLiveStream(t *testing.T) {
	s := newStack(t, stackOptions{readers: 2, edge: true, env: []string{"LIVE_HEARTBEAT=500ms"}})
	edge, w := s.Edge.URL(), s.Writer.URL()
	writerCmd(t, s, "org", "create", "other")
	mine, theirs := token(t, s, "default", "read,write", "--name", "streams"), token(t, s, "other", "read,write")

	all := openStream(t, edge+"/v1/stream", mine, "")
	factories := openStream(t, edge+"/v1/stream?kinds=factory", mine, "")
	other := openStream(t, edge+"/v1/stream", theirs, "")
	for _, st := range []*sse{all, factories, other} {
		if e := st.next(t, 5*time.Second); e.Name != "ready" {
			t.Fatalf("first event %+v, want ready", e)
		}
	}

	// A sprocket created: its event holds what GET answers, at once.
	created := do(t, "POST", w+"/v1/sprockets", `{"teeth":11,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, as(mine)...)
	expect(t, created, 201, "create")
	var sp sprocketV1
	created.JSON(t, &sp)
	e := all.until(t, "sprocket.created")
	get := do(t, "GET", edge+"/v1/sprockets/"+sp.ID, nil, as(mine)...)
	if canonical(t, []byte(e.Data)) != canonical(t, get.Body) {
		t.Fatalf("event %s, GET %s", e.Data, get.Body)
	}

	// Samples appended to a factory: the new points, in chart-data's shape.
	var list struct {
		Items []struct{ ID string } `json:"items"`
	}
	do(t, "GET", edge+"/v1/factories", nil, as(mine)...).JSON(t, &list)
	fid := list.Items[0].ID
	expect(t, do(t, "POST", w+"/v1/factories/"+fid+"/samples", `{"samples":[{"time":1900000000,"actual":41,"goal":42}]}`, as(mine)...), 200, "append")
	for _, st := range []*sse{all, factories} {
		e := st.until(t, "factory.samples")
		var got struct {
			FactoryID string `json:"factory_id"`
			Version   int64  `json:"version"`
			ChartData struct {
				Actual []int64 `json:"sprocket_production_actual"`
				Goal   []int64 `json:"sprocket_production_goal"`
				Time   []int64 `json:"time"`
			} `json:"chart_data"`
		}
		if err := json.Unmarshal([]byte(e.Data), &got); err != nil {
			t.Fatal(err)
		}
		if got.FactoryID != fid || fmt.Sprint(got.ChartData.Time, got.ChartData.Actual, got.ChartData.Goal) != "[1900000000] [41] [42]" {
			t.Fatalf("samples event %s", e.Data)
		}
	}
	// The factories-only stream got no sprocket event before its samples.
	select {
	case e := <-factories.events:
		t.Fatalf("factories only: got %+v", e)
	default:
	}
	// Another organization's stream got nothing of this one's.
	select {
	case e := <-other.events:
		t.Fatalf("organization other got %+v", e)
	case <-time.After(300 * time.Millisecond):
	}

	// Idle streams get heartbeats (every 500ms here).
	select {
	case <-other.beats:
	case <-time.After(3 * time.Second):
		t.Fatal("no heartbeat within 3s")
	}

	// Resume: what was written while the client was away comes first.
	last := e.ID
	all.resp.Body.Close()
	expect(t, do(t, "PATCH", w+"/v1/sprockets/"+sp.ID, `{"teeth":12}`, as(mine)...), 200, "update")
	again := openStream(t, edge+"/v1/stream?kinds=sprocket", mine, last)
	if e := again.next(t, 10*time.Second); e.Name != "sprocket.updated" || !strings.Contains(e.Data, `"teeth":12`) {
		t.Fatalf("resumed with %+v", e)
	}
	// From the log's start: everything it keeps, the seeds' creations
	// first. From an id it never gave: reload.
	if e := openStream(t, edge+"/v1/stream", mine, "0-0").next(t, 5*time.Second); !strings.HasSuffix(e.Name, ".created") {
		t.Fatalf("resuming from the log's start: %+v, want the seeds' creations", e)
	}
	if e := openStream(t, edge+"/v1/stream", mine, "99999999999999-0").next(t, 5*time.Second); e.Name != "reset" || e.Data != `{"reason":"unknown_id"}` {
		t.Fatalf("resuming from an unknown id: %+v, want a reset", e)
	}

	// Bad requests change nothing and say why.
	for _, bad := range []struct{ url, header, want string }{
		{"/v1/stream?kinds=everything", "", "kinds"},
		{"/v1/stream?factory=fac_nope", "", "factory"},
		{"/v1/stream", "not-an-id", "Last-Event-ID"},
	} {
		checkProblem(t, do(t, "GET", edge+bad.url, nil, append(as(mine), "Last-Event-ID", bad.header)...), 400, bad.want)
	}
	checkProblem(t, do(t, "GET", edge+"/v1/stream", nil, "Authorization", ""), 401, "token")

	// A revoked token's streams end, with the reason.
	writerCmd(t, s, "token", "revoke", tokenID(t, s, "default", "streams"))
	for _, st := range []*sse{again, factories} {
		if e := st.until(t, "end"); e.Data != `{"reason":"unauthenticated"}` {
			t.Fatalf("end event %+v", e)
		}
		select {
		case _, open := <-st.events:
			if open {
				t.Fatal("an event after the end")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the stream stayed open")
		}
	}
	checkProblem(t, do(t, "GET", edge+"/v1/stream", nil, as(mine)...), 401, "revoked")
}

// A stream ends as soon as its client leaves, directly or through the
// edge, not at a heartbeat: until it ends, it counts against the client's
// limit, and a dashboard that reconnects would be refused. Heartbeats are
// a minute apart here, so only the connection's closing can tell.
func TestStreamEndsWhenItsClientLeaves(t *testing.T) {
	s := newStack(t, stackOptions{edge: true, env: []string{"LIVE_HEARTBEAT=1m", "LIVE_MAX_STREAMS_PER_CLIENT=2"}})
	tok := token(t, s, "default", "read", "--name", "dashboard")
	open := func() []*sse {
		streams := []*sse{openStream(t, s.Reader.URL()+"/v1/stream", tok, ""), openStream(t, s.Edge.URL()+"/v1/stream", tok, "")}
		for _, st := range streams {
			if e := st.next(t, 5*time.Second); e.Name != "ready" {
				t.Fatalf("first event %+v, want ready", e)
			}
		}
		return streams
	}
	for round := range 2 {
		for _, st := range open() {
			st.resp.Body.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for metric(t, s.Reader.URL(), "sprockets_live_streams") > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %.0f streams still open 5s after their clients left", round, metric(t, s.Reader.URL(), "sprockets_live_streams"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := metric(t, s.Reader.URL(), `sprockets_live_streams_ended_total{reason="client_gone"}`); n != 4 {
		t.Errorf("%.0f streams ended as their clients left, want 4", n)
	}
}
