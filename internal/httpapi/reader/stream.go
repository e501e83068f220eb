package reader

import (
	"bufio"
	"net"
	"strconv"
	"time"

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
	req := live.Request{Principal: p, Client: httpapi.ClientKey(c), From: c.Get("Last-Event-ID"),
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
	// The connection is the stream's: it is watched for the client
	// leaving, and closes when the stream ends. The close is what makes
	// the watch safe: the server reads no further request from the
	// connection, whose next bytes the watch may have taken.
	conn := c.Context().Conn()
	c.Context().SetConnectionClose()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		left, stop := watchClose(conn)
		defer stop()
		s.Serve(w, conn.SetWriteDeadline, left)
	})
	return nil
}

// watchClose returns a channel closed when the client closes conn, and a
// stop that ends the watch. A stream's client sends nothing after its
// request, so the watch reads conn: the read returns when the client
// closes it, or shuts its sending side, or sends anything (a pipelined
// request): each ends the stream, and the client reconnects. Without the
// watch, a stream learns that its client left only when a write fails, a
// heartbeat or two later.
func watchClose(conn net.Conn) (left <-chan struct{}, stop func()) {
	gone, done := make(chan struct{}), make(chan struct{})
	// No deadline: the server's, set to read the request, would end the
	// watch as if the client had left.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, func() {}
	}
	go func() {
		defer close(done)
		var b [1]byte
		_, _ = conn.Read(b[:])
		close(gone)
	}()
	return gone, func() {
		_ = conn.SetReadDeadline(time.Now()) // ends the read
		<-done
	}
}
