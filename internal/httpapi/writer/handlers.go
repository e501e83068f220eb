package writer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/consistency"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// Store is the system of record as the write API needs it.
type Store interface {
	CreateSprocket(ctx context.Context, actor domain.Actor, spec domain.SprocketSpec, idem domain.Idempotency) (domain.Sprocket, domain.Receipt, error)
	UpdateSprocket(ctx context.Context, actor domain.Actor, id, ifVersion int64, change func(domain.SprocketSpec) domain.SprocketSpec) (domain.Sprocket, domain.Receipt, error)
	DeleteSprocket(ctx context.Context, actor domain.Actor, id, ifVersion int64) (domain.Receipt, error)
	CreateFactory(ctx context.Context, actor domain.Actor, spec domain.FactorySpec, samples []domain.Sample, idem domain.Idempotency) (domain.Factory, domain.Receipt, error)
	UpdateFactory(ctx context.Context, actor domain.Actor, id, ifVersion int64, change func(domain.FactorySpec) domain.FactorySpec) (domain.Factory, domain.Receipt, error)
	DeleteFactory(ctx context.Context, actor domain.Actor, id, ifVersion int64) (domain.Receipt, error)
	AppendSamples(ctx context.Context, actor domain.Actor, id, ifVersion int64, samples []domain.Sample) (domain.Factory, int, domain.Receipt, error)
}

// Handlers serve the write API. Every write acts for the request's
// principal (see httpapi.Access) and is audited as its actor.
type Handlers struct {
	store  Store
	tokens *consistency.Signer
	ids    *publicid.Codec
}

// New returns the write API's handlers; tokens seals the consistency token
// of each write, and ids makes and reads the ids of the /v1 routes.
func New(store Store, tokens *consistency.Signer, ids *publicid.Codec) *Handlers {
	return &Handlers{store: store, tokens: tokens, ids: ids}
}

// target is the resource a request's path names: its number, and the id
// as the request wrote it.
type target struct {
	id  int64
	ref string
}

// v1Target reads the /v1 id of a resource of kind (what, in messages).
func (h *Handlers) v1Target(c *fiber.Ctx, kind publicid.Kind, what string) (target, error) {
	id, err := httpapi.PublicID(c, "id", h.ids, kind, what)
	return target{id, c.Params("id")}, err
}

// compatTarget reads the number of the original routes.
func compatTarget(c *fiber.Ctx) (target, error) {
	id, err := httpapi.ID(c, "id")
	return target{id, c.Params("id")}, err
}

// named returns the store's err about what t names as the client should
// read it: a resource that is not found is named as the request named it
// (by its /v1 id), never by its number. The store's other errors do not
// name the resource.
func (t target) named(err error, what string) error {
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return domain.Errorf(domain.ENOTFOUND, "%s %s not found", what, t.ref)
	}
	return err
}

// committed sets the headers every successful write carries: the new
// version as ETag and the consistency token.
func (h *Handlers) committed(c *fiber.Ctx, org int64, aggregate string, id int64, r domain.Receipt, etag string) {
	if etag != "" {
		c.Set(fiber.HeaderETag, etag)
	}
	c.Set(consistency.Header, h.tokens.Encode(consistency.Token{Org: org, Aggregate: aggregate, ID: id, Version: r.Version, LSN: r.LSN}))
	if r.Replayed {
		c.Set("Idempotent-Replayed", "true")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
}

func sendJSON(c *fiber.Ctx, status int, body []byte) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(status).Send(body)
}

// idempotency reads the Idempotency-Key and digests the request it guards:
// the route and the decoded (canonical) input, so that whitespace or key
// order do not make a retry a different request.
func idempotency(c *fiber.Ctx, route string, input any) (domain.Idempotency, error) {
	key, err := httpapi.IdempotencyKey(c)
	if err != nil || key == "" {
		return domain.Idempotency{}, err
	}
	canon, err := json.Marshal(input)
	if err != nil {
		return domain.Idempotency{}, err
	}
	h := sha256.New()
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write(canon)
	return domain.Idempotency{Key: key, Hash: h.Sum(nil)}, nil
}

func location(prefix string, id int64) string { return prefix + strconv.FormatInt(id, 10) }
