package admission

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sprockets-api/sprockets/internal/domain"
)

func TestGate(t *testing.T) {
	ctx := context.Background()
	g := New("test", 2, 50*time.Millisecond, prometheus.NewRegistry())
	leaveA, err := g.Enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaveB, err := g.Enter(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Full: the third waits its 50ms, then is refused as unavailable.
	start := time.Now()
	if _, err := g.Enter(ctx); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("a third caller at a limit of two: %v, want EUNAVAILABLE", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond || waited > time.Second {
		t.Errorf("refused after %s, want after the 50ms wait", waited)
	}
	if n := testutil.ToFloat64(g.refused); n != 1 {
		t.Errorf("refused counter %v, want 1", n)
	}

	// Room that comes free during the wait admits the waiting caller.
	patient := New("patient", 1, time.Minute, prometheus.NewRegistry())
	leaveP, err := patient.Enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		leaveP()
	}()
	if leave, err := patient.Enter(ctx); err != nil {
		t.Fatalf("room came free during the wait, yet: %v", err)
	} else {
		leave()
	}
	leaveA()
	leaveC, err := g.Enter(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A caller whose context ends stops waiting at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.Enter(cctx); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("a cancelled caller: %v", err)
	}
	leaveB()
	leaveC()
	if len(g.slots) != 0 {
		t.Errorf("%d slots still taken after everyone left", len(g.slots))
	}
}
