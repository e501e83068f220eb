// Package dashboard is the page the readers serve at /: the organization's
// factories as charts of actual against goal and its sprockets as a table,
// kept current by the stream of changes. Its files are embedded in the
// binary; the page loads nothing from elsewhere.
package dashboard

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"github.com/cespare/xxhash/v2"
	"github.com/gofiber/fiber/v2"

	"github.com/sprockets-api/sprockets/internal/httpapi"
)

//go:embed assets
var assets embed.FS

// Paths are the page's paths: they answer without a token (the page asks
// for one; the data needs it).
var Paths = []string{"/", "/dashboard/app.js", "/dashboard/app.css"}

// policy lets the page load its own script and style, and talk to its own
// origin only.
const policy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type file struct {
	body        []byte
	etag        string
	contentType string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// Routes serves the page on app.
func Routes(app fiber.Router) error {
	for _, p := range Paths {
		name := "assets/index.html"
		if p != "/" {
			name = "assets/" + path.Base(p)
		}
		b, err := fs.ReadFile(assets, name)
		if err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
		f := file{body: b, etag: fmt.Sprintf(`"%016x"`, xxhash.Sum64(b)), contentType: contentTypes[path.Ext(name)]}
		app.Get(p, func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentSecurityPolicy, policy)
			c.Set(fiber.HeaderCacheControl, "no-cache") // revalidated: a new version shows at once
			c.Set(fiber.HeaderETag, f.etag)
			if httpapi.NotModified(c, f.etag) {
				return c.SendStatus(fiber.StatusNotModified)
			}
			c.Set(fiber.HeaderContentType, f.contentType)
			return c.Send(f.body)
		})
	}
	return nil
}
