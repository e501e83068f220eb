package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// metric reads one sample of a Prometheus metric from a program.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, name+" "), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// An event that can never be applied is parked and counted; the events
// after it are projected as usual. So is a forged deletion of a live
// organization, which would otherwise fence it out of the read model.
func TestPoisonEventIsParked(t *testing.T) {
	s := newStack(t, stackOptions{})
	nc, err := nats.Connect(s.NATS.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, body := range []string{`{"broken json`, `{"id":"e1","type":"melted","aggregate_type":"sprocket","aggregate_id":1,"org_id":1,"version":9,"payload":{}}`} {
		if _, err := js.Publish(ctx, "events.sprocket.1.created", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// A forged deletion of the live organization 1 would fence it out of
	// the read model for good: Postgres says it is live, so it is parked.
	forged := `{"id":"e2","type":"deleted","aggregate_type":"organization","aggregate_id":1,"org_id":1,"version":1,` +
		`"occurred_at":"2026-01-01T00:00:00Z","payload":{"organization":{"id":1,"name":"default"},"sprockets":[1],"factories":[]}}`
	if _, err := js.Publish(ctx, "events.organization.1.deleted", []byte(forged)); err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", s.Writer.URL()+"/api/sprocket/create/8/8/8/8", nil)
	expect(t, r, 201, "create after the poison")
	var sp struct{ ID int64 }
	r.JSON(t, &sp)
	checkFor(t, 10*time.Second, func() string {
		r := do(t, "GET", fmt.Sprintf("%s/api/sprocket/%d", s.Reader.URL(), sp.ID), nil)
		if r.Status != 200 || !fromReadModel(r.Header.Get("X-Read-Source")) {
			return fmt.Sprintf("the create after the poison: %s from %q, want it from the read model", r, r.Header.Get("X-Read-Source"))
		}
		return ""
	})
	checkFor(t, 10*time.Second, func() string {
		if n := metric(t, s.Projector.URL(), "sprockets_projector_parked_total"); n != 3 {
			return fmt.Sprintf("parked_total %v, want 3", n)
		}
		return ""
	})
	stream, err := js.Stream(ctx, "SPROCKETS_PARKED")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("parked stream holds %d messages (%v), want 3", info.State.Msgs, err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil || msg.Header.Get("Parked-Reason") == "" || msg.Subject != "parked.events.sprocket.1.created" {
		t.Errorf("parked message %+v %v", msg, err)
	}
	forgedParked, err := stream.GetLastMsgForSubject(ctx, "parked.events.organization.1.deleted")
	if err != nil || !strings.Contains(forgedParked.Header.Get("Parked-Reason"), "Postgres holds as live") {
		t.Errorf("the forged deletion was parked for another reason: %+v %v", forgedParked, err)
	}
	// The poison did not touch sprocket 1, which is still in the read model.
	r = do(t, "GET", s.Reader.URL()+"/v1/sprockets/"+sid(s, 1), nil)
	expect(t, r, 200, "sprocket 1")
	if !fromReadModel(r.Header.Get("X-Read-Source")) {
		t.Errorf("sprocket 1 answered from %q, want the read model", r.Header.Get("X-Read-Source"))
	}
	if !strings.Contains(string(r.Body), `"version":1`) {
		t.Errorf("sprocket 1 changed: %s", r.Body)
	}
}
