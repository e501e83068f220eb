// Package natsjs connects to NATS JetStream: it ensures the event stream and
// the projector's durable consumer exist, publishes with a message id for
// de-duplication, and pulls messages for the projector. It is written to the
// JetStream API of nats-server 2.9.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sprockets-api/sprockets/internal/events"
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// reconnected holds a signal after each reconnection, for KeepStream:
	// a server that comes back may have lost its store.
	reconnected chan struct{}
}

// Connect dials url. The connection reconnects forever in the background,
// so a NATS outage delays publishing and consuming but never ends them;
// Connect itself returns at once even when NATS is down.
func Connect(url, name string, log *slog.Logger) (*Conn, error) {
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1), // fail fast while disconnected; the outbox keeps the data
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Conn{NC: nc, JS: js, reconnected: reconnected}, nil
}

// Close drains nothing and closes the connection.
func (c *Conn) Close() { c.NC.Close() }

// Ping reports whether the server answers a round trip within ctx.
func (c *Conn) Ping(ctx context.Context) error {
	if !c.NC.IsConnected() {
		return errors.New("nats: not connected")
	}
	return c.NC.FlushWithContext(ctx)
}

// StreamConfig describes the event stream.
type StreamConfig struct {
	Name     string
	Subjects []string
	MaxAge   time.Duration
	Replicas int
}

// EnsureStream creates the stream or updates it to cfg. The duplicate window
// is JetStream's default; correctness never depends on it.
func (c *Conn) EnsureStream(ctx context.Context, cfg StreamConfig) error {
	_, err := c.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     cfg.MaxAge,
		Replicas:   max(cfg.Replicas, 1),
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return nil
}

// streamCheck is how often KeepStream looks for its stream when nothing
// suggests it is gone.
const streamCheck = 5 * time.Second

// KeepStream creates the stream or updates it to cfg, retrying while NATS
// is down, then keeps it: after every reconnection, and every few seconds,
// it checks that the stream still exists, and creates it again if the
// server lost it (restarted without its store). Publishes fail until then;
// the outbox keeps their events. It returns when ctx is done.
func (c *Conn) KeepStream(ctx context.Context, cfg StreamConfig, log *slog.Logger) error {
	ensure := func(ctx context.Context) error { return c.EnsureStream(ctx, cfg) }
	if err := Retry(ctx, log, "ensure stream", 5*time.Second, ensure); err != nil || ctx.Err() != nil {
		return err
	}
	t := time.NewTicker(streamCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.reconnected:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.JS.Stream(cctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			log.Warn("stream lost, creating it again", "stream", cfg.Name)
			err = c.EnsureStream(cctx, cfg)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("check stream", "stream", cfg.Name, "err", err)
		}
	}
}

// Retry calls fn until it succeeds or ctx is done, backing off up to 5s
// between attempts; each attempt gets at most attempt (0: no limit but
// ctx's). It returns nil on success and nothing else: a broker that is
// down at start is waited for, not fatal.
func Retry(ctx context.Context, log *slog.Logger, what string, attempt time.Duration, fn func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attempt > 0 {
			actx, cancel = context.WithTimeout(ctx, attempt)
		}
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		log.Warn(what, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// PublishAll sends msgs without waiting for each acknowledgement in turn,
// then waits for all of them. The result holds, per message, nil when the
// stream stored it. Each message's id is its Nats-Msg-Id.
func (c *Conn) PublishAll(ctx context.Context, msgs []events.Outgoing) []error {
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		msg := &nats.Msg{Subject: m.Subject, Data: m.Body, Header: nats.Header{}}
		futures[i], errs[i] = c.JS.PublishMsgAsync(msg, jetstream.WithMsgID(m.ID))
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].Subject, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].Subject, ctx.Err())
		}
	}
	return errs
}
