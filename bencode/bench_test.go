package bencode

import (
	"bytes"
	"crypto/rand"
	"strconv"
	"testing"
)

type benchInfo struct {
	Length      int64  `bencode:"length"`
	Name        string `bencode:"name"`
	PieceLength int64  `bencode:"piece length"`
	Pieces      []byte `bencode:"pieces"`
}

// pieces4MiB is a torrent info dictionary whose pieces string is 4 MiB:
// 209,715 hashes, a 13 GiB file at 64 KiB pieces.
func pieces4MiB(b *testing.B) []byte {
	p := make([]byte, 4<<20)
	rand.Read(p)
	var buf bytes.Buffer
	buf.WriteString("d6:lengthi1e4:name1:a12:piece lengthi65536e6:pieces")
	buf.WriteString(strconv.Itoa(len(p)))
	buf.WriteByte(':')
	buf.Write(p)
	buf.WriteByte('e')
	b.SetBytes(int64(buf.Len()))
	return buf.Bytes()
}

// BenchmarkDecodePieces4MiB shows the cost of the pieces string: copied
// once (B/op ≈ 4 MiB) by Unmarshal, not copied at all with Alias, and read
// once from the stream by a Decoder.
func BenchmarkDecodePieces4MiB(b *testing.B) {
	b.Run("Unmarshal", func(b *testing.B) {
		in := pieces4MiB(b)
		b.ReportAllocs()
		for b.Loop() {
			var v benchInfo
			if err := Unmarshal(in, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Alias", func(b *testing.B) {
		in := pieces4MiB(b)
		b.ReportAllocs()
		for b.Loop() {
			var v benchInfo
			if err := (DecodeOptions{Alias: true}).Unmarshal(in, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decoder", func(b *testing.B) {
		in := pieces4MiB(b)
		b.ReportAllocs()
		for b.Loop() {
			var v benchInfo
			if err := NewDecoder(bytes.NewReader(in)).Decode(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMarshalPieces4MiB(b *testing.B) {
	in := pieces4MiB(b)
	var v benchInfo
	if err := Unmarshal(in, &v); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}
