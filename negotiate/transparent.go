package negotiate

import (
	"bufio"
	"mime"
	"net/http"
	"strings"
)

// SniffLen is how many bytes of a response body SniffTorrent looks at, at
// most. The proxy peeks this many bytes (or fewer, at the end of the body).
// It leaves room for a long announce-list before the info key, which sorts
// after announce, comment, created by, creation date and encoding.
const SniffLen = 16 << 10

// maxSniffDepth bounds the nesting SniffTorrent follows inside skipped
// values; real torrents nest two or three levels before info.
const maxSniffDepth = 32

// Reasons reported in a Decision.
const (
	// DecideTransform: a transparent torrent answer; serve the file from
	// the swarm.
	DecideTransform = "transparent torrent answer"
	// DecideNoResponse: resp is nil.
	DecideNoResponse = "no response"
	// DecideNotInjected: tbproxy did not add the torrent type to the
	// request, so the answer passes through untouched, even when it is a
	// torrent (HARDENING 56).
	DecideNotInjected = "accept not injected"
	// DecideNotGET: the request was not a GET, or is unknown. Never
	// transformed and never replayed (HARDENING 68).
	DecideNotGET = "request is not get"
	// DecideNotTorrent: an ordinary answer; pass it through.
	DecideNotTorrent = "not a torrent"
	// DecideStatus: a torrent with a status other than 200 (a 206 slice
	// of the metainfo, an error page typed as a torrent). Refetch.
	DecideStatus = "torrent answer is not 200"
	// DecideNoTransform: the response says Cache-Control: no-transform
	// (HARDENING 57). Refetch.
	DecideNoTransform = "response cache-control no-transform"
	// DecidePrivate: the response says Cache-Control: private; the swarm
	// must never see it (HARDENING 58). Refetch.
	DecidePrivate = "response cache-control private"
	// DecideNoStore: the response says Cache-Control: no-store (HARDENING
	// 58). Refetch.
	DecideNoStore = "response cache-control no-store"
	// DecideTorrentDownload: the origin marks the torrent as a download
	// of a ".torrent" file (Content-Disposition), the sign of a link to a
	// torrent rather than of negotiation. Refetch.
	DecideTorrentDownload = "origin serves a .torrent download"
	// DecideMagnetBody: a transparent answer whose body is a magnet URI
	// (Kind KindMagnetBody).
	DecideMagnetBody = "transparent magnet answer"
	// DecideMagnetLink: an ordinary answer whose Link header names a
	// magnet with rel="describedby" (Kind KindMagnetLink).
	DecideMagnetLink = "link header names a magnet"
	// DecideLinkNotUsable: a Link header names a magnet, but the answer
	// is not a 200 or its Cache-Control forbids the swarm (no-transform,
	// private, no-store). The answer itself is the resource, so it passes
	// through.
	DecideLinkNotUsable = "magnet link on an answer that must not be transformed"
)

// Kind says where a transparent answer names its torrent.
type Kind int

const (
	// KindMetainfo: the body is the metainfo; read it with ReadMetainfo.
	KindMetainfo Kind = iota
	// KindMagnetBody: the body is a magnet URI; read it with ReadMagnet.
	// The body is not the resource.
	KindMagnetBody
	// KindMagnetLink: a Link header names the magnet (MagnetLink finds
	// it). The body is the resource itself, the answer any client would
	// get, and may be passed through when the magnet is of no use.
	KindMagnetLink
)

// Decision says what the proxy does with an origin's answer to a request
// that InjectAccept may have changed.
//
//   - Transform: serve the torrent's file from the swarm (read the
//     metainfo with ReadMetainfo, pick the file with PickFile, build headers
//     with Headers). If the metainfo is unusable, refetch as for Refetch.
//   - Refetch: the answer is a torrent that the client did not ask for (the
//     Accept was injected) but that must not be transformed. Discard it and
//     repeat the request as the client sent it, without the injected Accept;
//     the answer to that passes through untouched.
//   - neither: pass the answer through untouched.
//
// Transform and Refetch are never both true. Reason is one of the Decide
// constants, for logs and metrics. With Transform, Kind says whether the
// torrent comes as metainfo (read it with ReadMetainfo) or as a magnet
// (ReadMagnet, MagnetLink); the steps after that are the same.
type Decision struct {
	Transform bool   // serve the file from the swarm; implies !Refetch
	Refetch   bool   // a torrent the client did not ask for: refetch plainly
	Reason    string // one of the Decide constants
	Kind      Kind   // with Transform: where the torrent is named
}

