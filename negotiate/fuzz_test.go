package negotiate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzAccept runs InjectAccept on arbitrary Accept values: no panic; when
// it injects, the result lists the torrent type exactly once, keeps every
// media range of the client in order, and has */* exactly when the client
// had it or sent nothing usable.
func FuzzAccept(f *testing.F) {
	f.Fuzz(func(t *testing.T, accept string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: "a.example", Path: "/f"},
			Header: http.Header{"Accept": {accept}}}
		before, parsed := parseAccept([]string{accept})
		injected, reason := InjectAccept(r, Config{})
		after := r.Header.Values("Accept")
		if !injected {
			if len(after) != 1 || after[0] != accept {
				t.Fatalf("not injected (%s) but Accept changed to %q", reason, after)
			}
			if reason != ReasonClientAccepts && reason != ReasonClientRefuses {
				t.Fatalf("unexpected reason %q", reason)
			}
			return
		}
		if len(after) != 1 {
			t.Fatalf("Accept has %d lines", len(after))
		}
		got, ok := parseAccept(after)
		if !ok {
			t.Fatalf("injected Accept %q does not parse", after[0])
		}
		ours, star := 0, false
		for _, mr := range got {
			if mr.isTorrent() {
				ours++
			}
			if mr.typ == "*" && mr.sub == "*" {
				star = true
			}
		}
		if ours != 1 {
			t.Fatalf("torrent type listed %d times in %q", ours, after[0])
		}
		if !parsed || len(before) == 0 {
			if after[0] != defaultAccept {
				t.Fatalf("absent or malformed Accept %q became %q", accept, after[0])
			}
			return
		}
		hadStar := false
		for i, mr := range before {
			if got[i+1].raw != mr.raw {
				t.Fatalf("client range %q lost or moved in %q", mr.raw, after[0])
			}
			hadStar = hadStar || mr.typ == "*" && mr.sub == "*"
		}
		if len(got) != len(before)+1 || star != hadStar {
			t.Fatalf("ranges %d -> %d, */* %v -> %v", len(before), len(got), hadStar, star)
		}
		if !safeValue(after[0]) {
			t.Fatalf("control character in %q", after[0])
		}
	})
}

// FuzzSniff checks that SniffTorrent does not panic, only recognises data
// that holds an info key, and does not change its mind when more of the
// body arrives.
func FuzzSniff(f *testing.F) {
	f.Fuzz(func(t *testing.T, prefix []byte) {
		if !SniffTorrent(prefix) {
			return
		}
		if !bytes.Contains(prefix, []byte("4:infod")) {
			t.Fatal("sniffed a torrent without an info dictionary")
		}
		if len(prefix) < SniffLen && !SniffTorrent(append(bytes.Clone(prefix), "garbage"...)) {
			t.Fatal("more bytes changed the verdict")
		}
	})
}

// FuzzParseRange checks ParseRange's results for any header and size: only
// its sentinel errors, at most MaxRanges non-empty ranges inside [0, size)
// with at most MaxOverlap over one byte.
func FuzzParseRange(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string, size int64) {
		rs, err := ParseRange(header, size)
		if err != nil {
			if rs != nil || !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsatisfiable) && !errors.Is(err, ErrTooManyRanges) {
				t.Fatalf("ParseRange = %v, %v", rs, err)
			}
			return
		}
		if len(rs) == 0 || len(rs) > MaxRanges {
			t.Fatalf("%d ranges", len(rs))
		}
		for _, r := range rs {
			if r.Start < 0 || r.End > size || r.Start >= r.End {
				t.Fatalf("range %v outside [0, %d)", r, size)
			}
		}
		if overlap(rs) > MaxOverlap {
			t.Fatalf("%v overlaps more than %d times", rs, MaxOverlap)
		}
	})
}

