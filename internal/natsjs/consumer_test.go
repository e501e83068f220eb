package natsjs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	url, dropped := dropTimeouts(t, server.URL())
	proxied, err := Connect(url, "test", log)
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

	// Each event comes after the runner's pull expired unannounced. Their
	// ids are new on every run: the stream drops a repeated one.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var worst time.Duration
	for i := range 4 {
		time.Sleep(wait + 100*time.Millisecond)
		sent := time.Now()
		if errs := direct.PublishAll(ctx, []events.Outgoing{{ID: run + "-" + strconv.Itoa(i), Subject: "quiet.1", Body: []byte("x")}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		select {
		case at := <-handled:
			worst = max(worst, at.Sub(sent))
		case <-time.After(5 * time.Second):
			t.Fatal("the event was not handled in 5 s")
		}
	}
	if dropped.Load() == 0 {
		t.Fatal("the proxy dropped no 408: the test no longer makes pulls end unannounced")
	}
	// The library alone waits up to a second past the expiry; the runner
	// gives a pull a quarter of a second past it.
	if worst > 700*time.Millisecond {
		t.Errorf("an event waited %s for a pull after the last one ended unannounced (pulls wait %s)", worst, wait)
	}
}

// dropTimeouts starts a proxy to the NATS server at url that passes
// everything on except the server's 408 status messages (a pull request
// that expired), and returns its URL and the count of those it dropped.
func dropTimeouts(t *testing.T, url string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dropped := new(atomic.Int64)
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
	return "nats://" + ln.Addr().String(), dropped
}

// What a pull delivered is handled even when its grace ran out while an
// earlier batch was handled, and how the pull ended is still reported:
// the logic of Fetch alone, on a pull made up here. After such a batch the
// closed pull and the spent grace are both ready, and either may be seen
// first: eight rounds make a lucky pass unlikely.
func TestAPullOutlivedByItsHandlingIsReadToItsEnd(t *testing.T) {
	lost := errors.New("consumer deleted")
	for round, end := range []error{nil, lost, lost, lost, lost, lost, lost, lost, lost} {
		var refused atomic.Int64
		ch := make(chan jetstream.Msg, 3)
		ch <- &madeUpMsg{refused: &refused}
		cons := &Consumer{c: madeUpConsumer{batch: &madeUpBatch{ch: ch, err: end}}}
		var handled int
		err := cons.Fetch(context.Background(), 10, time.Millisecond, func(msgs []Msg) {
			if handled == 0 {
				// The pull delivers one more and ends while the first is
				// handled, for longer than the pull and its grace.
				ch <- &madeUpMsg{refused: &refused}
				close(ch)
				time.Sleep(pullGrace + 10*time.Millisecond)
			}
			handled += len(msgs)
		})
		if handled != 2 || refused.Load() != 0 {
			t.Errorf("round %d: of the 2 messages delivered, %d were handled and %d refused", round, handled, refused.Load())
		}
		if !errors.Is(err, end) || (end == nil) != (err == nil) {
			t.Errorf("round %d: the pull ended with %v, Fetch said %v", round, end, err)
		}
	}
}

type madeUpConsumer struct {
	jetstream.Consumer
	batch jetstream.MessageBatch
}

func (c madeUpConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return c.batch, nil
}

type madeUpBatch struct {
	ch  chan jetstream.Msg
	err error
}

func (b *madeUpBatch) Messages() <-chan jetstream.Msg { return b.ch }
func (b *madeUpBatch) Error() error                   { return b.err }

// madeUpMsg counts its refusals; Fetch calls no other method of it.
type madeUpMsg struct {
	jetstream.Msg
	refused *atomic.Int64
}

func (m *madeUpMsg) Nak() error                       { m.refused.Add(1); return nil }
func (m *madeUpMsg) NakWithDelay(time.Duration) error { m.refused.Add(1); return nil }
