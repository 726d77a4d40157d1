package negotiate

import (
	"net/http"
	"strconv"
	"strings"
)

// isTchar reports whether c may appear in an RFC 9110 token.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// tokenEnd returns the index just past the token that starts at s[i].
func tokenEnd(s string, i int) int {
	for i < len(s) && isTchar(s[i]) {
		i++
	}
	return i
}

func skipOWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// quotedEnd returns the index just past the quoted-string that starts at
// s[i] (which is '"'), or ok == false when it is unterminated or holds a
// control character.
func quotedEnd(s string, i int) (end int, ok bool) {
	for i++; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i == len(s) || isCTL(s[i]) && s[i] != '\t' {
				return 0, false
			}
		case isCTL(c) && c != '\t':
			return 0, false
		}
	}
	return 0, false
}

func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }

// safeValue reports whether a header value may be copied into a response:
// no control characters other than HTAB.
func safeValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if isCTL(v[i]) && v[i] != '\t' {
			return false
		}
	}
	return true
}

// splitList splits one field value at the commas that separate list
// elements (RFC 9110 §5.6.1), leaving commas inside quoted strings alone,
// and trims optional whitespace. Empty elements are kept as "".
func splitList(v string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, strings.Trim(v[start:i], " \t"))
				start = i + 1
			}
		}
	}
	return append(out, strings.Trim(v[start:], " \t"))
}

// directives are the Cache-Control directives of a message: each name,
// in lower case, with the arguments it came with ("" for none), in order.
type directives map[string][]string

// MaxCacheControlLen caps the combined length in bytes of a message's
// Cache-Control field lines. Real ones are a few dozen bytes; an origin's
// response headers may otherwise run to megabytes.
const MaxCacheControlLen = 8 << 10

// unreadableCacheControl is what a Cache-Control longer than
// MaxCacheControlLen counts as: every directive that stops tbproxy from
// transforming or keeping a message, since it cannot tell which were sent.
var unreadableCacheControl = directives{"no-transform": nil, "private": nil, "no-store": nil}

// cacheControl collects the directives of every Cache-Control field line
// of h. has ignores arguments: a "private" with field names is treated as
// private, which errs on the side of privacy. Field lines longer than
// MaxCacheControlLen together are not read; they count as
// unreadableCacheControl.
func cacheControl(h http.Header) directives {
	vs := h.Values("Cache-Control")
	n := 0
	for _, v := range vs {
		if n += len(v); n > MaxCacheControlLen {
			return unreadableCacheControl
		}
	}
	var d directives
	for _, v := range vs {
		for _, elem := range splitList(v) {
			name, arg, _ := strings.Cut(elem, "=")
			name = strings.ToLower(strings.Trim(name, " \t"))
			if name == "" {
				continue
			}
			if d == nil {
				d = make(directives)
			}
			d[name] = append(d[name], strings.Trim(strings.Trim(arg, " \t"), `"`))
		}
	}
	return d
}

func (d directives) has(name string) bool {
	_, ok := d[name]
	return ok
}

// WantsFresh reports whether a request with header h asks for an answer
// validated with the origin, which no stored one may stand for: its
// Cache-Control says no-cache, no-store or max-age=0 (RFC 9111, section
// 5.2.1), or its Pragma says no-cache (section 5.4). A Cache-Control
// longer than MaxCacheControlLen counts as asking.
func WantsFresh(h http.Header) bool {
	d := cacheControl(h) // an unreadable one says no-store
	if d.has("no-cache") || d.has("no-store") {
		return true
	}
	for _, arg := range d["max-age"] {
		if n, err := strconv.Atoi(arg); err == nil && n <= 0 {
			return true
		}
	}
	for _, v := range h.Values("Pragma") {
		for _, elem := range splitList(v) {
			if strings.EqualFold(elem, "no-cache") {
				return true
			}
		}
	}
	return false
}

// VariesOn reports whether h's Vary lists field (in any case) or is "*":
// the answer may depend on the request's field of that name.
func VariesOn(h http.Header, field string) bool {
	for _, line := range h.Values("Vary") {
		for _, f := range splitList(line) {
			if f == "*" || strings.EqualFold(f, field) {
				return true
			}
		}
	}
	return false
}