// FuzzContentRange checks ParseContentRange: no panic, a consistent range
// on success, and a round trip through its canonical form.
func FuzzContentRange(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string) {
		start, end, total, err := ParseContentRange(v)
		if err != nil {
			if errors.Is(err, ErrUnsatisfiable) && (total < 0 || start != -1 || end != -1) {
				t.Fatalf("unsatisfied form: %d %d %d", start, end, total)
			}
			return
		}
		if start < 0 || end <= start || total < -1 || total >= 0 && end > total {
			t.Fatalf("ParseContentRange(%q) = %d, %d, %d", v, start, end, total)
		}
		length := "*"
		if total >= 0 {
			length = fmt.Sprint(total)
		}
		s2, e2, t2, err := ParseContentRange(fmt.Sprintf("bytes %d-%d/%s", start, end-1, length))
		if err != nil || s2 != start || e2 != end || t2 != total {
			t.Fatalf("round trip: %d %d %d %v", s2, e2, t2, err)
		}
	})
}

// FuzzPickFile matches random request paths against a small multi-file
// torrent: no panic, and a picked file is a real, non-padding file whose
// last component is the last path segment and whose match beats every
// other file's.
func FuzzPickFile(f *testing.F) {
	m := multiTorrent(f)
	f.Fuzz(func(t *testing.T, path string) {
		u, err := url.Parse("http://a.example/" + strings.TrimPrefix(path, "/"))
		if err != nil {
			return
		}
		i, ok := PickFile(&m.Info, u)
		if !ok {
			return
		}
		if i < 0 || i >= len(m.Info.Files) || m.Info.Files[i].Padding() {
			t.Fatalf("picked file %d", i)
		}
		var segs []string
		for _, s := range strings.Split(u.EscapedPath(), "/") {
			seg, err := url.PathUnescape(s)
			if err != nil {
				t.Fatalf("picked %d for an undecodable path", i)
			}
			segs = append(segs, seg)
		}
		score := func(p []string) int {
			k := 0
			for k < len(p) && k < len(segs) && p[len(p)-1-k] == segs[len(segs)-1-k] {
				k++
			}
			return k
		}
		mine := score(m.Info.Files[i].Path)
		if mine == 0 {
			t.Fatalf("picked %d with no matching segment", i)
		}
		for j, fl := range m.Info.Files {
			if j != i && !fl.Padding() && score(fl.Path) >= mine {
				t.Fatalf("picked %d but %d matches as well", i, j)
			}
		}
		// FileRoot, when it finds one, names the picked file by the
		// very path the client asked for.
		root, skip, ok := FileRoot(&m.Info, i, u)
		if !ok {
			return
		}
		parts := m.Info.Files[i].Path[skip:]
		esc := make([]string, len(parts))
		for k, c := range parts {
			esc[k] = url.PathEscape(c)
		}
		again, err := url.Parse(root + strings.Join(esc, "/"))
		if err != nil || !strings.HasSuffix(root, "/") || again.Host != u.Host || again.Path != u.Path {
			t.Fatalf("FileRoot(%q) = %q, %d: names %v, not the picked file's path %q", u, root, skip, again, u.Path)
		}
	})
}

// FuzzCacheControl reads two Cache-Control field lines: no panic; lines
// longer than MaxCacheControlLen together count as every directive that
// stops a transformation, and as asking for a fresh answer (WantsFresh);
// shorter ones give lower-case, trimmed, non-empty names that the lines
// contain, no-transform only when they say it, and a fresh answer asked
// for only when they name no-cache, no-store or max-age.
func FuzzCacheControl(f *testing.F) {
	f.Fuzz(func(t *testing.T, a, b string) {
		h := http.Header{"Cache-Control": {a, b}}
		d := cacheControl(h)
		if len(a)+len(b) > MaxCacheControlLen {
			if !d.has("no-transform") || !d.has("private") || !d.has("no-store") || !WantsFresh(h) {
				t.Fatalf("over-long Cache-Control (%d bytes) read as %v", len(a)+len(b), d)
			}
			return
		}
		lower := strings.ToLower(a + "," + b)
		for name := range d {
			if name == "" || name != strings.ToLower(name) || name != strings.Trim(name, " \t") || !strings.Contains(lower, name) {
				t.Fatalf("directive %q from %q, %q", name, a, b)
			}
		}
		if d.has("no-transform") && !strings.Contains(lower, "no-transform") {
			t.Fatalf("no-transform read from %q, %q", a, b)
		}
		if WantsFresh(h) && !strings.Contains(lower, "no-cache") && !strings.Contains(lower, "no-store") && !strings.Contains(lower, "max-age") {
			t.Fatalf("a fresh answer asked for by %q, %q", a, b)
		}
	})
}