// Decide classifies resp, the answer to resp.Request. injected is what
// InjectAccept returned for that request; prefix is the start of the body,
// up to SniffLen bytes, or nil to decide from the headers alone.
//
// A response is transformed only when tbproxy injected the Accept, the
// request was a GET, the status is 200, and it is a torrent: its
// Content-Type's media type is MediaType or the prefix sniffs as one.
// A torrent that fails any further rule is refetched: a status other than
// 200, Cache-Control no-transform, private or no-store, or a
// Content-Disposition naming a ".torrent" file. Content-Encoding is not
// examined here: PrefixOf gives the decoded start of a gzip or deflate
// body, and metainfo in another coding fails ReadMetainfo (read through
// Decoded) and is refetched then.
func Decide(resp *http.Response, injected bool, prefix []byte) Decision {
	if resp == nil {
		return Decision{Reason: DecideNoResponse}
	}
	if !injected {
		return Decision{Reason: DecideNotInjected}
	}
	if req := resp.Request; req == nil || (req.Method != http.MethodGet && req.Method != "") {
		return Decision{Reason: DecideNotGET}
	}
	cc := cacheControl(resp.Header)
	torrentType := isTorrentType(resp.Header.Get("Content-Type"))
	if !torrentType && !SniffTorrent(prefix) {
		if _, ok := MagnetLink(resp.Header); !ok {
			return Decision{Reason: DecideNotTorrent}
		}
		if resp.StatusCode != http.StatusOK || cc.has("no-transform") || cc.has("private") || cc.has("no-store") {
			return Decision{Reason: DecideLinkNotUsable}
		}
		return Decision{Transform: true, Reason: DecideMagnetLink, Kind: KindMagnetLink}
	}
	refetch := func(reason string) Decision { return Decision{Refetch: true, Reason: reason} }
	switch {
	case resp.StatusCode != http.StatusOK:
		return refetch(DecideStatus)
	case cc.has("no-transform"):
		return refetch(DecideNoTransform)
	case cc.has("private"):
		return refetch(DecidePrivate)
	case cc.has("no-store"):
		return refetch(DecideNoStore)
	case torrentAttachment(resp.Header.Get("Content-Disposition")):
		return refetch(DecideTorrentDownload)
	case torrentType && magnetPrefix(prefix):
		return Decision{Transform: true, Reason: DecideMagnetBody, Kind: KindMagnetBody}
	}
	return Decision{Transform: true, Reason: DecideTransform}
}

// Prefix peeks at the start of a body for Decide, waiting for no more of
// it than Decide needs: the magnet scheme's length when the Content-Type
// is BitTorrent's, and otherwise two bytes, unless they can start a
// bencoded dictionary, when SniffLen. A torrent's metainfo is then known
// for one as soon as its headers are, and a slow answer that is no torrent
// (an event stream, a long poll) is not held back until SniffLen bytes or
// its end have arrived. br must hold at least SniffLen bytes.
func Prefix(br *bufio.Reader, contentType string) []byte {
	if isTorrentType(contentType) {
		b, _ := br.Peek(len(magnetScheme))
		return b
	}
	b, _ := br.Peek(2)
	if len(b) < 2 || !mayStartDict(b) {
		return b
	}
	b, _ = br.Peek(SniffLen)
	return b
}

// mayStartDict reports whether b, at least two bytes, can start a
// bencoded dictionary: "de", or "d" and a key's length.
func mayStartDict(b []byte) bool {
	return b[0] == 'd' && (b[1] == 'e' || (b[1] >= '0' && b[1] <= '9'))
}

