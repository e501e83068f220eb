// Package writer is the write API: every route that changes data, each
// answering with the new state, its version as ETag and a consistency token.
package writer

import (
	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/httpapi"
)

// Routes mounts the whole write API on app.
func Routes(app fiber.Router, h *Handlers) {
	// The original service's routes, now POST as writes should be.
	app.Post("/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", h.compatCreateSprocket)
	app.All("/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))
	app.Post("/api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch", h.compatUpdateSprocket)
	app.All("/api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))

	v1 := app.Group("/v1")
	v1.Post("/sprockets", h.createSprocket)
	v1.Put("/sprockets/:id", h.replaceSprocket)
	v1.Patch("/sprockets/:id", h.patchSprocket)
	v1.Delete("/sprockets/:id", h.deleteSprocket)

	v1.Post("/factories", h.createFactory)
	v1.Put("/factories/:id", h.replaceFactory)
	v1.Patch("/factories/:id", h.patchFactory)
	v1.Delete("/factories/:id", h.deleteFactory)
	v1.Post("/factories/:id/samples", h.appendSamples)
}
