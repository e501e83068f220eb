package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerConfig describes the projector's durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filter  string
	AckWait time.Duration
}

// Consumer pulls messages from a durable consumer.
type Consumer struct {
	c jetstream.Consumer
}

// EnsureConsumer creates the durable consumer or updates it to cfg, and
// reports whether it had to create it: a consumer that is new where the
// read model was built before means events were lost with the broker's
// store. Messages are acknowledged one by one, and redelivered without
// limit: the projector itself parks a message that keeps failing.
func (c *Conn) EnsureConsumer(ctx context.Context, cfg ConsumerConfig) (cons *Consumer, created bool, err error) {
	_, err = c.JS.Consumer(ctx, cfg.Stream, cfg.Durable)
	switch {
	case gone(err):
		created = true
	case err != nil:
		return nil, false, fmt.Errorf("look up consumer %s: %w", cfg.Durable, err)
	}
	jc, err := c.JS.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		FilterSubject: cfg.Filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
		MaxAckPending: 10_000,
	})
	if err != nil {
		return nil, false, fmt.Errorf("ensure consumer %s: %w", cfg.Durable, err)
	}
	return &Consumer{c: jc}, created, nil
}

// gone reports whether err says the consumer or its stream does not exist.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// Msg is one delivered message.
type Msg = jetstream.Msg

// Fetch pulls up to max messages, waiting about wait for them, and calls
// handle as they arrive: with each message and whichever others are already
// waiting, so that a burst is handled as one batch. When ctx ends, Fetch
// returns between batches without waiting the pull out (a program told to
// stop waited up to FETCH_WAIT); what the pull still delivers is
// negatively acknowledged as it comes, to be redelivered after pullGrace,
// not after the acknowledgement wait.
//
// A pull is given pullGrace past its expiry, then given up the same way:
// nats-server 2.9 ends a pull without a word when a message comes in just
// after it expired, and the client library waits a second past the expiry
// after the last message it got, while new events wait in the stream.
func (c *Consumer) Fetch(ctx context.Context, max int, wait time.Duration, handle func([]Msg)) error {
	if ctx.Err() != nil {
		return nil
	}
	expired := time.NewTimer(wait + pullGrace)
	defer expired.Stop()
	batch, err := c.c.Fetch(max, jetstream.FetchMaxWait(wait))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	ch := batch.Messages()
	// refuse negatively acknowledges msgs, then what the pull still
	// delivers, until its channel closes (when the server ends the pull,
	// or the library gives it up). Each is held back for pullGrace: at
	// once, the server would hand it to the oldest pull it still serves,
	// which may be this one, and every round counts as a delivery toward
	// parking.
	refuse := func(msgs []Msg) {
		for _, m := range msgs {
			_ = m.NakWithDelay(pullGrace)
		}
		go func() {
			for m := range ch {
				_ = m.NakWithDelay(pullGrace)
			}
		}()
	}
	// end says how the pull ended once its channel is closed.
	end := func() error {
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("fetch: %w", err)
		}
		return nil
	}
	for {
		var msgs []Msg
		select {
		case <-ctx.Done():
			refuse(nil)
			return nil
		case m, ok := <-ch:
			if !ok {
				return end()
			}
			msgs = append(msgs, m)
		case <-expired.C:
			// Past the pull's expiry and grace: what it delivered is
			// handled, then it is given up.
			var closed bool
			if msgs, closed = ready(ch, nil); len(msgs) == 0 {
				if closed {
					return end()
				}
				refuse(nil)
				return nil
			}
			expired.Reset(0)
		}
		msgs, _ = ready(ch, msgs) // a closed channel is seen next round
		if ctx.Err() != nil {
			refuse(msgs)
			return nil
		}
		handle(msgs)
	}
}

// ready appends to msgs the messages waiting in ch, without waiting for
// more, and reports whether ch is closed.
func ready(ch <-chan Msg, msgs []Msg) ([]Msg, bool) {
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return msgs, true
			}
			msgs = append(msgs, m)
		default:
			return msgs, false
		}
	}
}

// pullGrace is how long past its expiry a pull is waited for. The server
// counts the expiry from when it got the request, a little after Fetch
// sent it; a message it still delivers after pullGrace is negatively
// acknowledged, and redelivered pullGrace later to the pull then waiting.
const pullGrace = 250 * time.Millisecond

// ErrConsumerLost says that the consumer, or its stream, no longer exists
// on the server: it was deleted, or the server lost its store.
var ErrConsumerLost = errors.New("the consumer or its stream is gone")

// Pending returns how many messages the consumer has yet to deliver plus
// those delivered but not acknowledged. It returns ErrConsumerLost when the
// consumer is gone.
func (c *Consumer) Pending(ctx context.Context) (uint64, error) {
	info, err := c.c.Info(ctx)
	if gone(err) {
		return 0, fmt.Errorf("consumer info: %w (%w)", ErrConsumerLost, err)
	}
	if err != nil {
		return 0, fmt.Errorf("consumer info: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// Deliveries returns how many times msg has been delivered, 1 on the first.
func Deliveries(msg Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil {
		return 1
	}
	return md.NumDelivered
}
