// Package consistency defines the token a write returns and a later read
// sends back to be served data at least as new as that write. Tokens are
// sealed (encrypted and authenticated): a client can hand back only what a
// writer gave it, and cannot read what it names (the numbers of resources
// and the leader's WAL position would count writes).
package consistency

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
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

// Signer seals the tokens a writer hands out and opens the ones readers
// are sent back, with AES-256-GCM under a key derived from the secret that
// the writer and every reader share. During a key rotation it also opens
// tokens sealed with the previous secret; it always seals with the current
// one.
type Signer struct {
	aeads []cipher.AEAD // the current key's first
}

// NewSigner returns a Signer that seals with current and also opens with
// previous ones (empty strings are skipped). Each secret must have at least
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
		key := sha256.Sum256([]byte("sprockets consistency tokens\x00" + k))
		block, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		s.aeads = append(s.aeads, aead)
	}
	return s, nil
}

// Encode returns the token sealed, as an opaque URL-safe string: a random
// nonce and the sealed JSON.
func (s *Signer) Encode(t Token) string {
	b, _ := json.Marshal(t) // a struct of strings and integers always encodes
	a := s.aeads[0]
	sealed := make([]byte, a.NonceSize(), a.NonceSize()+len(b)+a.Overhead())
	_, _ = rand.Read(sealed) // crypto/rand does not fail on Linux
	sealed = a.Seal(sealed, sealed, b, nil)
	return base64.RawURLEncoding.EncodeToString(sealed)
}

// errForeign is what Parse says of anything it did not seal.
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
	sealed, err := base64.RawURLEncoding.Strict().DecodeString(raw)
	if err != nil {
		return Token{}, errForeign
	}
	var b []byte
	for _, a := range s.aeads {
		if len(sealed) < a.NonceSize()+a.Overhead() {
			return Token{}, errForeign
		}
		if b, err = a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], nil); err == nil {
			break
		}
	}
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
