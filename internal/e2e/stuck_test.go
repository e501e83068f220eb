package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// readiness returns a program's /readyz status and its report of checks.
func readiness(t *testing.T, base string) (int, map[string]string) {
	t.Helper()
	r := do(t, "GET", base+"/readyz", nil)
	var body struct{ Checks map[string]string }
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("readyz: %s", r)
	}
	return r.Status, body.Checks
}

// A pipeline that stops is visible, never silent: the relay with outbox rows
// it cannot publish (NATS away) and the projector with events it cannot
// apply (Redis refusing writes) each say so in their readiness and in
// sprockets_pipeline_stuck once STUCK_AFTER passes, and stop saying so when
// they move again. The writer stays ready: writes still commit.
func TestAStuckPipelineIsVisible(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"STUCK_AFTER=2s"}})
	ctx := context.Background()
	relayStuck := `sprockets_pipeline_stuck{stage="relay"}`
	projectorStuck := `sprockets_pipeline_stuck{stage="projector"}`
	create := func() {
		t.Helper()
		expect(t, do(t, "POST", s.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil), 201, "create")
	}
	if metric(t, s.Writer.URL(), relayStuck) != 0 || metric(t, s.Projector.URL(), projectorStuck) != 0 {
		t.Fatal("stuck before anything happened")
	}

	// The relay: NATS away, writes waiting in the outbox.
	s.NATS.Stop()
	create()
	checkFor(t, 15*time.Second, func() string {
		if v := metric(t, s.Writer.URL(), relayStuck); v != 1 {
			return fmt.Sprintf("%s is %v with NATS away and a row waiting", relayStuck, v)
		}
		status, checks := readiness(t, s.Writer.URL())
		if status != 200 || checks["relay"] != "unavailable" {
			return fmt.Sprintf("writer readiness %d %v, want 200 with the relay reported", status, checks)
		}
		return ""
	})
	if err := s.NATS.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, func() string {
		if v := metric(t, s.Writer.URL(), relayStuck); v != 0 {
			return fmt.Sprintf("%s still %v after NATS came back", relayStuck, v)
		}
		if status, checks := readiness(t, s.Writer.URL()); status != 200 || checks["relay"] != "ok" {
			return fmt.Sprintf("writer readiness %d %v after NATS came back", status, checks)
		}
		return ""
	})

	// The projector: Redis answers, but takes no writes.
	checkFor(t, 30*time.Second, func() string {
		if status, _ := readiness(t, s.Projector.URL()); status != 200 {
			return "the projector is not ready again after NATS came back"
		}
		return ""
	})
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", "20000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	defer rdb.Do(ctx, "CLIENT", "UNPAUSE")
	create()
	checkFor(t, 15*time.Second, func() string {
		if v := metric(t, s.Projector.URL(), projectorStuck); v != 1 {
			return fmt.Sprintf("%s is %v with Redis taking no writes", projectorStuck, v)
		}
		status, checks := readiness(t, s.Projector.URL())
		if status != 503 || checks["pipeline"] != "unavailable" || checks["redis"] != "ok" {
			return fmt.Sprintf("projector readiness %d %v, want 503 for the pipeline alone", status, checks)
		}
		return ""
	})
	if err := rdb.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, func() string {
		if v := metric(t, s.Projector.URL(), projectorStuck); v != 0 {
			return fmt.Sprintf("%s still %v after Redis took writes again", projectorStuck, v)
		}
		if status, checks := readiness(t, s.Projector.URL()); status != 200 {
			return fmt.Sprintf("projector readiness %d %v after Redis took writes again", status, checks)
		}
		return ""
	})
	verifyConverges(t, s, 30*time.Second)
}
