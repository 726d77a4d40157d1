package cache

import (
	"context"
	"io"
	"testing"

	"github.com/tbproxy/tbproxy/swarm"
)

// cachedFixture is a complete torrent in a fresh store.
func cachedFixture(b *testing.B, size int, pieceLen int64) (*fixture, *Torrent) {
	b.Helper()
	f := newFixture(b, size, pieceLen)
	s := openStore(b, Config{Dir: b.TempDir(), MaxBytes: 1 << 40})
	h := handle(b, s, f.meta, TorrentOptions{})
	f.put(b, h)
	return f, h
}

func BenchmarkWritePiece(b *testing.B) {
	const pl = 256 << 10
	f := newFixture(b, 64<<20, pl)
	s := openStore(b, Config{Dir: b.TempDir(), MaxBytes: 1 << 40})
	h := handle(b, s, f.meta, TorrentOptions{})
	n := f.meta.Info.NumPieces()
	b.SetBytes(pl)
	b.ResetTimer()
	for k := 0; b.Loop(); k++ {
		i := k % n
		if err := h.WritePiece(i, f.piece(i)); err != nil {
			b.Fatal(err)
		}
		if err := h.MarkVerified(i); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAt(b *testing.B) {
	const size = 256 << 20
	_, h := cachedFixture(b, size, 256<<10)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	var off int64
	for b.Loop() {
		if _, err := h.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % size
	}
}

// BenchmarkReaderCached reads a complete cached torrent through the engine,
// as the proxy serves a cache hit.
func BenchmarkReaderCached(b *testing.B) {
	const size = 256 << 20
	f, h := cachedFixture(b, size, 256<<10)
	c := newClient(b, swarm.Config{})
	tor, err := c.AddTorrent(f.meta, h, swarm.TorrentOptions{NoTrackers: true})
	if err != nil {
		b.Fatal(err)
	}
	<-tor.Complete()
	for _, bc := range []struct {
		name string
		buf  int // 0: io.Copy to io.Discard (8 KiB reads)
	}{{"io.Copy", 0}, {"256KiB buffer", 256 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			var buf []byte
			if bc.buf > 0 {
				buf = make([]byte, bc.buf)
			}
			for b.Loop() {
				r := tor.NewReader(context.Background())
				var n int64
				var err error
				if buf == nil {
					n, err = io.Copy(io.Discard, r)
				} else {
					n, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, buf)
				}
				r.Close()
				if err != nil || n != size {
					b.Fatalf("copied %d bytes: %v", n, err)
				}
			}
		})
	}
}
