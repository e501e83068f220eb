package reader

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// GET /api/factories
func (h *Handlers) compatFactories(c *fiber.Ctx) error {
	org := h.org(c)
	return h.serve(c, view{
		key: readmodel.OrgFactoriesKey(org), collection: events.Factory,
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			all, samples, err := q.FactoriesWithSamples(ctx, org)
			return readmodel.OrgFactoriesRecord(org, all, samples).Entry, err
		},
	})
}

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

// GET /api/factory/:id
func (h *Handlers) compatFactory(c *fiber.Ctx) error {
	return h.serveFactoryCompat(c, 0)
}

// GET /api/factory/:id/chart-data
func (h *Handlers) compatChartData(c *fiber.Ctx) error {
	return h.serveFactoryCompat(c, 1)
}

// serveFactoryCompat serves the which-th of FactoryCompatRecords.
func (h *Handlers) serveFactoryCompat(c *fiber.Ctx, which int) error {
	id, err := httpapi.ID(c, "id")
	if err != nil {
		return err
	}
	keys := []string{readmodel.FactoryCompatKey(id), readmodel.FactoryCompatChartKey(id)}
	org := h.org(c)
	return h.serve(c, view{
		key: keys[which], aggregate: events.Factory, id: id,
		notFound: factoryNotFound(id),
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			f, samples, err := q.FactoryHistory(ctx, org, id)
			if err != nil {
				return readmodel.Entry{}, err
			}
			return readmodel.FactoryCompatRecords(f, samples)[which].Entry, nil
		},
	})
}

// GET /api/sprocket/:id
func (h *Handlers) compatSprocket(c *fiber.Ctx) error {
	return h.serveSprocket(c, 1)
}

// GET /v1/sprockets/:id
func (h *Handlers) sprocket(c *fiber.Ctx) error {
	return h.serveSprocket(c, 0)
}

// serveSprocket serves the which-th of SprocketRecords.
func (h *Handlers) serveSprocket(c *fiber.Ctx, which int) error {
	id, err := httpapi.ID(c, "id")
	if err != nil {
		return err
	}
	keys := []string{readmodel.SprocketKey(id), readmodel.SprocketCompatKey(id)}
	return h.serve(c, view{
		key: keys[which], aggregate: events.Sprocket, id: id,
		notFound: sprocketNotFound(id),
		load: func(ctx context.Context, q Queries) (readmodel.Entry, error) {
			s, err := q.Sprocket(ctx, id)
			if err != nil {
				return readmodel.Entry{}, err
			}
			return readmodel.SprocketRecords(s)[which].Entry, nil
		},
	})
}

func sprocketNotFound(id int64) error {
	return domain.Errorf(domain.ENOTFOUND, "sprocket %d not found", id)
}
func factoryNotFound(id int64) error {
	return domain.Errorf(domain.ENOTFOUND, "factory %d not found", id)
}
