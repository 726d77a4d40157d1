// Package negotiate holds the pure HTTP logic of tbproxy's content
// negotiation: adding application/x-bittorrent to a request's Accept,
// deciding whether an origin's answer is a transparent torrent that may be
// served from the swarm, reading that metainfo within a size cap (or the
// magnet URI an origin answers with instead, in the body or in a Link
// header, within its own caps), picking the
// torrent file that a URL names, synthesising the response headers for it,
// parsing Range and Content-Range, and the hop-by-hop and Via rules of a
// forwarding proxy.
//
// It does no network I/O, starts no goroutines and keeps no state: every
// function works on the values it is given, so the proxy and the publisher
// can share it and it is tested on its own. It does not fetch, cache or serve
// anything; the proxy does, and http.ServeContent answers Range, HEAD and
// conditional requests against the headers built here.
package negotiate

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// MediaType is the media type of a BitTorrent metainfo (.torrent) file: the
// type tbproxy adds to Accept and recognises in Content-Type.
const MediaType = "application/x-bittorrent"

// Pseudonym is the received-by name tbproxy writes into Via (RFC 9110
// §7.6.3). It names the software, not the host, so that one tbproxy can
// recognise that another one (or itself) already handled a message.
const Pseudonym = "tbproxy"

// ViaToken is the Via element tbproxy adds to an HTTP/1.1 message.
const ViaToken = "1.1 " + Pseudonym

// MaxAcceptLen caps the combined length in bytes of a request's Accept
// field lines. A longer Accept is treated as malformed, and so as absent.
const MaxAcceptLen = 8 << 10

// defaultAccept replaces an Accept that is absent, empty or malformed. A
// request without Accept accepts any type (RFC 9110 §12.5.1), so */* keeps
// that meaning while adding the torrent type.
const defaultAccept = MediaType + ", */*"

// Reasons reported by InjectAccept. They are stable strings, meant for logs,
// metrics and tests.
const (
	// ReasonInjected: the Accept now lists MediaType.
	ReasonInjected = "injected"
	// ReasonInjectedDefault: the client's Accept was absent, empty,
	// malformed or longer than MaxAcceptLen, so it was treated as absent
	// and set to "application/x-bittorrent, */*".
	ReasonInjectedDefault = "injected into an absent or malformed accept"
	// ReasonNoRequest: the request or its URL is nil.
	ReasonNoRequest = "no request"
	// ReasonNotGET: only GET is negotiated; unsafe methods pass through as
	// they are. (The proxy answers a HEAD as its GET would be answered,
	// asking InjectAccept about a GET copy of it.)
	ReasonNotGET = "method is not get"
	// ReasonBody: a GET that carries a body (a search API's query). Its
	// answer is no file to fetch from a swarm, and the body, read once,
	// could not be sent again to ask the origin plainly.
	ReasonBody = "get carries a body"
	// ReasonUpgrade: the request asks for a protocol upgrade (websocket,
	// h2c); it is never rewritten (HARDENING 53).
	ReasonUpgrade = "request carries upgrade"
	// ReasonCredentials: the request carries Authorization or Cookie, so
	// the content may be private to the user and the swarm must not see
	// it (HARDENING 58).
	ReasonCredentials = "request carries authorization or cookie"
	// ReasonNoTransform: the request says Cache-Control: no-transform.
	ReasonNoTransform = "request cache-control no-transform"
	// ReasonVia: a tbproxy (another one, or this one in a loop) already
	// handled the request and negotiated for it.
	ReasonVia = "via already names tbproxy"
	// ReasonTorrentURL: the URL path ends in ".torrent": the client is
	// fetching a torrent file itself (a clicked link), which must reach it
	// unchanged (HARDENING 56).
	ReasonTorrentURL = "url names a .torrent file"
	// ReasonExcludedHost: Config.ExcludeHosts matched the host.
	ReasonExcludedHost = "host excluded"
	// ReasonExcludedURL: Config.ExcludeURLs matched the URL (a torrent's own
	// tracker or web seed).
	ReasonExcludedURL = "url excluded"
	// ReasonClientAccepts: the client itself lists MediaType with q > 0;
	// a torrent answer is what it asked for and passes through untouched.
	ReasonClientAccepts = "client accepts application/x-bittorrent"
	// ReasonClientRefuses: the client lists MediaType with q=0; adding it
	// would override the client's explicit refusal.
	ReasonClientRefuses = "client refuses application/x-bittorrent"
)

