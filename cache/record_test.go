package cache

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tbproxy/tbproxy/metainfo"
)

func testRecord(n int) (*record, *metainfo.Info) {
	info := &metainfo.Info{PieceLength: 16 << 10, TotalLength: int64(n)*(16<<10) - 5, Pieces: make([]byte, 20*n)}
	r := &record{
		infoHash:    metainfo.Hash{1, 2, 3},
		totalLength: info.TotalLength,
		dataSize:    info.TotalLength,
		dataMtime:   123456789,
		lastUse:     42,
		completed:   7,
		uploaded:    99,
		verified:    newBitset(n),
	}
	for i := 0; i < n; i += 3 {
		r.verified.set(i)
	}
	return r, info
}

func TestRecordRoundTrip(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 64, 65, 1000} {
		r, info := testRecord(n)
		b := r.marshal()
		if len(b) != recordLen(n) {
			t.Fatalf("%d pieces: %d bytes, want %d", n, len(b), recordLen(n))
		}
		got, err := decodeRecord(b, r.infoHash, info)
		if err != nil {
			t.Fatalf("%d pieces: %v", n, err)
		}
		if !bytes.Equal(got.marshal(), b) || got.verified.count() != r.verified.count() {
			t.Fatalf("%d pieces: round trip differs", n)
		}
	}
}

func TestRecordRejects(t *testing.T) {
	r, info := testRecord(20)
	good := r.marshal()
	other, _ := testRecord(21)
	tests := []struct {
		name string
		b    []byte
		ih   metainfo.Hash
		info *metainfo.Info
	}{
		{"empty", nil, r.infoHash, info},
		{"truncated", good[:len(good)-1], r.infoHash, info},
		{"bit flipped", func() []byte { b := bytes.Clone(good); b[recordHeader] ^= 1; return b }(), r.infoHash, info},
		{"other info-hash", good, metainfo.Hash{9}, info},
		{"other piece count", other.marshal(), r.infoHash, info},
		{"other length", good, r.infoHash, &metainfo.Info{PieceLength: info.PieceLength, TotalLength: info.TotalLength - 1, Pieces: info.Pieces}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeRecord(tc.b, tc.ih, tc.info); !errors.Is(err, errBadRecord) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r, info := testRecord(20)
	f.Add(r.marshal())
	f.Add([]byte(recordMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeRecord(b, r.infoHash, info)
		if err != nil {
			return
		}
		if !bytes.Equal(got.marshal(), b) {
			t.Fatal("accepted a non-canonical record")
		}
	})
}
