// Package reader is the read API. Every answer comes from the read model in
// Redis when it is there and fresh enough, else from a replica within the
// lag bound, else from the leader; all three give the same bytes.
package reader

import (
	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
)

const readMethods = "GET, HEAD"

// Routes mounts the whole read API on app. Every route needs the read
// scope; the audit trail needs admin.
func Routes(app fiber.Router, h *Handlers) {
	read := httpapi.Require(domain.ScopeRead)
	get := func(path string, handler fiber.Handler) {
		app.Get(path, read, handler)
		app.All(path, httpapi.MethodNotAllowed(readMethods))
	}
	// The original service's routes, with its bodies.
	get("/api/factories", h.compatFactories)
	get("/api/factory/:id", h.compatFactory)
	get("/api/factory/:id/chart-data", h.compatChartData)
	get("/api/sprockets", h.compatSprockets)
	get("/api/sprocket/:id", h.compatSprocket)
	// Its write routes answered GET; they are POST now, on the writer.
	app.All("/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))
	app.All("/api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))

	app.Get("/v1/openapi.json", h.openAPI) // public, like the probes
	app.Get("/v1/audit", httpapi.Require(domain.ScopeAdmin), h.audit)
	app.All("/v1/audit", httpapi.MethodNotAllowed(readMethods))
	get("/v1/sprockets", h.listSprockets)
	get("/v1/sprockets/:id", h.sprocket)
	get("/v1/factories", h.listFactories)
	get("/v1/factories/:id", h.factory)
	get("/v1/factories/:id/chart-data", h.chartData)
	get("/v1/stream", h.stream)
}
