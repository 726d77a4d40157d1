package metainfo

import (
	"crypto/sha1"
	"reflect"
	"strings"
	"testing"
)

// FuzzMetainfo checks, for any input: no panic; a parsed torrent keeps its
// invariants (hash of the raw info, consistent pieces, contiguous files,
// safe paths); and it re-encodes to a torrent that parses the same.
func FuzzMetainfo(f *testing.F) {
	f.Add([]byte("d4:infod6:lengthi40000e4:name5:a.bin12:piece lengthi16384e6:pieces60:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxee"))
	f.Add([]byte("d4:infod5:filesld6:lengthi1e4:pathl2:..6:passwdeee4:name1:d12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"))
	f.Add([]byte("d4:infod6:lengthi1e4:name1:a12:piece lengthi0e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"))
	lim := Limits{MaxSize: 1 << 20, MaxPieces: 1 << 12, MaxFiles: 1 << 10}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := lim.Parse(data)
		if err != nil {
			return
		}
		info := &m.Info
		if m.InfoHash != sha1.Sum(m.InfoBytes) {
			t.Fatal("info-hash is not the SHA-1 of the info bytes")
		}
		if n := info.NumPieces(); n == 0 || n > lim.MaxPieces || int64(n) != (info.TotalLength+info.PieceLength-1)/info.PieceLength {
			t.Fatalf("%d pieces for %d bytes at %d", n, info.TotalLength, info.PieceLength)
		}
		var off int64
		for i, fl := range info.Files {
			if fl.Offset != off || fl.Length < 0 {
				t.Fatalf("file %d at %d length %d, want offset %d", i, fl.Offset, fl.Length, off)
			}
			off += fl.Length
			if fl.Padding() {
				continue
			}
			safe, err := SafePath(strings.Split(fl.SafePath, "/"))
			if err != nil || safe != fl.SafePath {
				t.Fatalf("file %d: safe path %q is not stable: %q, %v", i, fl.SafePath, safe, err)
			}
		}
		if off != info.TotalLength {
			t.Fatalf("files sum to %d, total %d", off, info.TotalLength)
		}
		trackers := 0
		for _, tier := range m.AnnounceList {
			trackers += len(tier)
		}
		if len(m.URLList) > MaxWebSeeds || trackers > MaxTrackers {
			t.Fatalf("%d web seeds and %d trackers, limits %d and %d", len(m.URLList), trackers, MaxWebSeeds, MaxTrackers)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := lim.Parse(out)
		if err != nil {
			t.Fatalf("re-encoded torrent fails: %v", err)
		}
		if m2.InfoHash != m.InfoHash || !reflect.DeepEqual(m2.Info, m.Info) || !reflect.DeepEqual(m2.Trackers(), m.Trackers()) {
			t.Fatal("re-encoded torrent differs")
		}
	})
}
