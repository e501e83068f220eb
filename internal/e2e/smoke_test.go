package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	s := newStack(t, stackOptions{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.Reader.URL() + "/api/factory/2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%d %s %s", resp.StatusCode, resp.Header.Get("X-Read-Source"), body[:min(len(body), 200)])
		if resp.Header.Get("X-Read-Source") == "cache" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}
