package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// Every program stops on SIGTERM under load within its grace, with exit
// code 0: the requests it had taken are answered (never a 5xx), every
// create it acknowledged is in the leader, the relay and the projector stop
// at a message boundary, and once all are started again every key
// converges with no event applied twice beyond the batch in hand. Idle, a
// projector stops at once, in the middle of a pull from NATS.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"SHUTDOWN_GRACE=5s", "FETCH_WAIT=10s"}})
	db := leader(t, s)
	var (
		mu       sync.Mutex
		statuses = map[string]int{}
	)
	stop := loadWritesAndReads(s, 3, "/api/sprocket/1", func(kind string, r reply, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			statuses[kind+" no answer"]++ // refused or reset: the program was not taking it
		default:
			statuses[fmt.Sprintf("%s %d", kind, r.Status)]++
		}
	})
	ctx := context.Background()
	duplicates := func() float64 {
		return metric(t, s.Projector.URL(), `sprockets_projector_events_total{outcome="duplicate"}`)
	}
	var before float64 // duplicates the projector saw before the writer's restart
	for _, p := range []*devstack.Program{s.Projector, s.Writer, s.Reader} {
		time.Sleep(700 * time.Millisecond)
		if p == s.Writer {
			before = duplicates()
		}
		took, err := p.Terminate(10 * time.Second)
		if err != nil {
			t.Error(err)
		}
		t.Logf("%s stopped %s after SIGTERM", p.Name, took.Round(time.Millisecond))
		time.Sleep(300 * time.Millisecond)
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	created := stop()
	t.Logf("answers: %v", statuses)
	for kind, n := range statuses {
		var status int
		if _, err := fmt.Sscanf(kind[len(kind)-3:], "%d", &status); err == nil && status >= 500 {
			t.Errorf("%d answers %q", n, kind)
		}
	}
	expectInLeader(t, db, created)
	verifyConverges(t, s, 30*time.Second)
	// Events the writer published before it stopped are not published
	// again (it deletes their rows on the way out): the projector, running
	// since before the writer's restart, saw few duplicates.
	if d := duplicates() - before; d > 16 {
		t.Errorf("%.0f events were applied twice after the restarts", d)
	}
	// The pull that delivered this create stays open for FETCH_WAIT: the
	// projector used to wait it out before stopping.
	r := do(t, "POST", s.Writer.URL()+"/api/sprocket/create/5/6/4/7/", nil)
	expect(t, r, 201, "create")
	eventually(t, s.Reader.URL()+r.Header.Get("Location"), 200, nil)
	took, err := s.Projector.Terminate(10 * time.Second)
	if err != nil {
		t.Error(err)
	}
	if took > time.Second {
		t.Errorf("the idle projector stopped %s after SIGTERM", took.Round(time.Millisecond))
	}
}
