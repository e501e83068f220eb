package natsjs

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/events"
)

// A pull that the server ends without telling the client is not waited
// out. nats-server 2.9 does that when a message comes in just after a pull
// expired: it drops the pull and sends no 408, and the client library then
// waits a second past the pull's expiry after the last message it got,
// while the events that came in wait in the stream (measured in the
// benchmark: a 3 s pause of the projector). Here a proxy between the
// runner and a real server drops every 408, so that every pull that
// expires ends that way.
func TestAPullEndedWithoutAWordIsNotWaitedOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	direct, err := Connect(server.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.EnsureStream(ctx, StreamConfig{Name: "QUIET", Subjects: []string{"quiet.>"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	proxied, err := Connect(dropTimeouts(t, server.URL()), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer proxied.Close()
	pc, _, err := proxied.EnsureConsumer(ctx, ConsumerConfig{Stream: "QUIET", Durable: "worker", Filter: "quiet.>", AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	const wait = 300 * time.Millisecond
	handled := make(chan time.Time, 10)
	runner := NewRunner(proxied, RunConfig{Batch: 10, Wait: wait, ParkAfter: 5}, log, prometheus.NewRegistry())
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(rctx, pc, func(_ context.Context, bodies [][]byte) []error {
			for range bodies {
				handled <- time.Now()
			}
			return make([]error, len(bodies))
		})
	}()
	defer func() { stop(); <-done }()

	// Each event comes after the runner's pull expired unannounced.
	var worst time.Duration
	for i := range 4 {
		time.Sleep(wait + 100*time.Millisecond)
		sent := time.Now()
		if errs := direct.PublishAll(ctx, []events.Outgoing{{ID: "e" + strconv.Itoa(i), Subject: "quiet.1", Body: []byte("x")}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		select {
		case at := <-handled:
			worst = max(worst, at.Sub(sent))
		case <-time.After(5 * time.Second):
			t.Fatal("the event was not handled in 5 s")
		}
	}
	// The library alone waits up to a second past the expiry; the runner
	// gives a pull a quarter of a second past it.
	if worst > 700*time.Millisecond {
		t.Errorf("an event waited %s for a pull after the last one ended unannounced (pulls wait %s)", worst, wait)
	}
}

// dropTimeouts starts a proxy to the NATS server at url that passes
// everything on except the server's 408 status messages (a pull request
// that expired), and returns its URL.
func dropTimeouts(t *testing.T, url string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dropped atomic.Int64
	t.Cleanup(func() { t.Logf("the proxy dropped %d 408s", dropped.Load()) })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			srv, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
			if err != nil {
				client.Close()
				continue
			}
			go func() { _, _ = io.Copy(srv, client); srv.Close() }()
			go func() {
				defer client.Close()
				r := bufio.NewReader(srv)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					var payload []byte
					if f := bytes.Fields(line); len(f) > 0 && (string(f[0]) == "MSG" || string(f[0]) == "HMSG") {
						n, _ := strconv.Atoi(string(f[len(f)-1]))
						payload = make([]byte, n+2) // and its CRLF
						if _, err := io.ReadFull(r, payload); err != nil {
							return
						}
						if string(f[0]) == "HMSG" && bytes.Contains(payload, []byte(" 408 ")) {
							dropped.Add(1)
							continue
						}
					}
					if _, err := client.Write(append(line, payload...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}
