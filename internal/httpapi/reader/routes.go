// Package reader is the read API. Every answer comes from the read model in
// Redis when it is there and fresh enough, else from a replica within the
// lag bound, else from the leader; all three give the same bytes.
package reader

import (
	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/httpapi"
)

const readMethods = "GET, HEAD"

// Routes mounts the whole read API on app.
func Routes(app fiber.Router, h *Handlers) {
	get := func(path string, handler fiber.Handler) {
		app.Get(path, handler)
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

	get("/v1/openapi.json", h.openAPI)
	get("/v1/sprockets", h.listSprockets)
	get("/v1/sprockets/:id", h.sprocket)
	get("/v1/factories", h.listFactories)
	get("/v1/factories/:id", h.factory)
	get("/v1/factories/:id/chart-data", h.chartData)
}
