package server

import (
	"errors"
	"math"
	"net/netip"
	"strings"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// Limits on request size. Real clients send about 300 bytes and fifteen
// parameters; the caps leave room for that and refuse anything far larger
// before any work is done.
const (
	// MaxAnnounceQuery is the longest raw announce query accepted.
	MaxAnnounceQuery = 4096
	// MaxAnnounceParams is the most parameters an announce query may have.
	MaxAnnounceParams = 32
	// maxScrapeExtraParams is how many parameters besides info_hash a
	// scrape query may carry.
	maxScrapeExtraParams = 8
	// scrapeBytesPerHash is the longest "info_hash=<60 escaped bytes>&".
	scrapeBytesPerHash = 71
	// maxNumWantParsed is where a parsed numwant saturates.
	maxNumWantParsed = 1<<31 - 1
)

var (
	// ErrQueryTooLong refuses a query over the length cap.
	ErrQueryTooLong = errors.New("request too long")
	// ErrTooManyParams refuses a query with too many parameters.
	ErrTooManyParams = errors.New("too many parameters")
	// ErrFullScrape refuses a scrape without info_hash: full scrapes are
	// disabled.
	ErrFullScrape = errors.New("full scrape disabled")
	// ErrTooManyHashes refuses a scrape for more info-hashes than allowed.
	ErrTooManyHashes = errors.New("too many info_hash")
)

// ParamError is a missing, repeated or malformed query parameter. Its
// message names only the parameter, so it is safe to send to the client.
type ParamError struct {
	Param   string // the parameter's name, e.g. "info_hash"
	Missing bool   // true when absent, false when present but invalid
}

// Error returns "missing <param>" or "invalid <param>".
func (e *ParamError) Error() string {
	if e.Missing {
		return "missing " + e.Param
	}
	return "invalid " + e.Param
}

// Request is a parsed announce. Numbers are what the client sent; policy
// (numwant clamping, which address to use) is applied by the Handler.
type Request struct {
	InfoHash metainfo.Hash
	PeerID   [20]byte
	Port     uint16 // never 0
	// Byte counts; never negative. Left is 0 for a seed, and also when
	// the client did not send it, while LeftKnown tells the two apart.
	Uploaded, Downloaded, Left int64
	LeftKnown                  bool
	Event                      tracker.Event
	// NumWant is the numwant parameter, saturated at 2³¹−1, or -1 when
	// absent or negative (the tracker's default applies). 0 asks for no
	// peers.
	NumWant int
	// Compact is false only for compact=0.
	Compact bool
	// NoPeerID is no_peer_id=1: omit peer ids from a non-compact reply.
	NoPeerID bool
	// IP is the ip= parameter when it is an IP literal (unmapped, without
	// zone), else the zero Addr. The Handler uses it only when
	// Config.TrustIP is set; names are never resolved.
	IP netip.Addr
}

// Parameter bits for duplicate detection.
const (
	pInfoHash = 1 << iota
	pPeerID
	pPort
	pUploaded
	pDownloaded
	pLeft
	pEvent
	pNumWant
	pCompact
	pNoPeerID
	pIP
)

// ParseAnnounce parses the raw (still percent-encoded) query of an
// announce. info_hash and peer_id must decode to exactly 20 bytes; port
// must be 1-65535; uploaded, downloaded and left must be plain decimal
// digits whose value fits an int64 (so never negative); event must be
// empty, "started", "completed", "stopped", "empty" or "paused" (BEP 21,
// treated as a regular announce). info_hash, peer_id and port are
// required. A known parameter given twice is an error; unknown parameters
// (key, ipv4, ipv6, supportcrypto, …) are ignored but counted against
// MaxAnnounceParams. As in HTML forms, '+' decodes to a space.
//
// A rejected query yields ErrQueryTooLong, ErrTooManyParams or a
// *ParamError. Parsing does not allocate, except to parse an ip= value
// that carries escapes.
func ParseAnnounce(rawQuery string) (Request, error) {
	if len(rawQuery) > MaxAnnounceQuery {
		return Request{}, ErrQueryTooLong
	}
	req := Request{NumWant: -1, Compact: true}
	var seen, n int
	var keyBuf [16]byte
	for q := rawQuery; q != ""; {
		var k, v string
		k, v, q = nextParam(q, &keyBuf)
		if k == "" && v == "" {
			continue
		}
		if n++; n > MaxAnnounceParams {
			return Request{}, ErrTooManyParams
		}
		bit, name := 0, k
		var ok bool
		switch k {
		case "info_hash":
			bit = pInfoHash
			ok = decode20(v, (*[20]byte)(&req.InfoHash))
		case "peer_id":
			bit = pPeerID
			ok = decode20(v, &req.PeerID)
		case "port":
			bit = pPort
			var p int64
			p, ok = parseUint(v)
			ok = ok && p > 0 && p <= 65535
			req.Port = uint16(p)
		case "uploaded":
			bit = pUploaded
			req.Uploaded, ok = parseUint(v)
		case "downloaded":
			bit = pDownloaded
			req.Downloaded, ok = parseUint(v)
		case "left":
			bit = pLeft
			req.Left, ok = parseUint(v)
			req.LeftKnown = ok
		case "event":
			bit = pEvent
			req.Event, ok = parseEvent(v)
		case "numwant":
			bit = pNumWant
			req.NumWant, ok = parseNumWant(v)
		case "compact":
			bit, ok = pCompact, true
			req.Compact = v != "0"
		case "no_peer_id":
			bit, ok = pNoPeerID, true
			req.NoPeerID = v == "1"
		case "ip":
			// Never an error: an untrusted ip= is ignored, whatever it is.
			bit, ok = pIP, true
			req.IP = parseIP(v)
		default:
			continue
		}
		if seen&bit != 0 || !ok {
			return Request{}, &ParamError{Param: name}
		}
		seen |= bit
	}
	switch {
	case seen&pInfoHash == 0:
		return Request{}, &ParamError{Param: "info_hash", Missing: true}
	case seen&pPeerID == 0:
		return Request{}, &ParamError{Param: "peer_id", Missing: true}
	case seen&pPort == 0:
		return Request{}, &ParamError{Param: "port", Missing: true}
	}
	return req, nil
}

// ParseScrape parses the raw query of a scrape and appends its info-hashes
// to dst, in order and with repeats. At most maxHashes are accepted (74,
// tracker.MaxScrapeHashes, when maxHashes ≤ 0); the query may be at most
// about 71 bytes per hash long. Other parameters are ignored, up to a few.
// A query without info_hash is ErrFullScrape.
func ParseScrape(rawQuery string, maxHashes int, dst []metainfo.Hash) ([]metainfo.Hash, error) {
	if maxHashes <= 0 {
		maxHashes = tracker.MaxScrapeHashes
	}
	if len(rawQuery) > scrapeQueryCap(maxHashes) {
		return dst, ErrQueryTooLong
	}
	start := len(dst)
	var keyBuf [16]byte
	other := 0
	for q := rawQuery; q != ""; {
		var k, v string
		k, v, q = nextParam(q, &keyBuf)
		if k == "" && v == "" {
			continue
		}
		if k != "info_hash" {
			if other++; other > maxScrapeExtraParams {
				return dst[:start], ErrTooManyParams
			}
			continue
		}
		if len(dst)-start >= maxHashes {
			return dst[:start], ErrTooManyHashes
		}
		var h metainfo.Hash
		if !decode20(v, (*[20]byte)(&h)) {
			return dst[:start], &ParamError{Param: "info_hash"}
		}
		dst = append(dst, h)
	}
	if len(dst) == start {
		return dst, ErrFullScrape
	}
	return dst, nil
}

// scrapeQueryCap is the longest scrape query for maxHashes hashes.
func scrapeQueryCap(maxHashes int) int {
	return maxHashes*scrapeBytesPerHash + 256
}

// nextParam splits the first "key=value" off q and returns the key
// (decoded when it carries escapes and fits buf; names too long for buf
// cannot be a known one and are returned as they are), the raw value and
// the rest of q. It is one pass over the key and a vectorised search for
// the next '&'.
func nextParam(q string, buf *[16]byte) (k, v, rest string) {
	end := strings.IndexByte(q, '&')
	if end < 0 {
		end = len(q)
	} else {
		rest = q[end+1:]
	}
	kv := q[:end]
	eq, escaped := len(kv), false
	for i := 0; i < len(kv); i++ {
		if c := kv[i]; c == '=' {
			eq = i
			break
		} else if c == '%' || c == '+' {
			escaped = true
		}
	}
	k = kv[:eq]
	if eq < len(kv) {
		v = kv[eq+1:]
	}
	if escaped {
		if n, ok := unescape(buf[:], k); ok {
			k = knownKey(buf[:n])
		}
	}
	return k, v, rest
}

// knownKey returns the known parameter name equal to b, or b copied.
// Matching against constants avoids allocating for the names that matter.
func knownKey(b []byte) string {
	for _, name := range [...]string{"info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "numwant", "compact", "no_peer_id", "ip"} {
		if string(b) == name {
			return name
		}
	}
	return string(b)
}

// decode20 percent-decodes s into exactly 20 bytes.
func decode20(s string, dst *[20]byte) bool {
	n, ok := unescape(dst[:], s)
	return ok && n == 20
}

// unescape percent-decodes s into dst ('+' is a space) and reports the
// length, or false when s is malformed or does not fit.
func unescape(dst []byte, s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '%':
			if i+2 >= len(s) {
				return 0, false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return 0, false
			}
			c = hi<<4 | lo
			i += 2
		case '+':
			c = ' '
		}
		if n == len(dst) {
			return 0, false
		}
		dst[n] = c
		n++
	}
	return n, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUint parses a non-empty run of at most 19 decimal digits and
// reports false unless the value fits an int64 (0 to 9223372036854775807).
// Nineteen digits can reach 9999999999999999999, so every step checks for
// overflow before it multiplies.
func parseUint(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseNumWant accepts digits (saturating) or a negative number, which
// some clients send for "the default".
func parseNumWant(s string) (int, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < maxNumWantParsed {
			n = min(n*10+int(c-'0'), maxNumWantParsed)
		}
	}
	if neg {
		return -1, true
	}
	return n, true
}

func parseEvent(s string) (tracker.Event, bool) {
	switch s {
	case "", "empty", "paused":
		return tracker.None, true
	case "started":
		return tracker.Started, true
	case "completed":
		return tracker.Completed, true
	case "stopped":
		return tracker.Stopped, true
	}
	return tracker.None, false
}

// parseIP returns the IP literal in an ip= value, or the zero Addr.
func parseIP(v string) netip.Addr {
	s := v
	if strings.ContainsAny(v, "%+") {
		var buf [64]byte
		n, ok := unescape(buf[:], v)
		if !ok {
			return netip.Addr{}
		}
		s = string(buf[:n])
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}
