package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// ServerConfig is what every HTTP server of the service is configured with.
type ServerConfig struct {
	Name string
	// Addr is where Serve listens; ShutdownGrace how long it lets requests
	// in flight finish when it stops.
	Addr          string
	ShutdownGrace time.Duration
	BodyLimit     int
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	IdleTimeout   time.Duration
	// AccessLog, when not nil, gets a line per answered request.
	AccessLog *AccessLog
	// TrustedProxies may say, in X-Forwarded-For, which client they forward
	// for; from anyone else the header is ignored.
	TrustedProxies []string
	// TLSCertFile and TLSKeyFile, when set, make the server speak HTTPS
	// (TLS 1.2 at least), and its answers carry Strict-Transport-Security.
	TLSCertFile, TLSKeyFile string
}

// NewApp returns a Fiber app with the service's common behaviour: errors as
// problem+json, request ids, security headers, request metrics registered
// with reg, and the access log cfg names.
func NewApp(cfg ServerConfig, log *slog.Logger, reg prometheus.Registerer) *fiber.App {
	onError := ErrorHandler(log)
	app := fiber.New(fiber.Config{
		AppName:               cfg.Name,
		ErrorHandler:          onError,
		BodyLimit:             cfg.BodyLimit,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		ReadBufferSize:        16 * 1024, // the largest request head accepted
		DisableStartupMessage: true,
		CaseSensitive:         true,
		// The client address (audit, rate limits) comes from X-Forwarded-For
		// only when a trusted proxy (the edge) sent it.
		ProxyHeader:             fiber.HeaderXForwardedFor,
		EnableTrustedProxyCheck: true,
		TrustedProxies:          cfg.TrustedProxies,
		EnableIPValidation:      true,
	})
	headers := securityHeaders
	if cfg.TLSCertFile != "" {
		headers = func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderStrictTransportSecurity, "max-age=31536000; includeSubDomains")
			return securityHeaders(c)
		}
	}
	app.Use(newRequestIDs().handle, headers, newMetrics(reg).observe(cfg.AccessLog, onError))
	return app
}

// Serve runs app (made by NewApp with cfg) on cfg.Addr until ctx is done,
// then shuts it down gracefully, letting requests in flight finish for up
// to cfg.ShutdownGrace. With a certificate and key it serves HTTPS, TLS 1.2
// and later. ready, if not nil, is called with the bound address once the
// server accepts connections.
func Serve(ctx context.Context, app *fiber.App, cfg ServerConfig, ready func(net.Addr)) error {
	addr, grace := cfg.Addr, cfg.ShutdownGrace
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	if err := app.ShutdownWithTimeout(grace); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	return nil
}
