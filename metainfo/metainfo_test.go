package metainfo

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/bencode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type vector struct {
	File        string `json:"file"`
	Tool        string `json:"tool"`
	InfoHash    string `json:"info_hash"`
	Name        string `json:"name"`
	PieceLength int64  `json:"piece_length"`
	NumPieces   int    `json:"num_pieces"`
	TotalLength int64  `json:"total_length"`
	Private     bool   `json:"private"`
	Files       []struct {
		Path   string `json:"path"`
		Length int64  `json:"length"`
	} `json:"files"`
	Trackers [][]string `json:"trackers"`
	WebSeeds []string   `json:"web_seeds"`
	Comment  string     `json:"comment"`
}

// TestRealToolVectors parses torrents made by mktorrent and
// transmission-create and checks them against what libtorrent reported.
func TestRealToolVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []vector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	tools := map[string]int{}
	for _, v := range vectors {
		tools[v.Tool]++
		t.Run(v.File, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if m.InfoHash.String() != v.InfoHash {
				t.Errorf("info-hash %s, libtorrent says %s", m.InfoHash, v.InfoHash)
			}
			info := &m.Info
			if info.Name != v.Name || info.PieceLength != v.PieceLength || info.NumPieces() != v.NumPieces ||
				info.TotalLength != v.TotalLength || info.Private != v.Private {
				t.Errorf("got name %q pl %d pieces %d total %d private %v", info.Name, info.PieceLength, info.NumPieces(), info.TotalLength, info.Private)
			}
			if len(info.Files) != len(v.Files) {
				t.Fatalf("%d files, want %d", len(info.Files), len(v.Files))
			}
			for i, f := range info.Files {
				p := f.DisplayPath()
				if info.MultiFile {
					p = strings.Join(f.Path[1:], "/")
				}
				if p != v.Files[i].Path || f.Length != v.Files[i].Length {
					t.Errorf("file %d: %q %d, want %q %d", i, p, f.Length, v.Files[i].Path, v.Files[i].Length)
				}
			}
			if got := m.Trackers(); !(len(got) == 0 && len(v.Trackers) == 0) && !reflect.DeepEqual(got, v.Trackers) {
				t.Errorf("trackers %q, want %q", got, v.Trackers)
			}
			if !(len(m.URLList) == 0 && len(v.WebSeeds) == 0) && !reflect.DeepEqual(m.URLList, v.WebSeeds) {
				t.Errorf("web seeds %q, want %q", m.URLList, v.WebSeeds)
			}
			if m.Comment != v.Comment {
				t.Errorf("comment %q, want %q", m.Comment, v.Comment)
			}
			// Re-encoding keeps the info-hash and parses to the same torrent.
			out, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			m2, err := Parse(out)
			if err != nil || m2.InfoHash != m.InfoHash {
				t.Fatalf("re-encoded: %v, hash %v", err, m2.InfoHash)
			}
		})
	}
	if tools["mktorrent"] < 3 || tools["transmission-create"] < 3 {
		t.Fatalf("want at least 3 vectors from each tool, have %v", tools)
	}
}

