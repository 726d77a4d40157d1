package negotiate

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fileSpec is one file of a test torrent: its length and its path below
// the torrent name.
type fileSpec struct {
	length int64
	path   []string
	attr   string
}

// torrentBytes encodes a metainfo with the given files (one file and no
// path: a single-file torrent named name).
func torrentBytes(t testing.TB, name string, files []fileSpec, extra map[string]any) []byte {
	t.Helper()
	const pieceLen = 16 << 10
	info := map[string]any{"name": name, "piece length": pieceLen}
	var total int64
	if len(files) == 1 && files[0].path == nil {
		info["length"] = files[0].length
		total = files[0].length
	} else {
		var list []any
		for _, f := range files {
			p := make([]any, len(f.path))
			for i, c := range f.path {
				p[i] = c
			}
			d := map[string]any{"length": f.length, "path": p}
			if f.attr != "" {
				d["attr"] = f.attr
			}
			list = append(list, d)
			total += f.length
		}
		info["files"] = list
	}
	n := (total + pieceLen - 1) / pieceLen
	info["pieces"] = strings.Repeat("x", int(n)*metainfo.HashSize)
	top := map[string]any{"announce": "http://tracker.example/announce", "info": info}
	for k, v := range extra {
		top[k] = v
	}
	b, err := bencode.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseTorrent(t testing.TB, b []byte) *metainfo.MetaInfo {
	t.Helper()
	m, err := metainfo.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func getRequest(t testing.TB, target string, hdr ...string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

var creation = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
