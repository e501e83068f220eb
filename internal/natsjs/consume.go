package natsjs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/progress"
)

// Handler processes message bodies in order and returns one error per
// body. A nil error acknowledges the message. An EINVALID *domain.Error says
// the message can never be processed: it is parked at once. Any other error
// is retried with backoff, and parked after ParkAfter deliveries.
type Handler func(ctx context.Context, bodies [][]byte) []error

// RunConfig tunes Run.
type RunConfig struct {
	Batch     int           // messages per pull request
	Wait      time.Duration // how long a pull request waits for messages
	ParkAfter uint64        // deliveries after which a failing message is parked
	// AckWait is the consumer's: a batch handled for longer is kept from
	// redelivery by in-progress acknowledgements, sent every third of it.
	AckWait time.Duration
	// StuckAfter is how long events may be pending with none settled
	// before the runner calls itself stuck (Stuck); 0 means a minute.
	StuckAfter time.Duration
}

// Runner pulls from a consumer and hands each message to a handler.
type Runner struct {
	conn    *Conn
	cfg     RunConfig
	log     *slog.Logger
	parked  prometheus.Counter
	failed  prometheus.Counter
	pending prometheus.Gauge
	// progress tells a stuck runner (events pending, none settled) from an
	// idle or busy one.
	progress *progress.Watch
}

// NewRunner returns a Runner; its metrics are registered with reg.
func NewRunner(conn *Conn, cfg RunConfig, log *slog.Logger, reg prometheus.Registerer) *Runner {
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = time.Minute
	}
	r := &Runner{
		progress: progress.New("projector", cfg.StuckAfter, reg),
		conn:     conn, cfg: cfg, log: log,
		parked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_projector_parked_total", Help: "Messages parked because they could not be processed.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_projector_failures_total", Help: "Message deliveries that failed and will be retried.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_projection_pending_events", Help: "Events in the stream not yet applied and acknowledged.",
		}),
	}
	reg.MustRegister(r.parked, r.failed, r.pending)
	return r
}

// Stuck returns an error while events have been pending, with none
// settled, for longer than RunConfig.StuckAfter: a readiness check.
func (r *Runner) Stuck(ctx context.Context) error { return r.progress.Check(ctx) }

// checkEvery is how often Run asks the server about its consumer: for the
// pending-events gauge, and to learn that the consumer is gone.
const checkEvery = 2 * time.Second

// Run consumes from cons until ctx is done, and returns ctx's error; a
// broker outage is waited out. When the consumer or its stream no longer
// exists on the server, it returns ErrConsumerLost: pulls from a consumer
// that is gone would wait for messages forever.
func (r *Runner) Run(ctx context.Context, cons *Consumer, handle Handler) error {
	var (
		backoff   time.Duration
		lastCheck time.Time
	)
	// Whatever waited while the runner was not running (a rebuild at
	// start) is judged from now.
	r.progress.Done()
	for ctx.Err() == nil {
		err := cons.Fetch(ctx, r.cfg.Batch, r.cfg.Wait, func(msgs []Msg) {
			r.process(ctx, msgs, handle)
		})
		if ctx.Err() != nil {
			break
		}
		if err != nil || time.Since(lastCheck) >= checkEvery {
			lastCheck = time.Now()
			n, perr := cons.Pending(ctx)
			if errors.Is(perr, ErrConsumerLost) {
				return perr
			}
			if perr == nil {
				r.pending.Set(float64(n))
				r.progress.Waiting(int64(n))
			}
		}
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		r.log.Warn("pull from stream", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return ctx.Err()
}

func (r *Runner) process(ctx context.Context, msgs []Msg, handle Handler) {
	bodies := make([][]byte, len(msgs))
	for i, m := range msgs {
		bodies[i] = m.Data()
	}
	stop := r.keepAlive(msgs)
	errs := handle(ctx, bodies)
	stop()
	for i, err := range errs {
		r.settle(ctx, msgs[i], err)
	}
}

// keepAlive tells the server, every third of AckWait until stop is called,
// that msgs are still being worked on: long work (a large deletion, a
// rebuild) is not redelivered, to this projector or another, meanwhile.
func (r *Runner) keepAlive(msgs []Msg) (stop func()) {
	if r.cfg.AckWait <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(r.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// settle acknowledges, retries or parks msg after handling gave err.
func (r *Runner) settle(ctx context.Context, msg Msg, err error) {
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			// The effect is applied; a redelivery will be dropped as a
			// duplicate by the version rule.
			r.log.Warn("ack", "subject", msg.Subject(), "err", aerr)
		}
		r.progress.Done()
		return
	}
	deliveries := Deliveries(msg)
	if domain.ErrorCode(err) == domain.EINVALID || deliveries >= r.cfg.ParkAfter {
		r.park(ctx, msg, err)
		return
	}
	r.failed.Inc()
	delay := min(time.Duration(deliveries)*200*time.Millisecond, 5*time.Second)
	r.log.Warn("message failed, will retry", "subject", msg.Subject(), "deliveries", deliveries, "err", err)
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		r.log.Warn("nak", "subject", msg.Subject(), "err", nerr)
	}
}

func (r *Runner) park(ctx context.Context, msg Msg, cause error) {
	r.log.Error("parking message", "subject", msg.Subject(), "err", cause)
	if err := r.conn.Park(ctx, msg, cause.Error()); err != nil {
		// Not parked: leave it to be redelivered and parked next time.
		r.log.Error("park failed", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	r.parked.Inc()
	r.progress.Done()
}
