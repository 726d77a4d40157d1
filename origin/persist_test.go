package origin

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// testTorrent returns a single-file torrent of 5 bytes named a.bin; its
// piece hash is arbitrary, as readRecord does not hash the file.
func testTorrent() []byte {
	info := "d6:lengthi5e4:name5:a.bin12:piece lengthi16384e6:pieces20:" + strings.Repeat("h", 20) + "e"
	return []byte("d4:info" + info + "e")
}

// multiFileTorrent returns a two-file torrent of 5 bytes in all.
func multiFileTorrent() []byte {
	info := "d5:filesld6:lengthi2e4:pathl1:aeed6:lengthi3e4:pathl1:beee4:name1:d12:piece lengthi16384e6:pieces20:" + strings.Repeat("h", 20) + "e"
	return []byte("d4:info" + info + "e")
}

// recordJSON returns a record file for rec, with the fields in edit
// replacing (or, when nil, removing) those of a valid record.
func recordJSON(t testing.TB, edit map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"key":      "/pub/a.bin",
		"path":     "/srv/www/pub/a.bin",
		"size":     5,
		"mtime_ns": baseTime.UnixNano(),
		"torrent":  testTorrent(),
	}
	for k, v := range edit {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// readRecordBytes writes data to a record file and reads it back through
// readRecord.
func readRecordBytes(t testing.TB, file string, data []byte) (Resource, *metainfo.MetaInfo, error) {
	t.Helper()
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return readRecord(file)
}

// padTo returns data followed by spaces, which JSON ignores, up to n bytes.
func padTo(data []byte, n int) []byte {
	return append(bytes.Clone(data), bytes.Repeat([]byte(" "), n-len(data))...)
}

func TestReadRecordValid(t *testing.T) {
	file := filepath.Join(t.TempDir(), "r"+recordExt)
	res, mi, err := readRecordBytes(t, file, recordJSON(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Resource{Key: "/pub/a.bin", Path: "/srv/www/pub/a.bin", Size: 5, ModTime: baseTime}
	if res.Key != want.Key || res.Path != want.Path || !sameVersion(res, want) {
		t.Errorf("got %+v, want %+v", res, want)
	}
	if mi.Info.Name != "a.bin" || mi.InfoHash != sha1.Sum(mi.InfoBytes) {
		t.Errorf("metainfo %q %s", mi.Info.Name, mi.InfoHash)
	}
	// A record of exactly maxRecord bytes is still read.
	if _, _, err := readRecordBytes(t, file, padTo(recordJSON(t, nil), maxRecord)); err != nil {
		t.Errorf("record of maxRecord bytes: %v", err)
	}
}

func TestReadRecordWritten(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, dir, "b.bin", content(100<<10, 7), baseTime)
	mi, err := metainfo.Build(context.Background(), src, metainfo.BuildOptions{PieceLength: 16 << 10, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	res := resourceOf(t, "/b.bin", src)
	file := filepath.Join(dir, recordName(res))
	if err := writeRecord(file, res, mi); err != nil {
		t.Fatal(err)
	}
	got, gotMI, err := readRecord(file)
	if err != nil || got.Key != res.Key || got.Path != res.Path || !sameVersion(got, res) || gotMI.InfoHash != mi.InfoHash {
		t.Fatalf("read back %+v, %v", got, err)
	}
}

func TestReadRecordHostile(t *testing.T) {
	valid := recordJSON(t, nil)
	tests := []struct {
		name string
		data []byte
		err  string // prefix of the error
	}{
		{"empty file", nil, "origin: record: "},
		{"truncated json", valid[:len(valid)/2], "origin: record: "},
		{"trailing garbage", append(bytes.Clone(valid), "{}"...), "origin: record: "},
		{"null", []byte("null"), "origin: record: "},
		{"array", []byte(`[1,2]`), "origin: record: "},
		{"deep nesting", []byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), "origin: record: "},
		{"size is a string", recordJSON(t, map[string]any{"size": "5"}), "origin: record: "},
		{"key is a number", recordJSON(t, map[string]any{"key": 5}), "origin: record: "},
		{"size overflows int64", bytes.Replace(valid, []byte(`"size":5`), []byte(`"size":99999999999999999999`), 1), "origin: record: "},
		{"size in exponent form", bytes.Replace(valid, []byte(`"size":5`), []byte(`"size":1e30`), 1), "origin: record: "},
		{"size fractional", bytes.Replace(valid, []byte(`"size":5`), []byte(`"size":5.5`), 1), "origin: record: "},
		{"mtime overflows int64", recordJSON(t, map[string]any{"mtime_ns": json.Number("9223372036854775808")}), "origin: record: "},
		{"torrent not base64", recordJSON(t, map[string]any{"torrent": "%%%"}), "origin: record: "},
		{"torrent missing", recordJSON(t, map[string]any{"torrent": nil}), "origin: record: "},
		{"torrent truncated", recordJSON(t, map[string]any{"torrent": testTorrent()[:30]}), "origin: record: "},
		{"torrent not bencode", recordJSON(t, map[string]any{"torrent": []byte("{not bencode}")}), "origin: record: "},
		{"size differs", recordJSON(t, map[string]any{"size": 6}), "origin: record does not describe its file"},
		{"size negative", recordJSON(t, map[string]any{"size": -5}), "origin: record does not describe its file"},
		{"size missing", recordJSON(t, map[string]any{"size": nil}), "origin: record does not describe its file"},
		{"multi-file torrent", recordJSON(t, map[string]any{"torrent": multiFileTorrent()}), "origin: record does not describe its file"},
		{"relative path", recordJSON(t, map[string]any{"path": "srv/a.bin"}), "origin: record: path"},
		{"empty path", recordJSON(t, map[string]any{"path": ""}), "origin: record: path"},
		{"unclean path", recordJSON(t, map[string]any{"path": "/srv/www/../../etc/shadow"}), "origin: record: path"},
		{"path with nul", recordJSON(t, map[string]any{"path": "/srv/a\x00.bin"}), "origin: record: path"},
		{"empty key", recordJSON(t, map[string]any{"key": ""}), "origin: record: key"},
		{"relative key", recordJSON(t, map[string]any{"key": "a.bin"}), "origin: record: key"},
		{"key with dot-dot", recordJSON(t, map[string]any{"key": "/a/../../b"}), "origin: record: key"},
		{"key with trailing slash", recordJSON(t, map[string]any{"key": "/a/"}), "origin: record: key"},
		{"key with nul", recordJSON(t, map[string]any{"key": "/a\x00b"}), "origin: record: key"},
		{"one byte over maxRecord", padTo(valid, maxRecord+1), "origin: record too large"},
	}
	file := filepath.Join(t.TempDir(), "r"+recordExt)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, mi, err := readRecordBytes(t, file, tt.data)
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Fatalf("error %v, want one starting %q", err, tt.err)
			}
			if res != (Resource{}) || mi != nil {
				t.Errorf("refused record gave %+v, %v", res, mi)
			}
		})
	}
}

