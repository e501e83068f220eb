// Package auth authenticates requests: the format of API tokens, their
// hashing, and the check of a request's bearer token against the stored
// grants, strict enough that a revoked token is refused on its very next
// request by every instance.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Prefix starts every token, so that one found in a log or a repository is
// recognizable (and can be searched for by secret scanners).
const Prefix = "spk_"

// secretLen is the length of a token: the prefix and 32 random bytes
// (256 bits) in unpadded base64url.
var secretLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(32)

// NewSecret returns a new token, the hash to store, and the short form to
// show in listings.
func NewSecret() (secret string, hash []byte, display string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand: " + err.Error()) // cannot fail on Linux
	}
	secret = Prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, Hash(secret), Display(secret)
}

// Hash returns what is stored for a token: its SHA-256. A token has 256
// bits of entropy, so a fast hash is as good as a slow one here.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Display returns the recognizable start of a token, safe to show.
func Display(secret string) string { return secret[:len(Prefix)+6] }

// WellFormed reports whether s looks like a token this service issues;
// anything else is refused without a lookup.
func WellFormed(s string) bool {
	if len(s) != secretLen || !strings.HasPrefix(s, Prefix) {
		return false
	}
	// Every character in base64url's alphabet: at this length, what
	// base64.RawURLEncoding decodes, without the copy a decoding makes on
	// every request.
	for i := len(Prefix); i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Bearer extracts the token from an Authorization header value; "" when
// there is none.
func Bearer(header string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
