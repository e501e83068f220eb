package publicid

import (
	"strings"
	"testing"
)

const key = "0123456789abcdef0123456789abcdef"

func TestIdsRoundTripAndSayNothing(t *testing.T) {
	c, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range []int64{1, 2, 3, 255, 256, 1 << 40, 1<<63 - 1} {
		for _, k := range []Kind{Sprocket, Factory, Audit, Token, SprocketCursor, FactoryCursor, AuditCursor} {
			id := c.Encode(k, n)
			if !strings.HasPrefix(id, k.String()+"_") || len(id) != len(k.String())+23 {
				t.Fatalf("id %q of %s %d", id, k, n)
			}
			if seen[id[4:]] {
				t.Fatalf("%q repeats the encrypted part of another id", id)
			}
			seen[id[4:]] = true
			if got, ok := c.Decode(k, id); !ok || got != n {
				t.Fatalf("Decode(%q) = %d, %v; want %d", id, got, ok, n)
			}
		}
	}
	// Consecutive numbers share no visible structure: no common prefix
	// beyond the kind's.
	a, b := c.Encode(Sprocket, 41), c.Encode(Sprocket, 42)
	if a[:6] == b[:6] && a[6:10] == b[6:10] {
		t.Errorf("ids of 41 and 42 look alike: %s %s", a, b)
	}
}

func TestOnlyIssuedIdsDecode(t *testing.T) {
	c, _ := New(key)
	other, _ := New(strings.Repeat("z", 32))
	id := c.Encode(Sprocket, 7)
	flipped := []byte(id)
	flipped[10] ^= 1
	for name, bad := range map[string]string{
		"a factory's id":         c.Encode(Factory, 7),
		"a cursor":               c.Encode(SprocketCursor, 7),
		"another key's id":       other.Encode(Sprocket, 7),
		"a changed character":    string(flipped),
		"a number":               "7",
		"empty":                  "",
		"too short":              id[:len(id)-1],
		"too long":               id + "A",
		"not base64":             id[:len(id)-1] + "=",
		"no prefix":              id[4:] + "spr_",
		"a character out of set": id[:len(id)-1] + "+",
		"zero":                   c.Encode(Sprocket, 0),
		"negative":               c.Encode(Sprocket, -5),
	} {
		if n, ok := c.Decode(Sprocket, bad); ok {
			t.Errorf("%s (%q) decoded to %d", name, bad, n)
		}
	}
	if _, err := New("short"); err == nil {
		t.Error("a short key was accepted")
	}
}

func FuzzDecode(f *testing.F) {
	c, _ := New(key)
	f.Add(c.Encode(Sprocket, 1))
	f.Add("spr_AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, id string) {
		if n, ok := c.Decode(Sprocket, id); ok && c.Encode(Sprocket, n) != id {
			t.Fatalf("%q decoded to %d, which encodes as %q", id, n, c.Encode(Sprocket, n))
		}
	})
}

// A position in one list is no position in another, though cursors share
// their prefix.
func TestCursorsBelongToTheirList(t *testing.T) {
	c, _ := New(key)
	cur := c.Encode(FactoryCursor, 9)
	if _, ok := c.Decode(SprocketCursor, cur); ok {
		t.Error("a factory list's cursor decoded as a sprocket list's")
	}
	if n, ok := c.Decode(FactoryCursor, cur); !ok || n != 9 {
		t.Errorf("Decode = %d, %v", n, ok)
	}
	if _, ok := c.Decode(Sprocket, Sprocket.Example()); ok || !Shaped(Sprocket, Sprocket.Example()) {
		t.Error("the example is not an id's shape, or names something")
	}
}
