// Package publicid makes the ids the /v1 routes show. A resource's number
// (the original routes' id, counted up by Postgres) is encrypted with a key
// the programs share, so that a /v1 id can neither be guessed nor counted:
// it says nothing of how many resources exist, or of the one created before
// or after it, and one made up is refused. The mapping is fixed by the key,
// so ids stay the same for as long as the key does: ID_KEY must never
// change once clients hold ids.
//
// An id is the kind's prefix, an underscore, and 22 characters of URL-safe
// base64: one AES block holding the number and the kind's tag, so that a
// sprocket's id is no factory's (nor a cursor of one list another's), and
// a block that does not decrypt to its kind (a forged id, 2^-64 odds) is
// no id at all.
package publicid

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Kind is what an id names: its prefix, and the tag sealed with the
// number (at most 8 bytes), which must come back for the id to decode.
type Kind struct{ prefix, tag string }

// The kinds of ids.
var (
	Sprocket = Kind{"spr", "spr"}
	Factory  = Kind{"fac", "fac"}
	Audit    = Kind{"aud", "aud"} // an entry of the audit trail
	Token    = Kind{"tok", "tok"} // an API token, as the audit trail names it
	// Cursors are positions in lists: the number of the item a page ends
	// with, one kind per list, so that a position in one list means
	// nothing in another.
	SprocketCursor = Kind{"cur", "cur/spr"}
	FactoryCursor  = Kind{"cur", "cur/fac"}
	AuditCursor    = Kind{"cur", "cur/aud"}
)

// fingerprintKind makes Fingerprint's id, of no resource.
var fingerprintKind = Kind{"key", "keycheck"}

// Fingerprint identifies the key without saying anything of it: the id of
// the number 1 of a kind no resource has. Programs compare it to learn
// whether they share the key (see postgres.AgreeOn).
func (c *Codec) Fingerprint() string { return c.Encode(fingerprintKind, 1) }

// String is the kind's prefix.
func (k Kind) String() string { return k.prefix }

// Example is an id of kind k's shape that names nothing, for messages.
func (k Kind) Example() string { return k.prefix + "_3q2vQ8m1Zc4Lr7xkP0aN-w" }

// MinKeyLen is the shortest key accepted, in bytes.
const MinKeyLen = 32

// encodedLen is the length of an id after its prefix and underscore.
var encodedLen = base64.RawURLEncoding.EncodedLen(aes.BlockSize)

// Codec turns numbers into ids and back, under one key.
type Codec struct {
	block cipher.Block
}

// New returns the codec of key (at least MinKeyLen bytes).
func New(key string) (*Codec, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("an id key needs at least %d bytes, not %d", MinKeyLen, len(key))
	}
	k := sha256.Sum256([]byte("sprockets public ids\x00" + key))
	block, err := aes.NewCipher(k[:16])
	if err != nil {
		return nil, err
	}
	return &Codec{block: block}, nil
}

// Seed returns a number derived from the key for label: a secret of the
// deployment's for a use other than ids.
func (c *Codec) Seed(label string) uint64 {
	h := sha256.Sum256([]byte("sprockets seed\x00" + label))
	var out [aes.BlockSize]byte
	c.block.Encrypt(out[:], h[:aes.BlockSize])
	return binary.BigEndian.Uint64(out[:8])
}

// Encode returns the id of number n of kind k.
func (c *Codec) Encode(k Kind, n int64) string {
	var plain, sealed [aes.BlockSize]byte
	binary.BigEndian.PutUint64(plain[:8], uint64(n))
	copy(plain[8:], k.tag)
	c.block.Encrypt(sealed[:], plain[:])
	out := make([]byte, 0, len(k.prefix)+1+encodedLen)
	out = append(append(out, k.prefix...), '_')
	return string(base64.RawURLEncoding.AppendEncode(out, sealed[:]))
}

// Decode returns the number an id of kind k stands for. ok is false for
// anything Encode did not make for k under this key.
func (c *Codec) Decode(k Kind, id string) (n int64, ok bool) {
	if !Shaped(k, id) {
		return 0, false
	}
	var sealed, plain [aes.BlockSize]byte
	if m, err := base64.RawURLEncoding.Strict().Decode(sealed[:], []byte(id[len(k.prefix)+1:])); err != nil || m != aes.BlockSize {
		return 0, false
	}
	c.block.Decrypt(plain[:], sealed[:])
	var want [8]byte
	copy(want[:], k.tag)
	if [8]byte(plain[8:]) != want {
		return 0, false
	}
	n = int64(binary.BigEndian.Uint64(plain[:8]))
	return n, n > 0
}

// Shaped reports whether id looks like an id of kind k (its prefix, and
// the right number of base64 characters), whether or not it is one.
func Shaped(k Kind, id string) bool {
	if len(id) != len(k.prefix)+1+encodedLen || id[:len(k.prefix)] != k.prefix || id[len(k.prefix)] != '_' {
		return false
	}
	for i := len(k.prefix) + 1; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
