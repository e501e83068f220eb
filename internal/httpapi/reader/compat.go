package reader

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// GET /api/sprockets
func (h *Handlers) compatSprockets(c *fiber.Ctx) error {
	org := h.org(c)
	return h.serve(c, view{
		key: readmodel.OrgSprocketsKey(org), collection: events.Sprocket,
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			all, err := q.SprocketSpecsOfOrg(ctx, org)
			return readmodel.OrgSprocketsRecord(org, all).Entry, err
		},
	})
}

// GET /api/sprocket/:id
func (h *Handlers) compatSprocket(c *fiber.Ctx) error {
	id, err := httpapi.ID(c, "id")
	if err != nil {
		return err
	}
	return h.serveSprocket(c, id, c.Params("id"), readmodel.SprocketCompatKey,
		func(r readmodel.SprocketEndpoints) readmodel.Record { return r.Compat })
}

// GET /v1/sprockets/:id
func (h *Handlers) sprocket(c *fiber.Ctx) error {
	id, err := httpapi.PublicID(c, "id", h.cfg.IDs, publicid.Sprocket, events.Sprocket)
	if err != nil {
		return err
	}
	return h.serveSprocket(c, id, c.Params("id"), readmodel.SprocketKey,
		func(r readmodel.SprocketEndpoints) readmodel.Record { return r.V1 })
}

// serveSprocket serves one of a sprocket's endpoints: the one whose key is
// key, and whose record pick takes from SprocketRecords, for sprocket id,
// which the request names ref.
func (h *Handlers) serveSprocket(c *fiber.Ctx, id int64, ref string, key func(id int64) string,
	pick func(readmodel.SprocketEndpoints) readmodel.Record) error {
	return h.serve(c, view{
		key: key(id), aggregate: events.Sprocket, id: id, ref: ref,
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			s, err := q.Sprocket(ctx, id)
			if err != nil {
				return readmodel.Entry{}, err
			}
			return pick(readmodel.SprocketRecords(h.cfg.IDs, s)).Entry, nil
		},
	})
}