// torrent builds a .torrent from an info dictionary given as a map, so
// tests can break one thing at a time.
func torrent(t testing.TB, info map[string]any) []byte {
	t.Helper()
	b, err := bencode.Marshal(map[string]any{"announce": "http://127.0.0.1:6969/announce", "info": info})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func single(mod func(map[string]any)) map[string]any {
	info := map[string]any{
		"name":         "a.bin",
		"length":       40000,
		"piece length": 16384,
		"pieces":       strings.Repeat("x", 60),
	}
	if mod != nil {
		mod(info)
	}
	return info
}

func multi(files []any, mod func(map[string]any)) map[string]any {
	info := map[string]any{
		"name":         "dir",
		"files":        files,
		"piece length": 16384,
		"pieces":       strings.Repeat("x", 20),
	}
	if mod != nil {
		mod(info)
	}
	return info
}

func file(length int64, path ...string) map[string]any {
	p := make([]any, len(path))
	for i, s := range path {
		p[i] = s
	}
	return map[string]any{"length": length, "path": p}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"piece length 0", torrent(t, single(func(m map[string]any) { m["piece length"] = 0 })), ErrInvalid, "piece length 0"},
		{"negative piece length", torrent(t, single(func(m map[string]any) { m["piece length"] = -16384 })), ErrInvalid, "piece length"},
		{"missing piece length", torrent(t, single(func(m map[string]any) { delete(m, "piece length") })), ErrInvalid, "piece length 0"},
		{"piece length not block multiple", torrent(t, single(func(m map[string]any) { m["piece length"] = 20000 })), ErrInvalid, "multiple of 16384"},
		{"piece length over 64 MiB", torrent(t, single(func(m map[string]any) { m["piece length"] = 128 << 20 })), ErrInvalid, "piece length"},
		{"pieces of 19 bytes", torrent(t, single(func(m map[string]any) { m["pieces"] = strings.Repeat("x", 19) })), ErrInvalid, "pieces is 19 bytes"},
		{"empty pieces", torrent(t, single(func(m map[string]any) { m["pieces"] = "" })), ErrInvalid, "pieces is 0 bytes"},
		{"missing pieces", torrent(t, single(func(m map[string]any) { delete(m, "pieces") })), ErrInvalid, "pieces"},
		{"too few pieces", torrent(t, single(func(m map[string]any) { m["pieces"] = strings.Repeat("x", 40) })), ErrInvalid, "2 piece hashes"},
		{"too many pieces", torrent(t, single(func(m map[string]any) { m["pieces"] = strings.Repeat("x", 80) })), ErrInvalid, "4 piece hashes"},
		{"zero length", torrent(t, single(func(m map[string]any) { m["length"] = 0 })), ErrInvalid, "length 0"},
		{"negative length", torrent(t, single(func(m map[string]any) { m["length"] = -1 })), ErrInvalid, "length -1"},
		{"length and files", torrent(t, single(func(m map[string]any) { m["files"] = []any{file(1, "a")} })), ErrInvalid, "both length and files"},
		{"neither length nor files", torrent(t, single(func(m map[string]any) { delete(m, "length") })), ErrInvalid, "neither"},
		{"missing name", torrent(t, single(func(m map[string]any) { delete(m, "name") })), ErrInvalid, "missing name"},
		{"no info", []byte("d8:announce3:urle"), ErrInvalid, "no info"},
		{"info not a dict", []byte("d4:infoi1ee"), ErrInvalid, "info dictionary"},
		{"unsorted keys in info", []byte("d4:infod6:lengthi1e4:name1:a6:pieces20:xxxxxxxxxxxxxxxxxxxx12:piece lengthi16384eee"), bencode.ErrUnsortedKeys, "not sorted"},
		{"duplicate keys in info", []byte("d4:infod6:lengthi1e6:lengthi2e4:name1:a12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"), bencode.ErrDuplicateKey, "duplicate"},
		{"truncated", torrent(t, single(nil))[:50], bencode.ErrUnexpectedEOF, "unexpected end"},
		{"not bencode", []byte("<html>hello</html>"), ErrInvalid, "expected a value"},
		{"total length overflow", torrent(t, multi([]any{file(1<<62, "a"), file(1<<62, "b"), file(1<<62, "c")}, nil)), ErrInvalid, "overflows"},
		{"negative file length", torrent(t, multi([]any{file(-5, "a")}, nil)), ErrInvalid, "negative length"},
		{"empty files list", torrent(t, multi([]any{}, nil)), ErrInvalid, "empty files list"},
		{"all files empty", torrent(t, multi([]any{file(0, "a")}, nil)), ErrInvalid, "total length is 0"},
		{"empty path list", torrent(t, multi([]any{file(1)}, nil)), ErrInvalid, "empty path"},
		{"path ../../etc/passwd", torrent(t, multi([]any{file(1, "..", "..", "etc", "passwd")}, nil)), ErrUnsafePath, ".."},
		{"absolute path", torrent(t, multi([]any{file(1, "/etc/passwd")}, nil)), ErrUnsafePath, "unsafe"},
		{"name with newline", torrent(t, single(func(m map[string]any) { m["name"] = "evil\nname" })), ErrUnsafePath, "unsafe"},
		{"name is ..", torrent(t, single(func(m map[string]any) { m["name"] = ".." })), ErrUnsafePath, "unsafe"},
		{"duplicate paths", torrent(t, multi([]any{file(1, "a"), file(1, "a")}, nil)), ErrDuplicatePath, "duplicate"},
		{"file count over limit", torrent(t, multi(manyFiles(100_001), nil)), ErrInvalid, "limit 100000"},
		{"v2 only", torrent(t, map[string]any{"name": "a", "meta version": 2, "piece length": 16384, "file tree": map[string]any{}}), ErrUnsupported, "v2-only"},
		{"unknown meta version", torrent(t, single(func(m map[string]any) { m["meta version"] = 3 })), ErrUnsupported, "meta version 3"},
		{"file length not an integer", torrent(t, multi([]any{map[string]any{"length": "1", "path": []any{"a"}}}, nil)), ErrInvalid, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.data)
			if !errors.Is(err, tt.err) {
				t.Fatalf("got %v (%v), want %v", err, m, tt.err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestParsePieceCountLimit(t *testing.T) {
	data := torrent(t, single(func(m map[string]any) {
		m["pieces"] = strings.Repeat("x", 20*(1<<21+1))
		m["length"] = int64(16384) * (1<<21 + 1)
	}))
	_, err := Limits{MaxSize: 64 << 20}.Parse(data)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "2097153 pieces, limit 2097152") {
		t.Fatalf("got %v", err)
	}
}

func manyFiles(n int) []any {
	files := make([]any, n)
	for i := range files {
		files[i] = file(0, "f")
	}
	return files
}

func TestParseSizeLimit(t *testing.T) {
	data := torrent(t, single(nil))
	if _, err := (Limits{MaxSize: 10}).Parse(data); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse: got %v, want ErrTooLarge", err)
	}
	if _, err := (Limits{MaxSize: 10}).Read(bytes.NewReader(data)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Read: got %v, want ErrTooLarge", err)
	}
	big := bytes.Repeat([]byte("x"), DefaultMaxSize+1)
	if _, err := Read(bytes.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Read of 16 MiB + 1: got %v", err)
	}
}

func TestParseHybrid(t *testing.T) {
	data := torrent(t, single(func(m map[string]any) {
		m["meta version"] = 2
		m["file tree"] = map[string]any{"a.bin": map[string]any{"": map[string]any{"length": 40000, "pieces root": strings.Repeat("r", 32)}}}
	}))
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Info.Hybrid || m.Info.TotalLength != 40000 {
		t.Fatalf("hybrid %v total %d", m.Info.Hybrid, m.Info.TotalLength)
	}
}

func TestInfoHashIsRawBytes(t *testing.T) {
	data := torrent(t, single(func(m map[string]any) { m["x-unknown"] = []any{1, "two"} }))
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(data, []byte("4:infod")) + len("4:info")
	raw := data[start : len(data)-1]
	if m.InfoHash != sha1.Sum(raw) {
		t.Fatal("info-hash is not the SHA-1 of the raw info bytes")
	}
	// Parse copies its input: changing it afterwards changes nothing.
	data[start+5] = 'Z'
	if m.InfoHash != sha1.Sum(m.InfoBytes) {
		t.Fatal("parsed torrent aliases the caller's buffer")
	}
}

func TestLenientOuterFields(t *testing.T) {
	data, err := bencode.Marshal(map[string]any{
		"announce":      "http://127.0.0.1:1/announce",
		"announce-list": []any{[]any{"http://127.0.0.1:2/announce", 7, ""}, "not a tier", []any{}},
		"url-list":      "http://127.0.0.1:3/",
		"comment":       42,
		"creation date": "yesterday",
		"info":          single(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Trackers(), [][]string{{"http://127.0.0.1:2/announce"}}) {
		t.Fatalf("trackers %q", m.Trackers())
	}
	if !reflect.DeepEqual(m.URLList, []string{"http://127.0.0.1:3/"}) || m.Comment != "" || !m.CreationDate.IsZero() {
		t.Fatalf("got %q %q %v", m.URLList, m.Comment, m.CreationDate)
	}
}

// TestSourceCountLimits: a torrent may name at most MaxWebSeeds web seeds
// and MaxTrackers trackers. A hostile one with a million url-list entries
// (16 MiB allows that) would otherwise start three workers for each.
func TestSourceCountLimits(t *testing.T) {
	urls := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fmt.Sprintf("http://127.0.0.1:%d/f", i)
		}
		return out
	}
	parse := func(outer map[string]any) (*MetaInfo, error) {
		outer["info"] = single(nil)
		data, err := bencode.Marshal(outer)
		if err != nil {
			t.Fatal(err)
		}
		return Parse(data)
	}
	tests := []struct {
		name  string
		outer map[string]any
		msg   string // "" when it parses
	}{
		{"web seeds at the limit", map[string]any{"url-list": urls(MaxWebSeeds)}, ""},
		{"one web seed too many", map[string]any{"url-list": urls(MaxWebSeeds + 1)}, "more than 100 web seeds"},
		{"empty entries do not count", map[string]any{"url-list": append(urls(MaxWebSeeds), "", "", 7)}, ""},
		{"trackers at the limit, over tiers", map[string]any{"announce-list": []any{urls(MaxTrackers / 2), urls(MaxTrackers / 2)}}, ""},
		{"one tracker too many, over tiers", map[string]any{"announce-list": []any{urls(MaxTrackers / 2), urls(MaxTrackers/2 + 1)}}, "more than 200 trackers"},
		{"one tracker each in many tiers", map[string]any{"announce-list": func() []any {
			tiers := make([]any, MaxTrackers+1)
			for i := range tiers {
				tiers[i] = []any{fmt.Sprintf("http://127.0.0.1:%d/announce", i)}
			}
			return tiers
		}()}, "more than 200 trackers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parse(tt.outer)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if n := len(m.URLList); n > MaxWebSeeds {
					t.Fatalf("%d web seeds", n)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tt.msg)
			}
		})
	}
}

