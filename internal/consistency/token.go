// Package consistency defines the token a write returns and a later read
// sends back to be served data at least as new as that write. Tokens are
// signed: a client can hand back only what a writer gave it.
package consistency

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// MinKeyLen is the shortest signing key accepted, in bytes.
const MinKeyLen = 32

// tagLen is the length of a token's signature: 128 bits of HMAC-SHA256.
const tagLen = 16

// Signer signs the tokens a writer hands out and checks the ones readers
// are sent back, with HMAC-SHA256 under a key that the writer and every
// reader share. During a key rotation it also accepts tokens signed with
// the previous key; it always signs with the current one.
type Signer struct {
	keys [][]byte // the current key first
}

// NewSigner returns a Signer that signs with current and also accepts
// previous ones (empty strings are skipped). Each key must have at least
// MinKeyLen bytes.
func NewSigner(current string, previous ...string) (*Signer, error) {
	s := &Signer{}
	for i, k := range append([]string{current}, previous...) {
		if k == "" && i > 0 {
			continue
		}
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("a consistency token key needs at least %d bytes, not %d", MinKeyLen, len(k))
		}
		s.keys = append(s.keys, []byte(k))
	}
	return s, nil
}

// Encode returns the token signed, as an opaque URL-safe string.
func (s *Signer) Encode(t Token) string {
	b, _ := json.Marshal(t) // a struct of strings and integers always encodes
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + base64.RawURLEncoding.EncodeToString(tag(s.keys[0], payload))
}

func tag(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return m.Sum(nil)[:tagLen]
}

// errForeign is what Parse says of anything it did not sign.
var errForeign = errors.New("not signed by this service")

// Parse checks and decodes a token a client sent back. A token that this
// service did not issue (malformed, or signed with another key) is an
// EINVALID *domain.Error.
func (s *Signer) Parse(raw string) (Token, error) {
	t, err := s.parse(raw)
	if err != nil {
		return Token{}, domain.Errorf(domain.EINVALID, "%s is not a token this service issued", Header)
	}
	return t, nil
}

func (s *Signer) parse(raw string) (Token, error) {
	if len(raw) > 512 {
		return Token{}, errForeign
	}
	payload, sig, ok := strings.Cut(raw, ".")
	if !ok {
		return Token{}, errForeign
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Token{}, errForeign
	}
	signed := false
	for _, k := range s.keys {
		if hmac.Equal(got, tag(k, payload)) {
			signed = true
			break
		}
	}
	if !signed {
		return Token{}, errForeign
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Token{}, errForeign
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		return Token{}, errForeign
	}
	if t.Org < 1 || t.ID < 1 || t.Version < 1 || t.Aggregate == "" || !validLSN(t.LSN) {
		return Token{}, errForeign
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
