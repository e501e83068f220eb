package consistency

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/domain"
)

const (
	keyA = "0123456789abcdef0123456789abcdef-a"
	keyB = "0123456789abcdef0123456789abcdef-b"
)

func signer(t testing.TB, current string, previous ...string) *Signer {
	t.Helper()
	s, err := NewSigner(current, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenRoundTrip(t *testing.T) {
	s := signer(t, keyA)
	tok := Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/16B3748"}
	raw := s.Encode(tok)
	got, err := s.Parse(raw)
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if strings.ContainsAny(raw, "+/=") {
		t.Errorf("token %q is not URL-safe", raw)
	}
}

// unsigned returns what a client could make up in the format tokens had
// when they were signed in the clear: a payload and a signature of its
// choosing.
func unsigned(tok Token, sig string) string {
	b, _ := json.Marshal(tok)
	return base64.RawURLEncoding.EncodeToString(b) + "." + sig
}

func TestParseRefusesForeignTokens(t *testing.T) {
	s := signer(t, keyA)
	good := Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/16B3748"}
	raw := s.Encode(good)
	forged := good
	forged.Version = 1 << 60
	forged.LSN = "FFFFFFFF/FFFFFFFF"
	// Another character of the alphabet, so that the token still decodes
	// and only its seal can refuse it.
	flipped := []byte(raw)
	flipped[len(flipped)/2] = map[bool]byte{true: 'B', false: 'A'}[flipped[len(flipped)/2] == 'A']
	for _, tc := range []struct{ name, raw string }{
		{"not base64", "not a token!"},
		{"unsigned, as tokens first were", base64.RawURLEncoding.EncodeToString(must(json.Marshal(forged)))},
		{"signed in the clear, as tokens then were", unsigned(forged, "AAAAAAAAAAAAAAAAAAAAAA")},
		{"too long", strings.Repeat("a", 600)},
		{"too short to hold anything", raw[:20]},
		{"sealed with another key", signer(t, keyB).Encode(good)},
		{"a character changed", string(flipped)},
		{"cut short", raw[:len(raw)-2]},
		{"no LSN", s.Encode(Token{Org: 1, Aggregate: "sprocket", ID: 1, Version: 1})},
		{"bad LSN", s.Encode(Token{Org: 1, Aggregate: "sprocket", ID: 1, Version: 1, LSN: "x/y"})},
		{"zero version", s.Encode(Token{Org: 1, Aggregate: "sprocket", ID: 1, LSN: "0/1"})},
		{"no aggregate", s.Encode(Token{Org: 1, ID: 1, Version: 1, LSN: "0/1"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Parse(tc.raw); domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("Parse(%q) = %v, want EINVALID", tc.raw, err)
			}
		})
	}
}

// A token says nothing to its holder: not the resource's number, nor the
// leader's WAL position (both would count writes), and two tokens of the
// same write differ.
func TestTokensAreOpaque(t *testing.T) {
	s := signer(t, keyA)
	tok := Token{Org: 1, Aggregate: "sprocket", ID: 424242, Version: 7, LSN: "0/16B3748"}
	a, b := s.Encode(tok), s.Encode(tok)
	if a == b {
		t.Error("two tokens of the same write are equal")
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{"424242", "16B3748", "sprocket", `"v"`} {
		if strings.Contains(string(raw), clear) || strings.Contains(a, clear) {
			t.Errorf("token %q shows %q", a, clear)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// During a rotation, tokens signed with the previous key are accepted and
// new ones are signed with the current key; afterwards the previous key's
// tokens are refused.
func TestKeyRotation(t *testing.T) {
	tok := Token{Org: 1, Aggregate: "factory", ID: 3, Version: 2, LSN: "0/1"}
	old := signer(t, keyA).Encode(tok)
	rotating := signer(t, keyB, keyA)
	if got, err := rotating.Parse(old); err != nil || got != tok {
		t.Errorf("a token of the previous key during the rotation: %+v, %v", got, err)
	}
	if _, err := signer(t, keyB).Parse(rotating.Encode(tok)); err != nil {
		t.Errorf("a rotating signer does not sign with the current key: %v", err)
	}
	if _, err := signer(t, keyB).Parse(old); err == nil {
		t.Errorf("a token of the previous key is accepted after the rotation")
	}
}

func TestNewSignerWantsLongKeys(t *testing.T) {
	for _, keys := range [][]string{{""}, {"short"}, {keyA, "short"}} {
		if _, err := NewSigner(keys[0], keys[1:]...); err == nil {
			t.Errorf("NewSigner%q accepted", keys)
		}
	}
	if _, err := NewSigner(keyA, ""); err != nil {
		t.Errorf("an empty previous key (no rotation) is refused: %v", err)
	}
}

func TestCovers(t *testing.T) {
	tok := Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/1"}
	tests := []struct {
		aggregate string
		id, ver   int64
		want      bool
	}{
		{"sprocket", 42, 7, true},
		{"sprocket", 42, 8, true},
		{"sprocket", 42, 6, false},
		{"sprocket", 43, 1, true}, // another sprocket is not affected by the write
		{"factory", 42, 1, true},
	}
	for _, tc := range tests {
		if got := tok.Covers(tc.aggregate, tc.id, tc.ver); got != tc.want {
			t.Errorf("Covers(%s %d v%d) = %v, want %v", tc.aggregate, tc.id, tc.ver, got, tc.want)
		}
	}
}

// Whatever a client sends as a token, Parse answers without panicking,
// and what it accepts is what the signer issued.
func FuzzParse(f *testing.F) {
	s := signer(f, keyA)
	f.Add(s.Encode(Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/16B3748"}))
	f.Add("e30.AAAAAAAAAAAAAAAAAAAAAA")
	f.Add(".")
	f.Add(strings.Repeat("a", 600))
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := s.Parse(raw)
		if err != nil {
			if domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("Parse(%q): %v, want EINVALID", raw, err)
			}
			return
		}
		if again, err := s.Parse(s.Encode(tok)); err != nil || again != tok {
			t.Fatalf("%q parsed to %+v, which does not round trip: %+v %v", raw, tok, again, err)
		}
	})
}
