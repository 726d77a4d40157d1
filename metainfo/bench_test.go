package metainfo

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkParse2p20Pieces parses a torrent with 2^20 pieces (a 20 MiB
// pieces string): decoding, validation and the info-hash. B/op shows the
// pieces copied once, by Parse taking its own copy of the input.
func BenchmarkParse2p20Pieces(b *testing.B) {
	const n = 1 << 20
	var buf bytes.Buffer
	buf.WriteString("d8:announce30:http://127.0.0.1:6969/announce4:infod6:length")
	buf.WriteString("i" + strconv.FormatInt(int64(n)*BlockSize, 10) + "e")
	buf.WriteString("4:name5:a.bin12:piece lengthi16384e6:pieces" + strconv.Itoa(n*HashSize) + ":")
	pieces := make([]byte, n*HashSize)
	rand.Read(pieces)
	buf.Write(pieces)
	buf.WriteString("ee")
	data := buf.Bytes()
	lim := Limits{MaxSize: 32 << 20}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := lim.Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if m.Info.NumPieces() != n {
			b.Fatal("wrong piece count")
		}
	}
}

// BenchmarkBuild1GiB hashes a 1 GiB file at 256 KiB pieces on all cores.
// The file is written once; later iterations read it from the page cache.
func BenchmarkBuild1GiB(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 8<<20)
	rand.Read(chunk)
	for range 128 {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1 << 30)
	for b.Loop() {
		if _, err := Build(context.Background(), path, BuildOptions{PieceLength: 256 << 10}); err != nil {
			b.Fatal(err)
		}
	}
}
