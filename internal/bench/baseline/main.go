// Command baseline is the yardstick of `make bench`: the least a Fiber
// handler can do for each route the benchmark measures, so that the
// service's figures are read as ratios to it, measured in the same run.
//
//	GET  /constant/NAME  the bytes of the file NAME in BODY_DIR, as they are
//	POST /insert         one plain INSERT on DATABASE_URL (autocommit)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string) error {
	bodies := map[string][]byte{}
	files, err := os.ReadDir(getenv("BODY_DIR"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if bodies[f.Name()], err = os.ReadFile(filepath.Join(getenv("BODY_DIR"), f.Name())); err != nil {
			return err
		}
	}
	db, err := sqlx.Open("postgres", getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(20)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bench_baseline (
		id bigserial PRIMARY KEY, teeth bigint, pitch_diameter float8, outside_diameter float8, pitch float8,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/constant/:name", func(c *fiber.Ctx) error {
		body, ok := bodies[c.Params("name")]
		if !ok {
			return fiber.ErrNotFound
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(body)
	})
	app.Post("/insert", func(c *fiber.Ctx) error {
		var id int64
		err := db.GetContext(c.UserContext(), &id,
			`INSERT INTO bench_baseline (teeth, pitch_diameter, outside_diameter, pitch) VALUES (5, 6, 4, 7) RETURNING id`)
		if err != nil {
			return err
		}
		return c.Status(fiber.StatusCreated).JSON(fiber.Map{"id": id})
	})
	go func() {
		<-ctx.Done()
		_ = app.Shutdown()
	}()
	return app.Listen(getenv("BASELINE_ADDR"))
}
