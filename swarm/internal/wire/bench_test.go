package wire_test

import (
	"io"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// loopReader serves data over and over, so that a benchmark of any length
// reads one in-memory stream without resetting it.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func BenchmarkDecodePiece(b *testing.B) {
	const blocks = 64
	block := seq(16 << 10)
	var data []byte
	for i := range blocks {
		data = wire.AppendMessage(data, &wire.Message{ID: wire.Piece, Index: uint32(i / 2), Begin: uint32(i%2) * 16 << 10, Block: block})
	}
	d := wire.NewDecoder(&loopReader{data: data}, testLimits())
	var m wire.Message
	b.SetBytes(int64(len(data) / blocks))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(&m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRequest(b *testing.B) {
	req := wire.Message{ID: wire.Request, Index: 7, Begin: 16 << 10, Length: 16 << 10}
	b.Run("AppendMessage", func(b *testing.B) {
		buf := make([]byte, 0, 64)
		b.SetBytes(17)
		b.ReportAllocs()
		for b.Loop() {
			buf = wire.AppendMessage(buf[:0], &req)
		}
	})
	b.Run("Encoder", func(b *testing.B) {
		e := wire.NewEncoder(io.Discard)
		b.SetBytes(17)
		b.ReportAllocs()
		for b.Loop() {
			if err := e.Encode(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkWritePiece(b *testing.B) {
	block := seq(16 << 10)
	e := wire.NewEncoder(io.Discard)
	b.SetBytes(int64(len(block) + 13))
	b.ReportAllocs()
	for b.Loop() {
		if err := e.WritePiece(1, 0, block); err != nil {
			b.Fatal(err)
		}
	}
}