// Config tunes InjectAccept. The zero value excludes nothing.
type Config struct {
	// ExcludeHosts lists hosts never negotiated with: an exact host name
	// or IP ("example.com", "10.0.0.1", "[::1]"), or "*.suffix", which
	// matches every subdomain of suffix but not suffix itself (list both
	// to cover both). Matching ignores letter case, a port on either
	// side and a trailing dot.
	ExcludeHosts []string
	// ExcludeURLs, when not nil, is asked about every request URL; true
	// leaves the request alone. The proxy uses it to skip the trackers
	// and web seeds of the torrents it runs, so that fetching a torrent's
	// parts never negotiates for another torrent.
	ExcludeURLs func(*url.URL) bool
}

// InjectAccept adds MediaType to the Accept of r when tbproxy may negotiate
// for it, and reports whether it did and why (one of the Reason constants).
//
// The client's media ranges are kept verbatim and in order, MediaType is put
// in front of them without a q parameter (q=1), and */* is neither added nor
// removed: a client that accepts only audio/mpeg must not be offered any
// other type when no torrent exists. An Accept that is absent, empty,
// malformed or longer than MaxAcceptLen is treated as absent and becomes
// "application/x-bittorrent, */*".
//
// Nothing is injected for a method other than GET, an Upgrade request, a
// request with Authorization or Cookie, Cache-Control: no-transform, a Via
// that already names tbproxy, a URL path ending in ".torrent", an excluded
// host or URL, or a client that itself lists MediaType (with any q). In those
// cases r is not modified.
//
// Call it before AddVia puts tbproxy's own element into the request's Via:
// InjectAccept would see that element and refuse (ReasonVia).
//
// InjectAccept touches only Accept. DESIGN §3 asks the caller to strip Range
// and If-Range from the negotiation request, so that the origin answers with
// the whole metainfo.
func InjectAccept(r *http.Request, cfg Config) (injected bool, reason string) {
	if r == nil || r.URL == nil {
		return false, ReasonNoRequest
	}
	if r.Method != http.MethodGet && r.Method != "" { // "" means GET for a client request
		return false, ReasonNotGET
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return false, ReasonBody
	}
	h := r.Header
	if has(h, "Upgrade") {
		return false, ReasonUpgrade
	}
	if has(h, "Authorization") || has(h, "Cookie") {
		return false, ReasonCredentials
	}
	if cacheControl(h).has("no-transform") {
		return false, ReasonNoTransform
	}
	if ViaLoop(h) {
		return false, ReasonVia
	}
	if torrentURL(r.URL) {
		return false, ReasonTorrentURL
	}
	host := r.URL.Host
	if host == "" {
		host = r.Host
	}
	if hostExcluded(host, cfg.ExcludeHosts) {
		return false, ReasonExcludedHost
	}
	if cfg.ExcludeURLs != nil && cfg.ExcludeURLs(r.URL) {
		return false, ReasonExcludedURL
	}

	ranges, ok := parseAccept(h.Values("Accept"))
	if !ok || len(ranges) == 0 {
		if r.Header == nil {
			r.Header = make(http.Header)
		}
		r.Header.Set("Accept", defaultAccept)
		return true, ReasonInjectedDefault
	}
	if listed, accepts := torrentListed(ranges); listed {
		if accepts {
			return false, ReasonClientAccepts
		}
		return false, ReasonClientRefuses
	}
	var b strings.Builder
	b.WriteString(MediaType)
	for _, mr := range ranges {
		b.WriteString(", ")
		b.WriteString(mr.raw)
	}
	h.Set("Accept", b.String())
	return true, ReasonInjected
}

// AcceptsTorrent reports whether the Accept of h asks for MediaType: it lists
// the type itself with q > 0. Wildcards do not count, so that a browser's */*
// never turns a download into a torrent. A type listed more than once is
// refused if any listing says q=0, and an Accept that is too long or
// malformed asks for nothing. The publisher decides with it whether to answer
// with metainfo, and InjectAccept leaves alone any request that lists the type.
func AcceptsTorrent(h http.Header) bool {
	ranges, ok := parseAccept(h.Values("Accept"))
	if !ok {
		return false
	}
	_, accepts := torrentListed(ranges)
	return accepts
}

// torrentListed reports whether ranges list MediaType, and whether every
// listing of it has q > 0.
func torrentListed(ranges []mediaRange) (listed, accepts bool) {
	accepts = true
	for _, mr := range ranges {
		if mr.isTorrent() {
			listed = true
			accepts = accepts && mr.q > 0
		}
	}
	return listed, listed && accepts
}

