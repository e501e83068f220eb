package natsjs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/events"
)

var server *devstack.NATS

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "natsjs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if server, err = devstack.StartNATS(context.Background(), dir, false); err != nil {
		fmt.Fprintln(os.Stderr, "a real NATS server is required:", err)
		return 1
	}
	defer server.Stop()
	return m.Run()
}

// A batch handled for longer than the consumer's AckWait is not
// redelivered meanwhile: the runner says it is still being worked on.
func TestLongWorkIsKeptAlive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := Connect(server.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.EnsureStream(ctx, StreamConfig{Name: "LONG", Subjects: []string{"long.>"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	const ackWait = 600 * time.Millisecond
	cons, _, err := conn.EnsureConsumer(ctx, ConsumerConfig{Stream: "LONG", Durable: "worker", Filter: "long.>", AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	if errs := conn.PublishAll(ctx, []events.Outgoing{{ID: "one-" + strconv.FormatInt(time.Now().UnixNano(), 36), Subject: "long.1", Body: []byte("work")}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	// Two runners share the consumer, as two projectors do: a message
	// redelivered while the first works on it would go to the second.
	var handled atomic.Int64
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	for range 2 {
		runner := NewRunner(conn, RunConfig{Batch: 10, Wait: 200 * time.Millisecond, ParkAfter: 5, AckWait: ackWait}, log, prometheus.NewRegistry())
		go func() {
			done <- runner.Run(rctx, cons, func(_ context.Context, bodies [][]byte) []error {
				handled.Add(int64(len(bodies)))
				time.Sleep(4 * ackWait) // long work
				return make([]error, len(bodies))
			})
		}()
	}
	time.Sleep(7 * ackWait)
	stop()
	<-done
	<-done
	if n := handled.Load(); n != 1 {
		t.Errorf("the message was handled %d times: it was redelivered while being worked on", n)
	}
}
