package writer

import (
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// pathSpec reads the four sprocket values of the original routes' paths.
func pathSpec(c *fiber.Ctx) (domain.SprocketSpec, error) {
	var s domain.SprocketSpec
	var err error
	if s.Teeth, err = httpapi.PathInteger(c, "teeth"); err != nil {
		return s, err
	}
	if s.PitchDiameter, err = httpapi.PathDecimal(c, "pitch_diameter"); err != nil {
		return s, err
	}
	if s.OutsideDiameter, err = httpapi.PathDecimal(c, "outside_diameter"); err != nil {
		return s, err
	}
	if s.Pitch, err = httpapi.PathDecimal(c, "pitch"); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// POST /api/sprocket/create/:teeth/:pitch_diameter/:outside_diameter/:pitch
func (h *Handlers) compatCreateSprocket(c *fiber.Ctx) error {
	spec, err := pathSpec(c)
	if err != nil {
		return err
	}
	s, err := h.create(c, "compat-create", spec)
	if err != nil {
		return err
	}
	c.Location(location("/api/sprocket/", s.ID))
	return sendJSON(c, http.StatusCreated, readmodel.SprocketCompatBody(s))
}

// POST /api/sprocket/:id/update/:teeth/:pitch_diameter/:outside_diameter/:pitch
func (h *Handlers) compatUpdateSprocket(c *fiber.Ctx) error {
	t, err := compatTarget(c)
	if err != nil {
		return err
	}
	spec, err := pathSpec(c)
	if err != nil {
		return err
	}
	s, err := h.update(c, t, func(domain.SprocketSpec) domain.SprocketSpec { return spec })
	if err != nil {
		return err
	}
	return sendJSON(c, http.StatusOK, readmodel.SprocketCompatBody(s))
}

// POST /v1/sprockets
func (h *Handlers) createSprocket(c *fiber.Ctx) error {
	var spec domain.SprocketSpec
	if err := httpapi.Decode(c, &spec, httpapi.JSON); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	s, err := h.create(c, "v1-create", spec)
	if err != nil {
		return err
	}
	c.Location("/v1/sprockets/" + h.ids.Encode(publicid.Sprocket, s.ID))
	return sendJSON(c, http.StatusCreated, readmodel.SprocketBody(h.ids, s))
}

// PUT /v1/sprockets/:id
func (h *Handlers) replaceSprocket(c *fiber.Ctx) error {
	t, err := h.v1Target(c, publicid.Sprocket, events.Sprocket)
	if err != nil {
		return err
	}
	var spec domain.SprocketSpec
	if err := httpapi.Decode(c, &spec, httpapi.JSON); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	s, err := h.update(c, t, func(domain.SprocketSpec) domain.SprocketSpec { return spec })
	if err != nil {
		return err
	}
	return sendJSON(c, http.StatusOK, readmodel.SprocketBody(h.ids, s))
}

// PATCH /v1/sprockets/:id (JSON merge patch)
func (h *Handlers) patchSprocket(c *fiber.Ctx) error {
	t, err := h.v1Target(c, publicid.Sprocket, events.Sprocket)
	if err != nil {
		return err
	}
	var patch domain.SprocketPatch
	if err := httpapi.Decode(c, &patch, httpapi.MergePatch, httpapi.JSON); err != nil {
		return err
	}
	s, err := h.update(c, t, patch.Apply)
	if err != nil {
		return err
	}
	return sendJSON(c, http.StatusOK, readmodel.SprocketBody(h.ids, s))
}

// DELETE /v1/sprockets/:id
func (h *Handlers) deleteSprocket(c *fiber.Ctx) error {
	t, err := h.v1Target(c, publicid.Sprocket, events.Sprocket)
	if err != nil {
		return err
	}
	ifVersion, err := httpapi.IfMatch(c)
	if err != nil {
		return err
	}
	actor := httpapi.ActorOf(c)
	r, err := h.store.DeleteSprocket(c.UserContext(), actor, t.id, ifVersion)
	if err != nil {
		return t.named(err, events.Sprocket)
	}
	h.committed(c, actor.OrgID, events.Sprocket, t.id, r, "")
	return c.SendStatus(http.StatusNoContent)
}

func (h *Handlers) create(c *fiber.Ctx, route string, spec domain.SprocketSpec) (domain.Sprocket, error) {
	idem, err := idempotency(c, route, spec)
	if err != nil {
		return domain.Sprocket{}, err
	}
	actor := httpapi.ActorOf(c)
	s, r, err := h.store.CreateSprocket(c.UserContext(), actor, spec, idem)
	if err != nil {
		return domain.Sprocket{}, err
	}
	h.committed(c, actor.OrgID, events.Sprocket, s.ID, r, readmodel.VersionETag(s.Version))
	return s, nil
}

func (h *Handlers) update(c *fiber.Ctx, t target, change func(domain.SprocketSpec) domain.SprocketSpec) (domain.Sprocket, error) {
	ifVersion, err := httpapi.IfMatch(c)
	if err != nil {
		return domain.Sprocket{}, err
	}
	actor := httpapi.ActorOf(c)
	s, r, err := h.store.UpdateSprocket(c.UserContext(), actor, t.id, ifVersion, change)
	if err != nil {
		return domain.Sprocket{}, t.named(err, events.Sprocket)
	}
	h.committed(c, actor.OrgID, events.Sprocket, t.id, r, readmodel.VersionETag(s.Version))
	return s, nil
}
