package httpapi

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// Health mounts GET /healthz (the process is alive), GET /readyz (every
// required check passes; optional ones are reported but do not fail it) and
// GET /metrics (Prometheus, from gatherer).
func Health(app fiber.Router, required, optional map[string]Check, gatherer prometheus.Gatherer) {
	app.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		report := fiber.Map{}
		ready := run(ctx, required, report)
		run(ctx, optional, report)
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		return c.Status(status).JSON(fiber.Map{"ready": ready, "checks": report})
	})
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
}

func run(ctx context.Context, checks map[string]Check, report fiber.Map) bool {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	ok := true
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			report[n] = err.Error()
			ok = false
			continue
		}
		report[n] = "ok"
	}
	return ok
}

// NewRegistry returns a metrics registry with the Go runtime and process
// collectors; each component registers its own metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