// has reports whether h holds field name at all, even with an empty value.
func has(h http.Header, name string) bool {
	return len(h.Values(name)) > 0
}

// torrentURL reports whether u's path names a .torrent file.
func torrentURL(u *url.URL) bool {
	p := u.Path
	if p == "" {
		p = u.Opaque
	}
	return len(p) >= len(".torrent") && strings.EqualFold(p[len(p)-len(".torrent"):], ".torrent")
}

// normHost lower-cases host, drops a port, IPv6 brackets and a trailing dot.
func normHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimPrefix(strings.TrimSuffix(host, "]"), "[")
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host)
}

func hostExcluded(host string, patterns []string) bool {
	if len(patterns) == 0 {
		return false
	}
	host = normHost(host)
	if host == "" {
		return false
	}
	for _, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			suffix = normHost(suffix)
			if suffix != "" && len(host) > len(suffix)+1 &&
				strings.HasSuffix(host, suffix) && host[len(host)-len(suffix)-1] == '.' {
				return true
			}
			continue
		}
		if n := normHost(p); n != "" && n == host {
			return true
		}
	}
	return false
}

// mediaRange is one element of an Accept list.
type mediaRange struct {
	typ, sub string // lower case; "*" for a wildcard
	q        int    // quality in thousandths, 0 to 1000
	raw      string // the element as the client wrote it, trimmed
}

func (m mediaRange) isTorrent() bool {
	return m.typ+"/"+m.sub == MediaType
}

// parseAccept parses the field lines of an Accept header. It returns ok ==
// false when the value is too long or any element is malformed.
//
// Two quirks of deployed clients are tolerated: a bare "*" as a media range
// (Java's HttpURLConnection sends "*; q=.2"), read as */*, and a qvalue
// with no leading zero (".2").
func parseAccept(values []string) ([]mediaRange, bool) {
	n := 0
	for _, v := range values {
		n += len(v) + 2
	}
	if n > MaxAcceptLen+2 {
		return nil, false
	}
	var out []mediaRange
	for _, v := range values {
		for _, elem := range splitList(v) {
			if elem == "" {
				continue
			}
			mr, ok := parseMediaRange(elem)
			if !ok {
				return nil, false
			}
			out = append(out, mr)
		}
	}
	return out, true
}

func parseMediaRange(s string) (mediaRange, bool) {
	mr := mediaRange{raw: s, q: 1000}
	i := tokenEnd(s, 0)
	if i == 0 {
		return mr, false
	}
	mr.typ = strings.ToLower(s[:i])
	if i < len(s) && s[i] == '/' {
		j := tokenEnd(s, i+1)
		if j == i+1 {
			return mr, false
		}
		mr.sub = strings.ToLower(s[i+1 : j])
		i = j
	} else if mr.typ == "*" {
		mr.sub = "*"
	} else {
		return mr, false
	}
	if mr.typ == "*" && mr.sub != "*" {
		return mr, false
	}
	seenQ := false
	for {
		i = skipOWS(s, i)
		if i == len(s) {
			return mr, true
		}
		if s[i] != ';' {
			return mr, false
		}
		i = skipOWS(s, i+1)
		if i == len(s) || s[i] == ';' {
			continue // an empty parameter is allowed (RFC 9110 §5.6.6)
		}
		j := tokenEnd(s, i)
		if j == i || j == len(s) || s[j] != '=' {
			return mr, false
		}
		name := s[i:j]
		i = j + 1
		var value string
		if i < len(s) && s[i] == '"' {
			end, ok := quotedEnd(s, i)
			if !ok {
				return mr, false
			}
			value, i = s[i:end], end
		} else {
			j = tokenEnd(s, i)
			if j == i {
				return mr, false
			}
			value, i = s[i:j], j
		}
		if strings.EqualFold(name, "q") && !seenQ {
			q, ok := parseQ(value)
			if !ok {
				return mr, false
			}
			mr.q, seenQ = q, true
		}
	}
}

// parseQ reads a qvalue (RFC 9110 §12.4.2) in thousandths, also accepting a
// missing leading zero.
func parseQ(s string) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	intPart, frac, dot := strings.Cut(s, ".")
	if intPart == "" && (!dot || frac == "") || len(frac) > 3 {
		return 0, false
	}
	q := 0
	switch intPart {
	case "", "0":
	case "1":
		q = 1000
	default:
		return 0, false
	}
	scale := 100
	for _, c := range []byte(frac) {
		if c < '0' || c > '9' {
			return 0, false
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	if q > 1000 {
		return 0, false
	}
	return q, true
}
