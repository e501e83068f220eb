// Package consistency defines the token a write returns and a later read
// sends back to be served data at least as new as that write.
package consistency

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Header is the HTTP header that carries a token both ways.
const Header = "X-Consistency-Token"

// Token names a committed write: which aggregate, at which version, and the
// leader's WAL position after the commit.
type Token struct {
	Org       int64  `json:"o"`
	Aggregate string `json:"a"`
	ID        int64  `json:"i"`
	Version   int64  `json:"v"`
	LSN       string `json:"l"`
}

// Encode returns the token as an opaque URL-safe string.
func (t Token) Encode() string {
	b, _ := json.Marshal(t) // a struct of strings and integers always encodes
	return base64.RawURLEncoding.EncodeToString(b)
}

// Parse decodes a token a client sent back. A token that is not one this
// service issued is an EINVALID *domain.Error.
func Parse(s string) (Token, error) {
	bad := domain.Errorf(domain.EINVALID, "%s is not a token this service issued", Header)
	if len(s) > 512 {
		return Token{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Token{}, bad
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		return Token{}, bad
	}
	if t.Org < 1 || t.ID < 1 || t.Version < 1 || t.Aggregate == "" || !validLSN(t.LSN) {
		return Token{}, bad
	}
	return t, nil
}

func validLSN(s string) bool {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(hi, 16, 32)
	_, err2 := strconv.ParseUint(lo, 16, 32)
	return err1 == nil && err2 == nil
}

// Covers reports whether data about aggregate id held at version is at
// least as new as the write the token names. Data about anything else is
// unaffected by that write, so any version covers it.
func (t Token) Covers(aggregate string, id, version int64) bool {
	if t.Aggregate != aggregate || t.ID != id {
		return true
	}
	return version >= t.Version
}

// String is for logs.
func (t Token) String() string {
	return fmt.Sprintf("%s %d v%d @%s", t.Aggregate, t.ID, t.Version, t.LSN)
}
