package origin

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/negotiate"
)

// discard is a ResponseWriter that keeps nothing but its header map, so a
// benchmark measures the handler rather than a recorder.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// BenchmarkServeMetainfo is the negotiation hot path for a ready torrent:
// glob check, Accept parse, stat through the resolver, lookup, headers and
// the cached body.
func BenchmarkServeMetainfo(b *testing.B) {
	dir := b.TempDir()
	writeFile(b, dir, "pub/deep/big.bin", content(4<<20, 51), baseTime)
	p := newPublisher(b, Config{Dir: dir, Announce: testAnnounce, Wait: 10 * time.Second})
	h := p.Handler(http.NotFoundHandler())
	req := httptest.NewRequest("GET", "http://127.0.0.1:8000/pub/deep/big.bin", nil)
	req.Header.Set("Accept", "application/x-bittorrent, */*")
	w := &discard{h: http.Header{}}
	h.ServeHTTP(w, req)
	if w.code != http.StatusOK || w.h.Get("Content-Type") != negotiate.MediaType {
		b.Fatalf("not ready: %d %v", w.code, w.h)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	if w.code != http.StatusOK {
		b.Fatal(w.code)
	}
}

// BenchmarkFileStorageReadAt reads 16 KiB blocks, as peers request them,
// through FileStorage (pread and the fstat that guards against changed
// bytes) and, for comparison, straight from the file.
func BenchmarkFileStorageReadAt(b *testing.B) {
	f := newStorageFixture(b, 8<<20)
	raw, err := os.Open(f.file)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	for _, bc := range []struct {
		name string
		read func([]byte, int64) (int, error)
	}{
		{"FileStorage", f.st.ReadAt},
		{"os.File", raw.ReadAt},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := make([]byte, 16<<10)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				if _, err := bc.read(p, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(p))) % int64(len(f.data))
			}
		})
	}
}
