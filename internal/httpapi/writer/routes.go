// Package writer is the write API: every route that changes data, each
// answering with the new state, its version as ETag and a consistency token.
package writer

import (
	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
)

// Routes mounts the whole write API on app. Every route needs the write
// scope.
func Routes(app fiber.Router, h *Handlers) {
	write := httpapi.Require(domain.ScopeWrite)

	// The original service's routes, now POST as writes should be.
	app.Post("/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", write, h.compatCreateSprocket)
	app.All("/api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))
	app.Post("/api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch", write, h.compatUpdateSprocket)
	app.All("/api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch", httpapi.MethodNotAllowed("POST"))

	v1 := app.Group("/v1")
	v1.Post("/sprockets", write, h.createSprocket)
	v1.Put("/sprockets/:id", write, h.replaceSprocket)
	v1.Patch("/sprockets/:id", write, h.patchSprocket)
	v1.Delete("/sprockets/:id", write, h.deleteSprocket)

	v1.Post("/factories", write, h.createFactory)
	v1.Put("/factories/:id", write, h.replaceFactory)
	v1.Patch("/factories/:id", write, h.patchFactory)
	v1.Delete("/factories/:id", write, h.deleteFactory)
	v1.Post("/factories/:id/samples", write, h.appendSamples)
}
