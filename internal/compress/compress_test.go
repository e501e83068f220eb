package compress

import (
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

func TestNegotiate(t *testing.T) {
	for accept, want := range map[string]string{
		"":                          "",
		"identity":                  "",
		"gzip":                      Gzip,
		"gzip, deflate, br":         Gzip,
		"br, zstd, gzip":            Zstd,
		"GZIP":                      Gzip,
		"gzip;q=0":                  "",
		"zstd;q=0.5, gzip;q=0.8":    Gzip,
		"zstd;q=0.9, gzip;q=0.8":    Zstd,
		"*":                         Zstd,
		"*;q=0.1, gzip;q=0":         Zstd,
		"*, zstd;q=0":               Gzip,
		"gzip;q=2, zstd;q=nonsense": "",
		"deflate":                   "",
	} {
		if got := Negotiate(accept); got != want {
			t.Errorf("Negotiate(%q) = %q, want %q", accept, got, want)
		}
	}
}

func TestETag(t *testing.T) {
	if got := ETag(`"abc"`, Gzip); got != `"abc-gzip"` {
		t.Errorf("gzip tag %s", got)
	}
	if got := ETag(`"abc"`, ""); got != `"abc"` {
		t.Errorf("identity tag %s", got)
	}
}

func decode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A body is compressed once per encoding while it stays the same, and
// what is kept stays within the budget.
func TestCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New(64<<10, reg)
	body := []byte(strings.Repeat(`{"time":1700000000,"actual":12,"goal":15},`, 1000))
	for _, enc := range []string{Gzip, Zstd} {
		first := c.Encode("rm:k", `"1"`, enc, body)
		if got := decode(t, enc, first); !bytes.Equal(got, body) {
			t.Fatalf("%s does not decode to the body", enc)
		}
		if len(first) >= len(body)/5 {
			t.Errorf("%s: %d bytes from %d", enc, len(first), len(body))
		}
		again := c.Encode("rm:k", `"1"`, enc, body)
		if &again[0] != &first[0] {
			t.Errorf("%s: compressed again for the same body", enc)
		}
		if n := testutil.ToFloat64(c.encoded.WithLabelValues(enc)); n != 1 {
			t.Errorf("%s: %v compressions, want 1", enc, n)
		}
	}
	// A new version of the body is compressed anew.
	c.Encode("rm:k", `"2"`, Gzip, body)
	if n := testutil.ToFloat64(c.encoded.WithLabelValues(Gzip)); n != 2 {
		t.Errorf("%v gzip compressions after a new version, want 2", n)
	}
	// Many bodies: the budget holds.
	for i := range 500 {
		c.Encode("rm:k", `"`+strings.Repeat("x", i%7)+string(rune('a'+i%26))+`"`, Gzip, append(body, byte(i)))
		if c.used > c.budget {
			t.Fatalf("%d bytes kept, budget %d", c.used, c.budget)
		}
	}
	if c.Choose("gzip", MinSize-1) != "" || c.Choose("gzip", MinSize) != Gzip {
		t.Error("Choose ignores MinSize")
	}
	if off := New(0, prometheus.NewRegistry()); off.Choose("gzip", 1<<20) != "" {
		t.Error("a cache without budget compresses")
	}
}

// A body sent in pieces, compressed piece by piece, decodes to the body
// joined, with zstd and with gzip (whose stream is stitched from raw
// deflate pieces, with its checksum); after one piece changes, only that
// piece is compressed again.
func TestEncodePieces(t *testing.T) {
	c := New(16<<20, prometheus.NewRegistry())
	column := func(n int) []byte {
		return []byte(strings.TrimSuffix(strings.Repeat(strconv.Itoa(n)+",1700000060,", 2000), ","))
	}
	pieces := []readmodel.Piece{{Bytes: []byte(`{"a":[`)}}
	for i := range 20 {
		if i > 0 {
			pieces = append(pieces, readmodel.Piece{Bytes: []byte(",")})
		}
		pieces = append(pieces, readmodel.Piece{Segment: "rm:seg:" + strconv.Itoa(i), Column: 'a', Hash: uint64(i), Bytes: column(i)})
	}
	pieces = append(pieces, readmodel.Piece{Bytes: []byte(`]}`)})
	body := readmodel.Join(pieces)
	for _, enc := range []string{Gzip, Zstd} {
		before := testutil.ToFloat64(c.encoded.WithLabelValues(enc))
		encoded := readmodel.Join(c.EncodePieces("rm:k", `"1"`, enc, pieces))
		if got := decode(t, enc, encoded); !bytes.Equal(got, body) {
			t.Fatalf("%s: the pieces do not decode to the body", enc)
		}
		if len(encoded) >= len(body)/5 {
			t.Errorf("%s: %d bytes from %d", enc, len(encoded), len(body))
		}
		changed := slices.Clone(pieces)
		changed[5] = readmodel.Piece{Segment: changed[5].Segment, Column: 'a', Hash: 99, Bytes: column(99)}
		mid := testutil.ToFloat64(c.encoded.WithLabelValues(enc))
		encoded = readmodel.Join(c.EncodePieces("rm:k", `"2"`, enc, changed))
		if got := decode(t, enc, encoded); !bytes.Equal(got, readmodel.Join(changed)) {
			t.Fatalf("%s: the changed pieces do not decode to the changed body", enc)
		}
		if n := testutil.ToFloat64(c.encoded.WithLabelValues(enc)) - mid; n != 1 {
			t.Errorf("%s: %v pieces compressed after one changed (first time %v), want 1", enc, n, mid-before)
		}
	}
}