// FuzzPlainFile runs ParsePlainFile on arbitrary values of its two
// headers: no panic; a statement it accepts has a length over zero and
// reads back the same once written again by SetPlainFile.
func FuzzPlainFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, length, date string) {
		h := http.Header{PlainLengthHeader: {length}}
		if date != "" {
			h.Set(PlainLastModifiedHeader, date)
		}
		pf, err := ParsePlainFile(h)
		if err != nil {
			if errors.Is(err, ErrNoPlainFile) {
				t.Fatalf("a length was given, yet %v", err)
			}
			return
		}
		if pf.Size <= 0 {
			t.Fatalf("ParsePlainFile(%q, %q) = %+v", length, date, pf)
		}
		h2 := http.Header{}
		SetPlainFile(h2, pf.Size, pf.LastModified)
		pf2, err := ParsePlainFile(h2)
		if err != nil || pf2.Size != pf.Size || !pf2.LastModified.Equal(pf.LastModified) {
			t.Fatalf("round trip of %+v: %+v, %v", pf, pf2, err)
		}
	})
}

// FuzzAcceptsTorrent checks that no Accept without the type's name asks
// for a torrent.
func FuzzAcceptsTorrent(f *testing.F) {
	for _, s := range []string{"application/x-bittorrent", "application/x-bittorrent;q=0", `a/b;x="y,z", application/x-bittorrent;q=0.5`, "*/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AcceptsTorrent(http.Header{"Accept": {s}})
		if got && !strings.Contains(strings.ToLower(s), MediaType) {
			t.Fatalf("accepts %q, which does not name the type", s)
		}
	})
}

// FuzzServeRange checks ServeRange against http.ServeContent, the server
// that reads what it writes: for a Range that ParseRange accepts, the
// answer is a 206 of exactly its ranges (or, for several whose sum
// exceeds the representation, the whole of it, as ServeContent decides);
// for one it finds unsatisfiable, a 416 with "bytes */<size>" (but 200
// for an empty representation); for any other, the whole representation
// with 200.
func FuzzServeRange(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string, size uint16) {
		n := int64(size % 4096)
		content := make([]byte, n)
		for i := range content {
			content[i] = byte(i*7 + i>>8)
		}
		req := httptest.NewRequest(http.MethodGet, "/f", nil)
		req.Header.Set("Range", header)
		ServeRange(req.Header, n)
		rec := httptest.NewRecorder()
		http.ServeContent(rec, req, "", time.Time{}, bytes.NewReader(content))
		ranges, err := ParseRange(header, n)
		whole := func() {
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content) {
				t.Fatalf("Range %q (size %d, %v): status %d, %d bytes; want the whole", header, n, err, rec.Code, rec.Body.Len())
			}
		}
		switch {
		case n == 0:
			whole() // ServeContent ignores any Range for an empty representation (RFC 9110 §14.2 allows it)
		case errors.Is(err, ErrUnsatisfiable):
			if rec.Code != http.StatusRequestedRangeNotSatisfiable || rec.Header().Get("Content-Range") != fmt.Sprintf("bytes */%d", n) {
				t.Fatalf("Range %q (size %d): status %d, Content-Range %q; want 416", header, n, rec.Code, rec.Header().Get("Content-Range"))
			}
		case err != nil:
			whole()
		case len(ranges) == 1:
			r := ranges[0]
			if rec.Code != http.StatusPartialContent || !bytes.Equal(rec.Body.Bytes(), content[r.Start:r.End]) ||
				rec.Header().Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", r.Start, r.End-1, n) {
				t.Fatalf("Range %q (size %d): status %d, Content-Range %q, %d bytes; want %v", header, n, rec.Code, rec.Header().Get("Content-Range"), rec.Body.Len(), r)
			}
		default:
			var sum int64
			for _, r := range ranges {
				sum += r.Len()
			}
			if sum > n {
				whole()
				return
			}
			if rec.Code != http.StatusPartialContent || !strings.HasPrefix(rec.Header().Get("Content-Type"), "multipart/byteranges") {
				t.Fatalf("Range %q (size %d): status %d, type %q; want a multipart of %v", header, n, rec.Code, rec.Header().Get("Content-Type"), ranges)
			}
		}
	})
}

