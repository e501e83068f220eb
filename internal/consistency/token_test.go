package consistency

import (
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/domain"
)

func TestTokenRoundTrip(t *testing.T) {
	tok := Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/16B3748"}
	got, err := Parse(tok.Encode())
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if strings.ContainsAny(tok.Encode(), "+/=") {
		t.Errorf("token %q is not URL-safe", tok.Encode())
	}
}

func TestParseRefusesForeignTokens(t *testing.T) {
	good := Token{Org: 1, Aggregate: "sprocket", ID: 42, Version: 7, LSN: "0/16B3748"}
	for _, tc := range []struct{ name, raw string }{
		{"not base64", "not a token!"},
		{"not JSON", "bm90IGpzb24"},
		{"too long", strings.Repeat("a", 600)},
		{"no LSN", Token{Org: 1, Aggregate: "sprocket", ID: 1, Version: 1}.Encode()},
		{"bad LSN", Token{Org: 1, Aggregate: "sprocket", ID: 1, Version: 1, LSN: "x/y"}.Encode()},
		{"zero version", Token{Org: 1, Aggregate: "sprocket", ID: 1, LSN: "0/1"}.Encode()},
		{"no aggregate", Token{Org: 1, ID: 1, Version: 1, LSN: "0/1"}.Encode()},
		{"tampered", good.Encode()[:10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.raw); domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("Parse(%q) = %v, want EINVALID", tc.raw, err)
			}
		})
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
