package origin

import (
	"net/http"
	"strings"

	"github.com/tbproxy/tbproxy/negotiate"
)

// acceptsTorrent reports whether the Accept of h lists negotiate.MediaType
// with q > 0. Wildcards do not count: a browser's */* must not turn a
// download into a torrent. A media range listed more than once counts as
// refused if any listing says q=0. An Accept longer than
// negotiate.MaxAcceptLen, or one whose torrent entry is malformed, does not
// accept.
func acceptsTorrent(h http.Header) bool {
	lines := h["Accept"]
	total := 0
	for _, l := range lines {
		total += len(l)
	}
	if total > negotiate.MaxAcceptLen {
		return false
	}
	accepted := false
	for _, line := range lines {
		for len(line) > 0 {
			var elem string
			elem, line = nextElement(line)
			q, ok := torrentQ(elem)
			if !ok {
				continue
			}
			if q == 0 {
				return false
			}
			if q > 0 {
				accepted = true
			}
		}
	}
	return accepted
}

// nextElement splits the first element off a comma-separated list, leaving
// commas inside quoted strings alone.
func nextElement(s string) (elem, rest string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// torrentQ parses one Accept element. ok is false when the element is not
// the torrent type; q is its weight in thousandths, or -1 when the element
// is malformed.
func torrentQ(elem string) (q int, ok bool) {
	typ, params, _ := strings.Cut(elem, ";")
	if !strings.EqualFold(strings.TrimSpace(typ), negotiate.MediaType) {
		return 0, false
	}
	q = 1000
	for len(params) > 0 {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, val, found := strings.Cut(strings.TrimSpace(p), "=")
		if !found {
			if strings.TrimSpace(p) == "" {
				continue
			}
			return -1, true
		}
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		v, good := parseQ(strings.TrimSpace(val))
		if !good {
			return -1, true
		}
		q = v
	}
	return q, true
}

// parseQ parses an RFC 9110 §12.4.2 qvalue into thousandths:
// "0" ["." 0*3DIGIT] or "1" ["." 0*3("0")].
func parseQ(s string) (int, bool) {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	v := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return v, true
	}
	if s[1] != '.' {
		return 0, false
	}
	scale := 100
	for _, c := range []byte(s[2:]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		v += int(c-'0') * scale
		scale /= 10
	}
	if v > 1000 {
		return 0, false
	}
	return v, true
}

// credentialed reports whether r carries credentials, so that the content
// may be private to the user and must never become a public torrent.
func credentialed(r *http.Request) bool {
	return len(r.Header["Authorization"]) > 0 || len(r.Header["Cookie"]) > 0
}

// noneMatch reports whether the If-None-Match of h matches etag, by the
// weak comparison RFC 9110 §13.1.2 prescribes.
func noneMatch(h http.Header, etag string) bool {
	for _, line := range h["If-None-Match"] {
		for {
			line = strings.TrimLeft(line, " \t,")
			if line == "" {
				break
			}
			if line[0] == '*' {
				return true
			}
			line = strings.TrimPrefix(line, "W/")
			if len(line) == 0 || line[0] != '"' {
				break // malformed: ignore the rest of the line
			}
			end := strings.IndexByte(line[1:], '"')
			if end < 0 {
				break
			}
			if line[:end+2] == etag {
				return true
			}
			line = line[end+2:]
		}
	}
	return false
}

// addVaryAccept adds Accept to the Vary of h unless it is listed already,
// or Vary is "*".
func addVaryAccept(h http.Header) {
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			f = strings.TrimSpace(f)
			if f == "*" || strings.EqualFold(f, "Accept") {
				return
			}
		}
	}
	h.Add("Vary", "Accept")
}