// FuzzPlainType runs ParsePlainFile on arbitrary values of the plain
// answer's Content-Type: no panic; a type it keeps is a media type of
// printable ASCII, not the metainfo type, and reads back the same once
// written again by SetPlainType.
func FuzzPlainType(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string) {
		pf, err := ParsePlainFile(http.Header{PlainLengthHeader: {"5"}, PlainContentTypeHeader: {v}})
		if err != nil {
			t.Fatalf("a good length, yet %v", err)
		}
		if pf.ContentType == "" {
			return
		}
		mt, _, err := mime.ParseMediaType(pf.ContentType)
		if err != nil || mt == MediaType || strings.ContainsFunc(pf.ContentType, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			t.Fatalf("kept %q from %q", pf.ContentType, v)
		}
		h := http.Header{PlainLengthHeader: {"5"}}
		SetPlainType(h, pf.ContentType)
		if pf2, err := ParsePlainFile(h); err != nil || pf2.ContentType != pf.ContentType {
			t.Fatalf("round trip of %q: %+v, %v", pf.ContentType, pf2, err)
		}
	})
}

// FuzzPrefixOf runs PrefixOf on any body, encoded in any coding the proxy
// decodes (or labelled with one it is not in): no panic, at most SniffLen
// bytes, the body left unread, and a prefix of the decoded body whenever
// the coding is true; Decide never takes a body for a torrent that
// SniffTorrent would not.
func FuzzPrefixOf(f *testing.F) {
	f.Add([]byte("d8:announce3:x:y4:infod6:lengthi1eee"), uint8(1), false)
	f.Add([]byte("<!doctype html>"), uint8(2), false)
	f.Add([]byte("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"), uint8(3), true)
	f.Add([]byte("d4:infod"), uint8(4), false)
	f.Fuzz(func(t *testing.T, data []byte, which uint8, typed bool) {
		codings := []string{"", "gzip", "deflate", "raw-deflate", "gzip"}
		c := codings[int(which)%len(codings)]
		enc := data
		lie := int(which)%len(codings) == 4 // plain bytes labelled gzip
		if !lie {
			enc = encode(t, c, data)
		}
		ctype := "application/octet-stream"
		if typed {
			ctype = MediaType
		}
		br := bufio.NewReaderSize(bytes.NewReader(enc), SniffLen)
		p := PrefixOf(br, answerHeader(ctype, c))
		if len(p) > SniffLen {
			t.Fatalf("prefix of %d bytes", len(p))
		}
		if rest, _ := io.ReadAll(br); !bytes.Equal(rest, enc) {
			t.Fatal("PrefixOf consumed the body")
		}
		if !lie && !bytes.HasPrefix(data, p) {
			t.Fatalf("prefix %q is not the start of the decoded body", p)
		}
	})
}