// FuzzReadRecord plants arbitrary bytes as a record file, padded with
// spaces (valid JSON) past maxRecord when oversize is set, and reads them
// back through readRecord. A refused record must give nothing but an
// "origin: record" error; an accepted one must satisfy what Load and
// prepare rely on, and survive writeRecord and readRecord unchanged. The
// seed corpus is in testdata/fuzz/FuzzReadRecord.
func FuzzReadRecord(f *testing.F) {
	dir := f.TempDir()
	file := filepath.Join(dir, "fuzz"+recordExt)
	again := filepath.Join(dir, "again"+recordExt)
	f.Fuzz(func(t *testing.T, data []byte, oversize bool) {
		if oversize && len(data) <= maxRecord {
			data = padTo(data, maxRecord+1)
		}
		res, mi, err := readRecordBytes(t, file, data)
		if err != nil {
			if res != (Resource{}) || mi != nil || !strings.HasPrefix(err.Error(), "origin: record") {
				t.Fatalf("refused as (%+v, %v, %v)", res, mi, err)
			}
			if oversize && err.Error() != "origin: record too large" {
				t.Fatalf("oversize record refused with %v", err)
			}
			return
		}
		if oversize {
			t.Fatal("record over maxRecord accepted")
		}
		checkAcceptedRecord(t, res, mi)
		if err := writeRecord(again, res, mi); err != nil {
			t.Fatalf("accepted record cannot be written back: %v", err)
		}
		res2, mi2, err := readRecord(again)
		if err != nil || res2.Key != res.Key || res2.Path != res.Path || !sameVersion(res2, res) || mi2.InfoHash != mi.InfoHash {
			t.Fatalf("written back as (%+v, %v), want (%+v, %s)", res2, err, res, mi.InfoHash)
		}
	})
}

// checkAcceptedRecord fails t unless res and mi hold the invariants the
// Publisher relies on for a record it loads.
func checkAcceptedRecord(t *testing.T, res Resource, mi *metainfo.MetaInfo) {
	t.Helper()
	if mi == nil || mi.Info.MultiFile || mi.Info.TotalLength != res.Size || res.Size <= 0 {
		t.Fatalf("accepted %+v whose metainfo does not describe it", res)
	}
	if mi.InfoHash != sha1.Sum(mi.InfoBytes) {
		t.Fatalf("info-hash %s does not match the info bytes", mi.InfoHash)
	}
	if !strings.HasPrefix(res.Key, "/") || path.Clean(res.Key) != res.Key || strings.ContainsRune(res.Key, 0) {
		t.Fatalf("accepted key %q", res.Key)
	}
	if !filepath.IsAbs(res.Path) || filepath.Clean(res.Path) != res.Path || strings.ContainsRune(res.Path, 0) {
		t.Fatalf("accepted path %q", res.Path)
	}
	if !time.Unix(0, res.ModTime.UnixNano()).Equal(res.ModTime) {
		t.Fatalf("mtime %v does not survive UnixNano", res.ModTime)
	}
}
