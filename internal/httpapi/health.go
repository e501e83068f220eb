package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
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
// GET /metrics (Prometheus, from gatherer). A failed check reads
// "unavailable"; what failed, which may name hosts and users, goes to log
// alone. Readiness and metrics are for probes and scrapers on the
// program's own port: a request that came through a proxy (it carries
// X-Forwarded-For, which the edge always sets) gets 404, however its path
// was spelt.
func Health(app fiber.Router, required, optional map[string]Check, gatherer prometheus.Gatherer, log *slog.Logger) {
	app.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	app.Get("/readyz", internal, func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		report := fiber.Map{}
		ready := run(ctx, required, report, log)
		run(ctx, optional, report, log)
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		return c.Status(status).JSON(fiber.Map{"ready": ready, "checks": report})
	})
	app.Get("/metrics", internal, adaptor.HTTPHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
}

// internal refuses requests that came through a proxy.
func internal(c *fiber.Ctx) error {
	if c.Get(fiber.HeaderXForwardedFor) != "" {
		return fiber.ErrNotFound
	}
	return c.Next()
}

func run(ctx context.Context, checks map[string]Check, report fiber.Map, log *slog.Logger) bool {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	ok := true
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			log.Warn("readiness check failed", "check", n, "err", err)
			report[n] = "unavailable"
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

// Probe asks the server listening on addr (as configured, e.g. ":8081") for
// /healthz and reports whether it answered 200: the `healthcheck`
// subcommand of each program, for container healthchecks in images that
// have no shell or HTTP client.
func Probe(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: /healthz answered %d", resp.StatusCode)
	}
	return nil
}
