package negotiate

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/metainfo"
)

// MaxMetainfoSize is the largest metainfo body ReadMetainfo accepts, in
// bytes.
const MaxMetainfoSize = 16 << 20

// maxFilenameLen bounds the file name put in Content-Disposition, in bytes
// before encoding.
const maxFilenameLen = 255

// ReadMetainfo reads a metainfo body of at most MaxMetainfoSize bytes and
// parses it. It returns the parsed metainfo and the bytes it was parsed
// from. A longer body is not read past the cap and yields an error wrapping
// metainfo.ErrTooLarge; an invalid one wraps the metainfo error
// (metainfo.ErrInvalid, metainfo.ErrUnsupported). On error nothing else is
// returned, and the caller refetches without the torrent type.
func ReadMetainfo(body io.Reader) (*metainfo.MetaInfo, []byte, error) {
	if body == nil {
		return nil, nil, errors.New("negotiate: reading metainfo: no body")
	}
	data, err := io.ReadAll(io.LimitReader(body, MaxMetainfoSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("negotiate: reading metainfo: %w", err)
	}
	if len(data) > MaxMetainfoSize {
		return nil, nil, fmt.Errorf("negotiate: metainfo exceeds %d bytes: %w", MaxMetainfoSize, metainfo.ErrTooLarge)
	}
	m, err := metainfo.Limits{MaxSize: MaxMetainfoSize}.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("negotiate: parsing metainfo: %w", err)
	}
	return m, data, nil
}

// PickFile finds the file of info that the request URL u names.
//
// A single-file torrent always yields file 0. In a multi-file torrent, the
// path of u is split at "/" and each segment is unescaped on its own (so an
// escaped "%2F" stays inside its segment); each non-padding file's Path
// components ([name, dirs..., file]) are compared with the segments from the
// end, and the file with the longest matching suffix wins. The last segment
// must equal the file's last component exactly (letter case included), and
// a tie between two files, a URL ending in "/" or an undecodable path yields
// ok == false: the caller falls back to plain HTTP rather than guess
// (HARDENING 22).
func PickFile(info *metainfo.Info, u *url.URL) (index int, ok bool) {
	if info == nil || len(info.Files) == 0 {
		return 0, false
	}
	if !info.MultiFile && len(info.Files) == 1 {
		return 0, true
	}
	if u == nil {
		return 0, false
	}
	segs, ok := pathSegments(u)
	if !ok {
		return 0, false
	}
	best, bestIdx, tie := 0, -1, false
	for i, f := range info.Files {
		if f.Padding() {
			continue
		}
		k := matched(f.Path, segs)
		switch {
		case k == 0:
		case k > best:
			best, bestIdx, tie = k, i, false
		case k == best:
			tie = true
		}
	}
	if best == 0 || tie {
		return 0, false
	}
	return bestIdx, true
}

// pathSegments splits the path of u at "/" into its segments, each
// unescaped on its own, as PickFile compares them. ok is false for a path
// that ends in "/" or does not unescape.
func pathSegments(u *url.URL) (segs []string, ok bool) {
	// The path as the client wrote it, when that differs from Path's own
	// encoding: only it keeps a "%2F" apart from a "/". (EscapedPath would
	// drop it for a byte Go escapes but clients send raw, such as "|".)
	// Without it, Path holds no escaped slash.
	segs = strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if u.RawPath != "" {
		segs = strings.Split(strings.TrimPrefix(u.RawPath, "/"), "/")
		for i, s := range segs {
			seg, err := url.PathUnescape(s)
			if err != nil {
				return nil, false
			}
			segs[i] = seg
		}
	}
	return segs, segs[len(segs)-1] != ""
}

// matched is how many of the last components of path equal the last
// segments of segs.
func matched(path, segs []string) int {
	k := 0
	for k < len(path) && k < len(segs) && path[len(path)-1-k] == segs[len(segs)-1-k] {
		k++
	}
	return k
}

