package metainfo

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t testing.TB, path string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// referenceHashes hashes the concatenated data the slow, obvious way.
func referenceHashes(data []byte, pieceLen int) []byte {
	var out []byte
	for off := 0; off < len(data); off += pieceLen {
		sum := sha1.Sum(data[off:min(off+pieceLen, len(data))])
		out = append(out, sum[:]...)
	}
	return out
}

func TestBuildDirectory(t *testing.T) {
	root := filepath.Join(t.TempDir(), "album")
	var all []byte
	// WalkDir order: lexical within each directory.
	all = append(all, writeFile(t, filepath.Join(root, "a.bin"), 100_000)...)
	all = append(all, writeFile(t, filepath.Join(root, "b", "c.bin"), 16384)...)
	writeFile(t, filepath.Join(root, "b", "empty"), 0)
	all = append(all, writeFile(t, filepath.Join(root, "z.txt"), 7)...)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 2, 7} {
		m, err := Build(context.Background(), root, BuildOptions{
			PieceLength:  32768,
			Trackers:     [][]string{{"http://127.0.0.1:6969/announce"}, {"udp://127.0.0.1:6969"}},
			URLList:      []string{"http://127.0.0.1:8000/"},
			Comment:      "test",
			CreationDate: time.Unix(1700000000, 0),
			Private:      true,
			Workers:      workers,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Info.Pieces, referenceHashes(all, 32768); !reflect.DeepEqual(got, want) {
			t.Fatalf("workers=%d: piece hashes differ from the reference", workers)
		}
		var paths []string
		for _, f := range m.Info.Files {
			paths = append(paths, f.DisplayPath())
		}
		if want := []string{"album/a.bin", "album/b/c.bin", "album/b/empty", "album/z.txt"}; !reflect.DeepEqual(paths, want) {
			t.Fatalf("files %q, want %q (symlinks skipped)", paths, want)
		}
		data, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if p.InfoHash != m.InfoHash || !p.Info.Private || p.Announce != "http://127.0.0.1:6969/announce" ||
			len(p.AnnounceList) != 2 || p.Comment != "test" || p.CreationDate.Unix() != 1700000000 {
			t.Fatalf("round trip: %+v", p)
		}
	}
}

func TestBuildSingleFileAutoPieceLength(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podcast.mp3")
	data := writeFile(t, path, 3<<20+5)
	m, err := Build(context.Background(), path, BuildOptions{Trackers: [][]string{{"http://127.0.0.1:1/announce"}}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Info.MultiFile || m.Info.Name != "podcast.mp3" || m.Info.TotalLength != int64(len(data)) {
		t.Fatalf("info %+v", m.Info)
	}
	if m.Info.PieceLength != AutoPieceLength(int64(len(data))) {
		t.Fatalf("piece length %d", m.Info.PieceLength)
	}
	if !reflect.DeepEqual(m.Info.Pieces, referenceHashes(data, int(m.Info.PieceLength))) {
		t.Fatal("piece hashes differ from the reference")
	}
	if m.AnnounceList != nil || m.Announce == "" {
		t.Fatalf("one tracker must be announce only: %q %q", m.Announce, m.AnnounceList)
	}
	// Equal input builds equal bytes: no date unless asked.
	m2, err := Build(context.Background(), path, BuildOptions{Trackers: [][]string{{"http://127.0.0.1:1/announce"}}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m.Marshal()
	b, _ := m2.Marshal()
	if string(a) != string(b) {
		t.Fatal("build is not deterministic")
	}
}

func TestAutoPieceLength(t *testing.T) {
	tests := []struct {
		total, want int64
	}{
		{1, 16 << 10},
		{10 << 20, 16 << 10},
		{100 << 20, 128 << 10},
		{1 << 30, 1 << 20},
		{1 << 40, 16 << 20},
	}
	for _, tt := range tests {
		if got := AutoPieceLength(tt.total); got != tt.want {
			t.Errorf("AutoPieceLength(%d) = %d, want %d", tt.total, got, tt.want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	zero := filepath.Join(dir, "zero")
	os.WriteFile(zero, nil, 0o644)
	one := filepath.Join(dir, "one")
	writeFile(t, one, 100)
	tests := []struct {
		name string
		path string
		opts BuildOptions
		msg  string
	}{
		{"missing", filepath.Join(dir, "nope"), BuildOptions{}, "no such file"},
		{"empty directory", empty, BuildOptions{}, "holds no data"},
		{"empty file", zero, BuildOptions{}, "holds no data"},
		{"bad piece length", one, BuildOptions{PieceLength: 1000}, "multiple of 16384"},
		{"unsafe name", one, BuildOptions{Name: "../x"}, "unsafe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(context.Background(), tt.path, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.msg)
			}
		})
	}
}

func TestBuildCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeFile(t, path, 4<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, path, BuildOptions{PieceLength: 16384}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestBuildMappedAndSpanning covers pieces hashed straight from a mapped
// file and pieces that span a mapped and an unmapped file.
func TestBuildMappedAndSpanning(t *testing.T) {
	root := filepath.Join(t.TempDir(), "d")
	var all []byte
	all = append(all, writeFile(t, filepath.Join(root, "a-big"), minMapSize+12345)...)
	all = append(all, writeFile(t, filepath.Join(root, "b-small"), 1000)...)
	all = append(all, writeFile(t, filepath.Join(root, "c-big"), minMapSize+1)...)
	m, err := Build(context.Background(), root, BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Info.Pieces, referenceHashes(all, 64<<10)) {
		t.Fatal("piece hashes differ from the reference")
	}
}

// TestBuildRelativeDirNames: "." and ".." are named after the directories
// they stand for ('tbproxy torrent create .'), and a link to a directory
// is built as that directory.
func TestBuildRelativeDirNames(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "album")
	child := filepath.Join(parent, "sub")
	writeFile(t, filepath.Join(child, "a.bin"), 1000)
	t.Run("dot", func(t *testing.T) {
		t.Chdir(child)
		m, err := Build(context.Background(), ".", BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m.Info.Name != "sub" {
			t.Fatalf("Build(\".\") named the torrent %q, want %q", m.Info.Name, "sub")
		}
	})
	t.Run("dotdot", func(t *testing.T) {
		t.Chdir(child)
		m, err := Build(context.Background(), "..", BuildOptions{})
		if err != nil {
			t.Fatalf("Build(\"..\"): %v", err)
		}
		if m.Info.Name != "album" {
			t.Fatalf("Build(\"..\") named the torrent %q, want %q", m.Info.Name, "album")
		}
	})
	t.Run("symlinked directory", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "linked")
		if err := os.Symlink(child, link); err != nil {
			t.Fatal(err)
		}
		if _, err := Build(context.Background(), link, BuildOptions{}); err != nil {
			t.Fatalf("Build(symlink to a directory of 1000 bytes): %v", err)
		}
	})
}