// IsTransparent reports whether resp may be served from the swarm, judging
// by its headers alone (Decide with no body prefix): a body that only
// sniffs as a torrent is not seen.
func IsTransparent(resp *http.Response, injected bool) bool {
	return Decide(resp, injected, nil).Transform
}

// isTorrentType reports whether a Content-Type value has MediaType as its
// media type, whatever its parameters.
func isTorrentType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		mt, _, _ = strings.Cut(v, ";")
		mt = strings.ToLower(strings.Trim(mt, " \t"))
	}
	return mt == MediaType
}

// torrentAttachment reports whether a Content-Disposition value names a
// file ending in ".torrent".
func torrentAttachment(v string) bool {
	if v == "" {
		return false
	}
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return strings.Contains(strings.ToLower(v), ".torrent")
	}
	name := params["filename"]
	return len(name) >= 8 && strings.EqualFold(name[len(name)-8:], ".torrent")
}

// SniffTorrent reports whether prefix, the start of a body, looks like a
// .torrent file: a bencoded dictionary that reaches an "info" key whose
// value is a dictionary. The keys and values before info are checked for
// strict bencode framing (no leading zeros, no "-0", byte strings within
// the prefix); values are skipped, not decoded. Only the first SniffLen bytes
// are looked at, so a metainfo whose info key starts later is not
// recognised (Content-Type still is). It never allocates.
func SniffTorrent(prefix []byte) bool {
	if len(prefix) > SniffLen {
		prefix = prefix[:SniffLen]
	}
	s := sniffer{b: prefix}
	if !s.next('d') {
		return false
	}
	for {
		if s.pos >= len(s.b) || s.b[s.pos] == 'e' {
			return false
		}
		key, ok := s.str()
		if !ok {
			return false
		}
		if string(key) == "info" {
			return s.pos < len(s.b) && s.b[s.pos] == 'd'
		}
		if !s.skip(0) {
			return false
		}
	}
}

// sniffer walks bencode framing within a byte slice.
type sniffer struct {
	b   []byte
	pos int // index of the next unread byte
}

func (s *sniffer) next(c byte) bool {
	if s.pos < len(s.b) && s.b[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// digits reads a run of decimal digits with no leading zero (a lone "0" is
// fine) and returns its value, or ok == false.
func (s *sniffer) digits() (n int, ok bool) {
	start := s.pos
	for s.pos < len(s.b) && '0' <= s.b[s.pos] && s.b[s.pos] <= '9' {
		if s.pos-start >= 9 {
			return 0, false // no string in a prefix is that long
		}
		n = n*10 + int(s.b[s.pos]-'0')
		s.pos++
	}
	if s.pos == start || s.b[start] == '0' && s.pos-start > 1 {
		return 0, false
	}
	return n, true
}

// str reads a byte string "<len>:<bytes>" wholly inside the prefix.
func (s *sniffer) str() ([]byte, bool) {
	n, ok := s.digits()
	if !ok || !s.next(':') || n > len(s.b)-s.pos {
		return nil, false
	}
	v := s.b[s.pos : s.pos+n]
	s.pos += n
	return v, true
}

// skip steps over one value, nested at most maxSniffDepth deep.
func (s *sniffer) skip(depth int) bool {
	if depth > maxSniffDepth || s.pos >= len(s.b) {
		return false
	}
	switch c := s.b[s.pos]; {
	case c == 'i':
		s.pos++
		neg := s.next('-')
		start := s.pos
		for s.pos < len(s.b) && '0' <= s.b[s.pos] && s.b[s.pos] <= '9' {
			s.pos++
		}
		n := s.pos - start
		if n == 0 || n > 20 || s.b[start] == '0' && (n > 1 || neg) {
			return false
		}
		return s.next('e')
	case c == 'l':
		s.pos++
		for !s.next('e') {
			if !s.skip(depth + 1) {
				return false
			}
		}
		return true
	case c == 'd':
		s.pos++
		for !s.next('e') {
			if _, ok := s.str(); !ok || !s.skip(depth+1) {
				return false
			}
		}
		return true
	case '0' <= c && c <= '9':
		_, ok := s.str()
		return ok
	}
	return false
}