func TestFileLookup(t *testing.T) {
	files := []any{
		file(20000, "a.txt"),
		file(0, "empty"),
		map[string]any{"length": 12768, "path": []any{".pad", "12768"}, "attr": "p"},
		file(16384, "sub", "b.mp3"),
		file(1, "sub", "c"),
	}
	m, err := Parse(torrent(t, multi(files, func(i map[string]any) { i["pieces"] = strings.Repeat("x", 80) })))
	if err != nil {
		t.Fatal(err)
	}
	info := &m.Info
	tests := []struct {
		path   string
		index  int
		offset int64
		pieces PieceRange
	}{
		{"dir/a.txt", 0, 0, PieceRange{0, 2}},
		{"dir/empty", 1, 20000, PieceRange{1, 1}},
		{"dir/sub/b.mp3", 3, 32768, PieceRange{2, 3}},
		{"dir/sub/c", 4, 49152, PieceRange{3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			i, ok := info.FileByPath(tt.path)
			if !ok || i != tt.index {
				t.Fatalf("FileByPath = %d, %v", i, ok)
			}
			f := info.Files[i]
			if f.Offset != tt.offset || info.FilePieces(i) != tt.pieces {
				t.Fatalf("offset %d pieces %v", f.Offset, info.FilePieces(i))
			}
			if f.Length > 0 {
				if j, ok := info.FileAt(f.Offset); !ok || j != i {
					t.Fatalf("FileAt(%d) = %d", f.Offset, j)
				}
				if j, ok := info.FileAt(f.Offset + f.Length - 1); !ok || j != i {
					t.Fatalf("FileAt(last byte) = %d", j)
				}
			}
		})
	}
	if _, ok := info.FileByPath("dir/.pad/12768"); ok {
		t.Fatal("padding file found by path")
	}
	if _, ok := info.FileByPath("a.txt"); ok {
		t.Fatal("path without the torrent name found")
	}
	if _, ok := info.FileAt(info.TotalLength); ok {
		t.Fatal("FileAt past the end")
	}
	if info.PieceLen(3) != 1 || info.PieceLen(0) != 16384 {
		t.Fatalf("piece lengths %d %d", info.PieceLen(0), info.PieceLen(3))
	}
	if !info.Files[2].Padding() || info.Files[2].SafePath != "" {
		t.Fatal("padding file not recognised")
	}
}

