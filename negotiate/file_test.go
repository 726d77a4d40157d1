package negotiate

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

func TestReadMetainfo(t *testing.T) {
	good := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, nil)
	t.Run("good", func(t *testing.T) {
		m, raw, err := ReadMetainfo(bytes.NewReader(good))
		if err != nil || m == nil || !bytes.Equal(raw, good) || m.Info.Name != "a.bin" {
			t.Fatalf("ReadMetainfo = %v, %d bytes, %v", m, len(raw), err)
		}
	})
	tests := []struct {
		name string
		body io.Reader
		want error
	}{
		{"too large", io.MultiReader(bytes.NewReader(good), strings.NewReader(strings.Repeat("x", MaxMetainfoSize))), metainfo.ErrTooLarge},
		{"invalid", strings.NewReader("d4:infoi1ee"), metainfo.ErrInvalid},
		{"html", strings.NewReader("<html></html>"), metainfo.ErrInvalid},
		{"read error", iotest.ErrReader(io.ErrUnexpectedEOF), io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, raw, err := ReadMetainfo(tc.body)
			if !errors.Is(err, tc.want) || m != nil || raw != nil {
				t.Fatalf("ReadMetainfo = %v, %d bytes, %v; want %v", m, len(raw), err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "negotiate: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
	t.Run("reads no more than the cap", func(t *testing.T) {
		src := &countReader{}
		_, _, err := ReadMetainfo(src)
		if !errors.Is(err, metainfo.ErrTooLarge) || src.n != MaxMetainfoSize+1 {
			t.Fatalf("read %d bytes, err %v", src.n, err)
		}
	})
	if _, _, err := ReadMetainfo(nil); err == nil {
		t.Fatal("nil body accepted")
	}
}

// countReader is an endless reader of 'x' that counts what it gave.
type countReader struct{ n int64 }

func (c *countReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	c.n += int64(len(p))
	return len(p), nil
}

func multiTorrent(t testing.TB) *metainfo.MetaInfo {
	return parseTorrent(t, torrentBytes(t, "show", []fileSpec{
		{length: 100, path: []string{"s1", "ep1.mkv"}},
		{length: 100, path: []string{"s2", "ep1.mkv"}},
		{length: 16284, path: []string{".pad", "16284"}, attr: "p"},
		{length: 100, path: []string{"s1", "ep2.mkv"}},
		{length: 5, path: []string{"notes file.txt"}},
		{length: 5, path: []string{"a%2Fb"}},
		{length: 5, path: []string{"ünï"}},
	}, nil))
}

func TestPickFile(t *testing.T) {
	single := parseTorrent(t, torrentBytes(t, "movie.mkv", []fileSpec{{length: 40000}}, nil))
	multi := multiTorrent(t)
	tests := []struct {
		name   string
		m      *metainfo.MetaInfo
		target string
		want   int
		ok     bool
	}{
		{"single any url", single, "http://a.example/download?id=5", 0, true},
		{"single other name", single, "http://a.example/other.mkv", 0, true},
		{"unique last segment", multi, "http://a.example/x/ep2.mkv", 3, true},
		{"ambiguous last segment", multi, "http://a.example/ep1.mkv", 0, false},
		{"disambiguated by directory", multi, "http://a.example/media/s2/ep1.mkv", 1, true},
		{"full path with name", multi, "http://a.example/show/s1/ep1.mkv", 0, true},
		{"escaped space", multi, "http://a.example/notes%20file.txt", 4, true},
		{"escaped slash stays in its segment", multi, "http://a.example/a%252Fb", 5, true},
		{"unicode", multi, "http://a.example/%C3%BCn%C3%AF", 6, true},
		{"case matters", multi, "http://a.example/EP2.mkv", 0, false},
		{"no match", multi, "http://a.example/ep9.mkv", 0, false},
		{"trailing slash", multi, "http://a.example/s1/", 0, false},
		{"directory only", multi, "http://a.example/show/s1", 0, false},
		{"padding never picked", multi, "http://a.example/.pad/16284", 0, false},
		{"root", multi, "http://a.example/", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PickFile(&tc.m.Info, mustURL(t, tc.target))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("PickFile = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	t.Run("bad escape", func(t *testing.T) {
		u := mustURL(t, "http://a.example/")
		u.RawPath, u.Path = "/%zz", "/%zz"
		if _, ok := PickFile(&multi.Info, u); ok {
			t.Fatal("undecodable path picked a file")
		}
	})
	if _, ok := PickFile(nil, nil); ok {
		t.Fatal("nil info picked a file")
	}
	if _, ok := PickFile(&multi.Info, nil); ok {
		t.Fatal("nil url picked a file")
	}
}

func TestHeaders(t *testing.T) {
	m := parseTorrent(t, torrentBytes(t, "Clip.PNG", []fileSpec{{length: 40000}},
		map[string]any{"creation date": creation.Unix()}))
	origin := http.Header{
		"Cache-Control":       {"public, max-age=600"},
		"Vary":                {"Accept-Encoding"},
		"Via":                 {"1.1 cdn"},
		"Etag":                {`"origin"`},
		"Last-Modified":       {"Mon, 01 Jan 2001 00:00:00 GMT"},
		"Content-Length":      {"1234"},
		"Content-Type":        {MediaType},
		"Content-Encoding":    {"gzip"},
		"Content-Disposition": {`attachment; filename="x.torrent"`},
		"Set-Cookie":          {"s=1"},
		"Alt-Svc":             {`h3=":443"`},
		"Expires":             {"bad\x00value"},
	}
	h := Headers(m, 0, origin)
	want := map[string][]string{
		"Content-Type":           {"image/png"},
		"X-Content-Type-Options": {"nosniff"},
		"Accept-Ranges":          {"bytes"},
		"Etag":                   {`"bt-` + m.InfoHash.HexString() + `-0"`},
		"Last-Modified":          {creation.Format(http.TimeFormat)},
		"Content-Disposition":    {"inline; filename*=UTF-8''Clip.PNG"},
		"Cache-Control":          {"public, max-age=600"},
		"Via":                    {"1.1 cdn", ViaToken},
		"Vary":                   {"Accept-Encoding", "Accept"},
	}
	for k, v := range want {
		if got := h.Values(k); strings.Join(got, "|") != strings.Join(v, "|") {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for k := range h {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected header %s: %q", k, h[k])
		}
	}
	if h.Get("Content-Length") != "" {
		t.Error("Content-Length set")
	}

	t.Run("vary accept kept once", func(t *testing.T) {
		for _, v := range []string{"accept", "Origin, Accept", "*"} {
			h := Headers(m, 0, http.Header{"Vary": {v}})
			if got := h.Values("Vary"); len(got) != 1 || got[0] != v {
				t.Errorf("Vary %q became %q", v, got)
			}
		}
	})
	t.Run("nil origin and no date", func(t *testing.T) {
		m := parseTorrent(t, torrentBytes(t, "data.zzunknown", []fileSpec{{length: 1}}, nil))
		h := Headers(m, 0, nil)
		if h.Get("Content-Type") != "application/octet-stream" || h.Get("Last-Modified") != "" ||
			h.Get("Vary") != "Accept" || h.Get("Via") != ViaToken {
			t.Fatalf("headers %v", h)
		}
	})
	t.Run("the origin's word on the file's type", func(t *testing.T) {
		said := http.Header{PlainLengthHeader: {"40000"}, PlainContentTypeHeader: {"video/mp4"}}
		if ct := Headers(m, 0, said).Get("Content-Type"); ct != "video/mp4" {
			t.Errorf("Content-Type %q, want the origin's", ct)
		}
		said.Set(PlainContentTypeHeader, MediaType)
		if ct := Headers(m, 0, said).Get("Content-Type"); ct != "image/png" {
			t.Errorf("Content-Type %q for a word that is no file's type, want the name's", ct)
		}
	})
	t.Run("bad index", func(t *testing.T) {
		if Headers(m, 1, nil) != nil || Headers(m, -1, nil) != nil || Headers(nil, 0, nil) != nil {
			t.Fatal("headers for a missing file")
		}
	})
}

// TestHeadersHostileNames feeds file names that try to inject headers or
// markup; none may appear raw in any header.
func TestHeadersHostileNames(t *testing.T) {
	names := []struct {
		name   string
		wantCT string
		wantCD string // "" means omitted
	}{
		{"a\r\nSet-Cookie: x=1.png", "image/png", ""},
		{"evil.png\r\nX: y", "application/octet-stream", ""},
		{"<script>alert(1)</script>.html", "text/html; charset=utf-8", "inline; filename*=UTF-8''%3Cscript%3Ealert%281%29%3C%2Fscript%3E.html"},
		{`quote".png`, "image/png", "inline; filename*=UTF-8''quote%22.png"},
		{"tab\there.txt", "text/plain; charset=utf-8", ""},
		{"bidi\u202egnp.exe", "application/octet-stream", ""},
		{"x.p\x00ng", "application/octet-stream", ""},
		{"résumé 1.pdf", "application/pdf", "inline; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"},
		{"noext", "application/octet-stream", "inline; filename*=UTF-8''noext"},
		{"x.;charset=evil", "application/octet-stream", "inline; filename*=UTF-8''x.%3Bcharset%3Devil"},
		{"\xff\xfe.png", "image/png", ""},
		{strings.Repeat("a", 300) + ".png", "image/png", ""},
	}
	for _, tc := range names {
		t.Run(tc.name, func(t *testing.T) {
			// Build by hand: metainfo.Parse refuses control characters, but
			// Headers must be safe for any MetaInfo it is given.
			m := &metainfo.MetaInfo{
				CreationDate: time.Unix(1, 0),
				Info: metainfo.Info{
					Name:  tc.name,
					Files: []metainfo.File{{Path: []string{tc.name}, Length: 10}},
				},
			}
			h := Headers(m, 0, nil)
			if got := h.Get("Content-Type"); got != tc.wantCT && !(tc.wantCT == "text/plain; charset=utf-8" && got == "application/octet-stream") {
				t.Errorf("Content-Type = %q, want %q", got, tc.wantCT)
			}
			if got := h.Get("Content-Disposition"); got != tc.wantCD {
				t.Errorf("Content-Disposition = %q, want %q", got, tc.wantCD)
			}
			for k, vs := range h {
				for _, v := range vs {
					if !safeValue(v) || strings.ContainsAny(v, "<>") || !isASCII(v) {
						t.Errorf("%s: unsafe value %q", k, v)
					}
				}
			}
		})
	}
}

func TestFileSizeModTimeETag(t *testing.T) {
	multi := multiTorrent(t)
	if got := FileSize(&multi.Info, 4); got != 5 {
		t.Errorf("FileSize = %d", got)
	}
	for _, i := range []int{-1, len(multi.Info.Files)} {
		if got := FileSize(&multi.Info, i); got != -1 {
			t.Errorf("FileSize(%d) = %d", i, got)
		}
	}
	if FileSize(nil, 0) != -1 {
		t.Error("FileSize(nil)")
	}
	if !ModTime(multi).IsZero() || !ModTime(nil).IsZero() {
		t.Error("ModTime without a creation date")
	}
	m := &metainfo.MetaInfo{CreationDate: creation.Add(500 * time.Millisecond).In(time.FixedZone("x", 3600))}
	if got := ModTime(m); !got.Equal(creation) || got.Location() != time.UTC {
		t.Errorf("ModTime = %v", got)
	}
	if got := ETag(multi, 3); got != `"bt-`+multi.InfoHash.String()+`-3"` {
		t.Errorf("ETag = %s", got)
	}
	if ETag(nil, 0) != "" {
		t.Error("ETag(nil)")
	}
}

// TestPickFileEscapedSlashWithRawByte: an escaped "%2F" stays inside its
// segment even when the path also holds a byte that Go escapes but
// clients send raw ("|", UTF-8); then "s1%2Fep2.mkv" names no file, and
// PickFile falls back.
func TestPickFileEscapedSlashWithRawByte(t *testing.T) {
	multi := multiTorrent(t)
	// Control: the same URL without the raw byte falls back, as documented.
	if got, ok := PickFile(&multi.Info, mustURL(t, "http://a.example/xy/s1%2Fep2.mkv")); ok {
		t.Fatalf("control: PickFile = %d, true; want fallback", got)
	}
	for _, target := range []string{
		"http://a.example/x|y/s1%2Fep2.mkv",
		"http://a.example/\u00e9/s1%2Fep2.mkv",
	} {
		u := mustURL(t, target)
		if got, ok := PickFile(&multi.Info, u); ok {
			t.Errorf("%s (RawPath %q, EscapedPath %q): PickFile = %d, true; want fallback (ok == false)",
				target, u.RawPath, u.EscapedPath(), got)
		}
	}
}

// TestFileRoot: where the origin serves the other files of the torrent
// whose file the URL names, and how much of their paths it stands for.
func TestFileRoot(t *testing.T) {
	single := parseTorrent(t, torrentBytes(t, "movie.mkv", []fileSpec{{length: 40000}}, nil))
	multi := multiTorrent(t)
	tests := []struct {
		name   string
		m      *metainfo.MetaInfo
		idx    int
		target string
		root   string
		skip   int
		ok     bool
	}{
		{"whole path with the name", multi, 0, "http://a.example/media/show/s1/ep1.mkv", "http://a.example/media/", 0, true},
		{"the name left out", multi, 1, "http://a.example/media/s2/ep1.mkv?x=1", "http://a.example/media/", 1, true},
		{"at the root", multi, 4, "http://a.example/notes%20file.txt", "http://a.example/", 1, true},
		{"escaped slash", multi, 5, "http://a.example/d/a%252Fb", "http://a.example/d/", 1, true},
		{"port and scheme kept", multi, 0, "https://a.example:8443/m/s1/ep1.mkv", "https://a.example:8443/m/", 1, true},
		{"a directory left out that not all share", multi, 3, "http://a.example/x/ep2.mkv", "", 0, false},
		{"another file's URL", multi, 4, "http://a.example/x/ep2.mkv", "", 0, false},
		{"single-file torrent", single, 0, "http://a.example/movie.mkv", "", 0, false},
		{"no such file", multi, 99, "http://a.example/show/s1/ep1.mkv", "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, skip, ok := FileRoot(&tc.m.Info, tc.idx, mustURL(t, tc.target))
			if root != tc.root || skip != tc.skip || ok != tc.ok {
				t.Fatalf("FileRoot = %q, %d, %v; want %q, %d, %v", root, skip, ok, tc.root, tc.skip, tc.ok)
			}
		})
	}
}
