package writer

import (
	"net/http"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// newFactory is the body of POST /v1/factories: a name and, optionally, a
// first history either as samples or in the original chart_data shape.
type newFactory struct {
	Name      string            `json:"name"`
	Samples   []domain.Sample   `json:"samples,omitempty"`
	ChartData *domain.ChartData `json:"chart_data,omitempty"`
}

// history returns the request's samples, validated.
func (n newFactory) history() ([]domain.Sample, error) {
	samples := n.Samples
	if n.ChartData != nil {
		if len(samples) > 0 {
			return nil, domain.Errorf(domain.EINVALID, "send samples or chart_data, not both")
		}
		var err error
		if samples, err = n.ChartData.Samples(); err != nil {
			return nil, err
		}
	}
	return samples, domain.ValidateSamples(samples)
}

// POST /v1/factories
func (h *Handlers) createFactory(c *fiber.Ctx) error {
	var in newFactory
	if err := httpapi.Decode(c, &in, httpapi.JSON); err != nil {
		return err
	}
	spec := domain.FactorySpec{Name: in.Name}
	if err := spec.Validate(); err != nil {
		return err
	}
	samples, err := in.history()
	if err != nil {
		return err
	}
	idem, err := idempotency(c, "v1-create-factory", struct {
		Name    string          `json:"name"`
		Samples []domain.Sample `json:"samples"`
	}{spec.Name, samples})
	if err != nil {
		return err
	}
	actor := httpapi.ActorOf(c)
	f, r, err := h.store.CreateFactory(c.UserContext(), actor, spec, samples, idem)
	if err != nil {
		return err
	}
	h.committed(c, actor.OrgID, events.Factory, f.ID, r, readmodel.VersionETag(f.Version))
	c.Location("/v1/factories/" + h.ids.Encode(publicid.Factory, f.ID))
	return sendJSON(c, http.StatusCreated, readmodel.FactoryBody(h.ids, f))
}

// PUT /v1/factories/:id
func (h *Handlers) replaceFactory(c *fiber.Ctx) error {
	var spec domain.FactorySpec
	if err := httpapi.Decode(c, &spec, httpapi.JSON); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	return h.updateFactory(c, func(domain.FactorySpec) domain.FactorySpec { return spec })
}

// PATCH /v1/factories/:id (JSON merge patch)
func (h *Handlers) patchFactory(c *fiber.Ctx) error {
	var patch domain.FactoryPatch
	if err := httpapi.Decode(c, &patch, httpapi.MergePatch, httpapi.JSON); err != nil {
		return err
	}
	return h.updateFactory(c, patch.Apply)
}

func (h *Handlers) updateFactory(c *fiber.Ctx, change func(domain.FactorySpec) domain.FactorySpec) error {
	t, err := h.v1Target(c, publicid.Factory, events.Factory)
	if err != nil {
		return err
	}
	ifVersion, err := httpapi.IfMatch(c)
	if err != nil {
		return err
	}
	actor := httpapi.ActorOf(c)
	f, r, err := h.store.UpdateFactory(c.UserContext(), actor, t.id, ifVersion, change)
	if err != nil {
		return t.named(err, events.Factory)
	}
	h.committed(c, actor.OrgID, events.Factory, t.id, r, readmodel.VersionETag(f.Version))
	return sendJSON(c, http.StatusOK, readmodel.FactoryBody(h.ids, f))
}

// DELETE /v1/factories/:id
func (h *Handlers) deleteFactory(c *fiber.Ctx) error {
	t, err := h.v1Target(c, publicid.Factory, events.Factory)
	if err != nil {
		return err
	}
	ifVersion, err := httpapi.IfMatch(c)
	if err != nil {
		return err
	}
	actor := httpapi.ActorOf(c)
	r, err := h.store.DeleteFactory(c.UserContext(), actor, t.id, ifVersion)
	if err != nil {
		return t.named(err, events.Factory)
	}
	h.committed(c, actor.OrgID, events.Factory, t.id, r, "")
	return c.SendStatus(http.StatusNoContent)
}

// POST /v1/factories/:id/samples
func (h *Handlers) appendSamples(c *fiber.Ctx) error {
	t, err := h.v1Target(c, publicid.Factory, events.Factory)
	if err != nil {
		return err
	}
	var in struct {
		Samples []domain.Sample `json:"samples"`
	}
	if err := httpapi.Decode(c, &in, httpapi.JSON); err != nil {
		return err
	}
	if len(in.Samples) == 0 {
		return domain.Errorf(domain.EINVALID, "samples: send at least one sample")
	}
	if err := domain.ValidateSamples(in.Samples); err != nil {
		return err
	}
	ifVersion, err := httpapi.IfMatch(c)
	if err != nil {
		return err
	}
	actor := httpapi.ActorOf(c)
	f, added, r, err := h.store.AppendSamples(c.UserContext(), actor, t.id, ifVersion, in.Samples)
	if err != nil {
		return t.named(err, events.Factory)
	}
	h.committed(c, actor.OrgID, events.Factory, t.id, r, readmodel.VersionETag(f.Version))
	c.Set("X-Samples-Added", strconv.Itoa(added))
	return sendJSON(c, http.StatusOK, readmodel.FactoryBody(h.ids, f))
}
