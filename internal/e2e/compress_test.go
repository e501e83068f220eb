package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Answers large enough to gain are compressed for the clients that accept
// it (zstd or gzip), with Vary: Accept-Encoding and an ETag of their own per
// encoding; smaller ones, and clients that accept neither, get the body as
// it is.
func TestAnswersAreCompressed(t *testing.T) {
	s := newStack(t, stackOptions{})
	var samples []string
	for i := 0; i < 300; i++ {
		samples = append(samples, fmt.Sprintf(`{"time":%d,"actual":%d,"goal":%d}`, 1700000000+i*3600, i%17, 20))
	}
	r := do(t, "POST", s.Writer.URL()+"/v1/factories", `{"name":"Big plant","samples":[`+strings.Join(samples, ",")+`]}`)
	expect(t, r, 201, "create a factory with 300 samples")
	var f factoryV1
	r.JSON(t, &f)
	url := fmt.Sprintf("%s/api/factory/%d/chart-data", s.Reader.URL(), num(t, s, f.ID))
	eventually(t, url, 200, nil)
	// Go's client asks for gzip unless told otherwise, and decodes it.
	plain := do(t, "GET", url, nil, "Accept-Encoding", "identity")
	if len(plain.Body) < 3000 || plain.Header.Get("Content-Encoding") != "" {
		t.Fatalf("identity answer: %d bytes, Content-Encoding %q", len(plain.Body), plain.Header.Get("Content-Encoding"))
	}
	tags := map[string]bool{plain.Header.Get("ETag"): true}
	for accept, enc := range map[string]string{"gzip, deflate": "gzip", "zstd, gzip": "zstd", "br": ""} {
		r := do(t, "GET", url, nil, "Accept-Encoding", accept)
		expect(t, r, 200, "GET with Accept-Encoding: "+accept)
		if got := r.Header.Get("Content-Encoding"); got != enc {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", accept, got, enc)
			continue
		}
		if !strings.Contains(r.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("Accept-Encoding %q: Vary %q", accept, r.Header.Get("Vary"))
		}
		if enc == "" {
			if r.Header.Get("ETag") != plain.Header.Get("ETag") || !bytes.Equal(r.Body, plain.Body) {
				t.Errorf("an encoding nobody offers changed the answer")
			}
			continue
		}
		body, err := decodeAs(enc, r.Body)
		if err != nil || !bytes.Equal(body, plain.Body) {
			t.Errorf("%s answer does not decode to the body (%v)", enc, err)
		}
		if len(r.Body) > len(plain.Body)/3 {
			t.Errorf("%s: %d bytes for a body of %d", enc, len(r.Body), len(plain.Body))
		}
		etag := r.Header.Get("ETag")
		if tags[etag] {
			t.Errorf("%s answer shares the ETag %s", enc, etag)
		}
		tags[etag] = true
		// Its own tag revalidates it; under another encoding it does not.
		expect(t, do(t, "GET", url, nil, "Accept-Encoding", accept, "If-None-Match", etag), 304, enc+" with its own ETag")
		expect(t, do(t, "GET", url, nil, "Accept-Encoding", "identity", "If-None-Match", etag), 200, "the identity with the "+enc+" ETag")
	}
	// A small body is sent as it is.
	small := do(t, "GET", s.Reader.URL()+"/api/sprocket/1", nil, "Accept-Encoding", "gzip")
	if small.Header.Get("Content-Encoding") != "" {
		t.Errorf("a %d-byte body was compressed", len(small.Body))
	}
}

// decodeAs decodes b, an answer's body in the encoding enc (gzip or zstd).
func decodeAs(enc string, b []byte) ([]byte, error) {
	if enc == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	}
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}