func TestMagnetFromMetaInfo(t *testing.T) {
	m, err := Parse(torrent(t, single(nil)))
	if err != nil {
		t.Fatal(err)
	}
	mg, err := ParseMagnet(m.Magnet().String())
	if err != nil {
		t.Fatal(err)
	}
	if mg.InfoHash != m.InfoHash || mg.Name != "a.bin" || mg.Length != 40000 || len(mg.Trackers) != 1 {
		t.Fatalf("magnet %+v", mg)
	}
}

// TestHybridPieceLengthPowerOfTwo: BEP 52 says a hybrid torrent's piece
// length "must be a power of two and at least 16KiB"; a v1 torrent's need
// only be a multiple of 16 KiB, as deployed torrents have (HARDENING 9,
// a deliberate deviation).
func TestHybridPieceLengthPowerOfTwo(t *testing.T) {
	const pl = 3 * BlockSize // 48 KiB: a multiple of 16 KiB, not a power of two
	withPL := func(m map[string]any) {
		m["piece length"] = pl
		m["length"] = 100000
		m["pieces"] = strings.Repeat("x", 20*3) // ceil(100000/49152) = 3
	}
	t.Run("hybrid (BEP 52)", func(t *testing.T) {
		data := torrent(t, single(func(m map[string]any) {
			withPL(m)
			m["meta version"] = 2
			m["file tree"] = map[string]any{"a.bin": map[string]any{"": map[string]any{"length": 100000, "pieces root": strings.Repeat("r", 32)}}}
		}))
		if m, err := Parse(data); err == nil {
			t.Fatalf("hybrid torrent with piece length %d accepted (hybrid=%v)", pl, m.Info.Hybrid)
		}
	})
	t.Run("v1", func(t *testing.T) {
		if _, err := Parse(torrent(t, single(withPL))); err != nil {
			t.Fatalf("v1 torrent with piece length %d refused: %v", pl, err)
		}
	})
}
