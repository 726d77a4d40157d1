package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkPassThrough is a small page through the proxy on a kept-alive
// connection: the negotiation (Accept injected), the origin's plain
// answer, and its relay.
func BenchmarkPassThrough(b *testing.B) {
	w := newWorld(b, 1<<10)
	url := w.origin.URL + "/page.html"
	for b.Loop() {
		resp, err := w.client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
