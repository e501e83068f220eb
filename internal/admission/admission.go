// Package admission bounds the work a program takes on at once. Under
// overload, requests beyond the bound wait a short while for room and are
// then refused with a retryable error, instead of queueing for as long as
// the overload lasts: clients see a quick 503 with Retry-After rather than
// a timeout, and the requests that are admitted keep a bounded latency.
package admission

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Gate admits at most its limit of callers at once.
type Gate struct {
	slots   chan struct{}
	wait    time.Duration
	refused prometheus.Counter
}

// New returns a gate named name (its metrics' label) that admits limit
// callers at once and lets others wait at most wait for room.
func New(name string, limit int, wait time.Duration, reg prometheus.Registerer) *Gate {
	g := &Gate{slots: make(chan struct{}, limit), wait: wait}
	labels := prometheus.Labels{"gate": name}
	g.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sprockets_admission_refused_total", ConstLabels: labels,
		Help: "Requests refused with 503 because the gate stayed full for its whole wait.",
	})
	reg.MustRegister(g.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sprockets_admission_in_flight", ConstLabels: labels,
			Help: "Requests the gate has admitted and that have not left it.",
		}, func() float64 { return float64(len(g.slots)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sprockets_admission_limit", ConstLabels: labels,
			Help: "Requests the gate admits at once.",
		}, func() float64 { return float64(cap(g.slots)) }))
	return g
}

// Enter admits the caller, waiting at most the gate's wait for room, and
// returns the function that lets it out: call it once, when the work is
// done. When no room comes free in time, or ctx ends first, it returns a
// domain.EUNAVAILABLE error (a 503 with Retry-After).
func (g *Gate) Enter(ctx context.Context) (leave func(), err error) {
	select {
	case g.slots <- struct{}{}:
		return g.leave, nil
	default:
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return g.leave, nil
	case <-t.C:
	case <-ctx.Done():
	}
	g.refused.Inc()
	return nil, domain.Errorf(domain.EUNAVAILABLE, "overloaded: %d requests are in progress; retry in a second", cap(g.slots))
}

func (g *Gate) leave() { <-g.slots }
