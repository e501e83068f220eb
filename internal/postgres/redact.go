package postgres

import "net/url"

// Redact returns a connection URL with its password masked, for logs and
// error messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
