package reader

import (
	"bufio"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/httpapi"
	"github.com/sprockets-api/sprockets/internal/live"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// maxStreamFactories bounds the factory ids one stream may name.
const maxStreamFactories = 100

// stream is GET /v1/stream: the organization's changes as Server-Sent
// Events (see live). ?kinds=sprocket,factory picks kinds of changes, and
// ?factory=<id>,... the factories whose changes are sent; Last-Event-ID
// resumes after an event.
func (h *Handlers) stream(c *fiber.Ctx) error {
	kinds, err := httpapi.QueryChoices(c, "kinds", readmodel.LiveSprocket, readmodel.LiveFactory)
	if err != nil {
		return err
	}
	factories, err := httpapi.QueryIDs(c, "factory", h.cfg.IDs, publicid.Factory, "factory", maxStreamFactories)
	if err != nil {
		return err
	}
	p := httpapi.PrincipalOf(c)
	req := live.Request{Principal: p, Client: "ip:" + httpapi.ClientIP(c), From: c.Get("Last-Event-ID"),
		Filter: live.Filter{Kinds: kinds, Factories: factories}}
	if p.TokenID != 0 {
		req.Token = auth.Bearer(c.Get(fiber.HeaderAuthorization))
		req.Client = "token:" + strconv.FormatInt(p.TokenID, 10)
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no") // proxies that buffer answers must not buffer this one
	if c.Method() == fiber.MethodHead {
		return nil
	}
	s, err := h.cfg.Live.Open(c.UserContext(), req)
	if err != nil {
		if domain.ErrorCode(err) == domain.ELIMITED {
			c.Set(fiber.HeaderRetryAfter, "10")
		}
		return err
	}
	conn := c.Context().Conn()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) { s.Serve(w, conn.SetWriteDeadline) })
	return nil
}