// FileRoot finds, for file index of a multi-file torrent named by the
// request URL u (PickFile), where the origin serves the torrent's other
// files: root, a URL ending in "/" under which each file's path follows
// from its component skip on (BEP 19 with the first skip components,
// the torrent's name first, already in root). A piece that spans two files
// needs the other's bytes, which u itself cannot give. ok is false for a
// single-file torrent, a URL that names no file of it, or files that do
// not all share the components that u leaves out.
func FileRoot(info *metainfo.Info, index int, u *url.URL) (root string, skip int, ok bool) {
	if info == nil || !info.MultiFile || u == nil || index < 0 || index >= len(info.Files) {
		return "", 0, false
	}
	segs, ok := pathSegments(u)
	if !ok {
		return "", 0, false
	}
	path := info.Files[index].Path
	k := matched(path, segs)
	if k == 0 {
		return "", 0, false
	}
	skip = len(path) - k
	for _, f := range info.Files {
		if f.Padding() {
			continue
		}
		if len(f.Path) <= skip || !slices.Equal(f.Path[:skip], path[:skip]) {
			return "", 0, false
		}
	}
	esc := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	if len(esc) != len(segs) {
		return "", 0, false
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host}
	dir := strings.Join(esc[:len(esc)-k], "/")
	if dir != "" {
		dir += "/"
	}
	return r.String() + "/" + dir, skip, true
}

// FileSize is the length in bytes of file index of info, or -1 when there
// is no such file.
func FileSize(info *metainfo.Info, index int) int64 {
	if info == nil || index < 0 || index >= len(info.Files) {
		return -1
	}
	return info.Files[index].Length
}

// ModTime is the modification time to give http.ServeContent for a file of
// m: its creation date, to the second, or the zero time when the torrent
// has none (then no Last-Modified is sent).
func ModTime(m *metainfo.MetaInfo) time.Time {
	if m == nil || m.CreationDate.IsZero() || m.CreationDate.Unix() <= 0 {
		return time.Time{}
	}
	return m.CreationDate.UTC().Truncate(time.Second)
}

// ETag is the strong, content-addressed entity tag of file index of m:
// "bt-<info-hash hex>-<index>", quotes included; "" for a nil m.
func ETag(m *metainfo.MetaInfo, index int) string {
	if m == nil {
		return ""
	}
	return `"bt-` + m.InfoHash.HexString() + "-" + strconv.Itoa(index) + `"`
}

// keptHeaders are the origin response fields that Headers copies. They
// describe the resource or its caching, not the metainfo's bytes, and apply
// unchanged to the file served in its place: freshness (Cache-Control is
// kept verbatim, never transformed), CORS, and transport security.
var keptHeaders = [...]string{
	"Cache-Control",
	"Expires",
	"Date",
	"Age",
	"Pragma",
	"Access-Control-Allow-Origin",
	"Access-Control-Allow-Credentials",
	"Access-Control-Expose-Headers",
	"Timing-Allow-Origin",
	"Cross-Origin-Resource-Policy",
	"Strict-Transport-Security",
}

