//go:build bench

package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sprockets-api/sprockets/internal/publicid"
)

// Cached reads of a chart body, compressed (Accept-Encoding: gzip, then
// zstd) against the same reads uncompressed, on a body of about 2.5 KB
// and one of about 85 KB: req/s, their ratio, and bytes on the wire per
// answer (headers included, as wrk counts them). A reader compresses a
// body once per version; what is measured is the cost of serving it.
func BenchmarkCompressedRead(b *testing.B) {
	for i := 0; i < b.N; i++ {
		for _, size := range []struct {
			name    string
			samples int
		}{{"small", 150}, {"large", 5000}} {
			url := stack.Reader.URL() + fmt.Sprintf("/api/factory/%d/chart-data", bigFactory(b, size.samples))
			if _, err := cachedBody(url); err != nil {
				b.Fatal(err)
			}
			for _, enc := range []string{"gzip", "zstd"} {
				fmt.Printf("\n--- %s body (%d samples), %s", size.name, size.samples, enc)
				encoded := &side{name: "reader GET chart-data, " + enc,
					target: target{method: "GET", url: url, header: []string{"Authorization: " + bearer, "Accept-Encoding: " + enc}}}
				plain := &side{name: "reader GET chart-data, identity",
					target: target{method: "GET", url: url, header: []string{"Authorization: " + bearer}}}
				compare(b, 0, readClients, encoded, plain)
				fmt.Printf("%-34s %9.0f bytes/answer %s, %.0f identity\n", "on the wire", encoded.bytesPerAnswer(), enc, plain.bytesPerAnswer())
				if size.name == "large" && enc == "gzip" {
					report(b, encoded, plain)
				}
			}
		}
	}
}

// bytesPerAnswer is what the side read per answer, headers included.
func (s *side) bytesPerAnswer() float64 {
	var read float64
	var n int64
	for _, r := range s.rounds {
		read, n = read+r.read, n+r.requests
	}
	return read / float64(max(n, 1))
}

// bigFactory creates a factory with n hourly samples and returns its id.
func bigFactory(b *testing.B, n int) int64 {
	b.Helper()
	samples := make([]string, n)
	for i := range samples {
		samples[i] = fmt.Sprintf(`{"time":%d,"actual":%d,"goal":%d}`, 1600000000+i*3600, 40+i%23, 60)
	}
	req, err := http.NewRequest("POST", stack.Writer.URL()+"/v1/factories",
		strings.NewReader(`{"name":"bench","samples":[`+strings.Join(samples, ",")+`]}`))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var f struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil || resp.StatusCode != 201 {
		b.Fatalf("create factory: %d %v", resp.StatusCode, err)
	}
	id, ok := stack.IDs().Decode(publicid.Factory, f.ID)
	if !ok {
		b.Fatalf("create factory: %q is no factory id", f.ID)
	}
	return id
}