// Headers synthesises the response headers for serving file index of m in
// place of the origin's metainfo response, whose header is origin (may be
// nil). It returns nil when index names no file.
//
// Set here:
//   - Content-Type: the one the origin says its plain answer has
//     (PlainContentTypeHeader, through ParsePlainFile), else from the file
//     name's extension through mime.TypeByExtension, or
//     application/octet-stream; an extension that is not plain ASCII
//     letters, digits, "-", "_" or "+" is not looked up, and the result is
//     reparsed and reformatted, so no text from the torrent reaches the
//     header;
//   - X-Content-Type-Options: nosniff, so that a browser does not second
//     guess that type;
//   - Accept-Ranges: bytes;
//   - ETag: "bt-<info-hash>-<index>" (strong; see ETag);
//   - Last-Modified from the creation date, when there is one (ModTime);
//   - Content-Disposition: inline with only a filename* parameter (RFC 6266,
//     RFC 8187 UTF-8 percent-encoding) naming the file, when its name is
//     valid UTF-8 of printable characters and at most 255 bytes; omitted
//     otherwise. inline keeps the browser's behaviour; the parameter only
//     names the file when it is saved;
//   - Via: the origin's elements, then "1.1 tbproxy";
//   - Vary: the origin's, with Accept added unless listed or "*": the
//     origin chose the torrent because of the Accept, and a cache must not
//     serve this file to a client asking for the torrent itself.
//
// Copied from origin, verbatim, only when free of control characters:
// Cache-Control, Expires, Date, Age, Pragma, Access-Control-Allow-Origin,
// Access-Control-Allow-Credentials, Access-Control-Expose-Headers,
// Timing-Allow-Origin, Cross-Origin-Resource-Policy and
// Strict-Transport-Security. Nothing else is: the origin's ETag,
// Last-Modified, Content-Length, Content-Type, Content-Encoding,
// Content-Disposition, Content-Range and Set-Cookie describe the metainfo
// or the user and are never passed on.
//
// Content-Length is not set: http.ServeContent sets it (FileSize gives the
// value for a caller that needs it first).
func Headers(m *metainfo.MetaInfo, index int, origin http.Header) http.Header {
	if m == nil || index < 0 || index >= len(m.Info.Files) {
		return nil
	}
	f := m.Info.Files[index]
	name := ""
	if len(f.Path) > 0 {
		name = f.Path[len(f.Path)-1]
	}
	h := make(http.Header)
	for _, k := range keptHeaders {
		for _, v := range origin.Values(k) {
			if safeValue(v) {
				h.Add(k, v)
			}
		}
	}
	h.Set("Content-Type", contentType(name))
	if pf, err := ParsePlainFile(origin); err == nil && pf.ContentType != "" {
		h.Set("Content-Type", pf.ContentType) // the origin's word on its file's type
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", ETag(m, index))
	if t := ModTime(m); !t.IsZero() {
		h.Set("Last-Modified", t.Format(http.TimeFormat))
	}
	if cd := contentDisposition(name); cd != "" {
		h.Set("Content-Disposition", cd)
	}
	for _, v := range origin.Values("Via") {
		if safeValue(v) {
			h.Add("Via", v)
		}
	}
	AddVia(h, 1, 1)
	varyAccept := false
	for _, v := range origin.Values("Vary") {
		if !safeValue(v) {
			continue
		}
		h.Add("Vary", v)
		for _, elem := range splitList(v) {
			if elem == "*" || strings.EqualFold(elem, "Accept") {
				varyAccept = true
			}
		}
	}
	if !varyAccept {
		h.Add("Vary", "Accept")
	}
	return h
}

// contentType maps a file name to a media type by its extension.
func contentType(name string) string {
	const fallback = "application/octet-stream"
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 || len(name)-dot < 2 || len(name)-dot > 17 {
		return fallback
	}
	ext := name[dot:]
	for i := 1; i < len(ext); i++ {
		c := ext[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '+') {
			return fallback
		}
	}
	t := mime.TypeByExtension(ext)
	if t == "" {
		return fallback
	}
	mt, params, err := mime.ParseMediaType(t)
	if err != nil {
		return fallback
	}
	t = mime.FormatMediaType(mt, params)
	if t == "" || !safeValue(t) || !isASCII(t) {
		return fallback
	}
	return t
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// contentDisposition builds an inline disposition whose filename* is the
// RFC 8187 encoding of a printable name (charset UTF-8, no language), or ""
// when the name is unfit.
func contentDisposition(name string) string {
	if name == "" || name == "." || name == ".." || len(name) > maxFilenameLen || !utf8.ValidString(name) {
		return ""
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return ""
		}
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString("inline; filename*=UTF-8''")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// isAttrChar reports whether c may appear unencoded in an RFC 8187
// ext-value.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
