package negotiate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Limits on the magnet answers of an origin. A magnet arrives in a
// response body or a Link header, both untrusted, so both are bounded well
// below metainfo.MaxMagnetLen.
const (
	// MaxMagnetLen is the longest magnet URI accepted from an origin, in
	// bytes, whether it is a body or a Link target.
	MaxMagnetLen = 8 << 10
	// MaxLinkLen caps the combined length in bytes of a response's Link
	// field lines. Longer Link headers are ignored as a whole.
	MaxLinkLen = 32 << 10
	// MaxLinks is the most link-values ParseLinks returns; any after
	// that are dropped.
	MaxLinks = 64
	// maxLinkRels bounds the relation types kept for one link.
	maxLinkRels = 16
)

// RelDescribedBy is the link relation (RFC 8288, registered by POWDER) by
// which an origin names the magnet that describes the requested resource:
// Link: <magnet:?xt=urn:btih:…>; rel="describedby".
const RelDescribedBy = "describedby"

// ErrMagnetBody is wrapped by ReadMagnet's errors.
var ErrMagnetBody = errors.New("negotiate: unusable magnet body")

// Link is one link-value of a Link header (RFC 8288 §3).
type Link struct {
	// Target is the URI reference between "<" and ">", verbatim. It holds
	// no control character, space, "<" or ">".
	Target string
	// Rels are the relation types of the link's first rel parameter, in
	// lower case, in order, without duplicates; nil when it has none.
	// Later rel parameters are ignored, as RFC 8288 §3.3 requires.
	Rels []string
}

// HasRel reports whether rel (lower case) is one of l's relation types.
func (l Link) HasRel(rel string) bool {
	for _, r := range l.Rels {
		if r == rel {
			return true
		}
	}
	return false
}

// ParseLinks parses every Link field line of h (RFC 8288 §3):
//
//	Link       = #link-value
//	link-value = "<" URI-Reference ">" *( OWS ";" OWS link-param )
//	link-param = token BWS [ "=" BWS ( token / quoted-string ) ]
//
// Commas inside the target or inside a quoted value do not split links. A
// field line that does not parse contributes no link at all; the others
// still count. When the field lines together are longer than MaxLinkLen,
// nothing is returned; at most MaxLinks links are. Parameters other than
// rel are checked for syntax and otherwise ignored.
func ParseLinks(h http.Header) []Link {
	lines := h.Values("Link")
	total := 0
	for _, v := range lines {
		total += len(v)
	}
	if total > MaxLinkLen {
		return nil
	}
	var out []Link
	for _, v := range lines {
		links, ok := parseLinkLine(v, MaxLinks-len(out))
		if ok {
			out = append(out, links...)
		}
		if len(out) >= MaxLinks {
			break
		}
	}
	return out
}

// parseLinkLine parses one field line, keeping at most room links. ok is
// false when the line does not parse.
func parseLinkLine(v string, room int) (links []Link, ok bool) {
	i := 0
	for {
		// #rule: empty elements and surrounding whitespace are allowed.
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == ',') {
			i++
		}
		if i == len(v) {
			return links, true
		}
		l, end, ok := parseLinkValue(v, i)
		if !ok {
			return nil, false
		}
		if len(links) < room {
			links = append(links, l)
		}
		i = skipOWS(v, end)
		if i < len(v) && v[i] != ',' {
			return nil, false
		}
	}
}

// parseLinkValue parses the link-value that starts at v[i] and returns the
// index just past it.
func parseLinkValue(v string, i int) (l Link, end int, ok bool) {
	if v[i] != '<' {
		return Link{}, 0, false
	}
	gt := strings.IndexByte(v[i+1:], '>')
	if gt < 0 {
		return Link{}, 0, false
	}
	l.Target = v[i+1 : i+1+gt]
	for j := 0; j < len(l.Target); j++ {
		if c := l.Target[j]; c <= ' ' || c == 0x7f || c == '<' {
			return Link{}, 0, false
		}
	}
	i += gt + 2
	sawRel := false
	for {
		j := skipOWS(v, i)
		if j == len(v) || v[j] != ';' {
			return l, i, true
		}
		j = skipOWS(v, j+1)
		nameEnd := tokenEnd(v, j)
		if nameEnd == j {
			// A trailing ";" with no parameter is tolerated, as
			// browsers do.
			if k := skipOWS(v, j); k == len(v) || v[k] == ',' {
				return l, j, true
			}
			return Link{}, 0, false
		}
		name := v[j:nameEnd]
		i = nameEnd
		k := skipOWS(v, i)
		if k == len(v) || v[k] != '=' {
			continue // a parameter without a value
		}
		k = skipOWS(v, k+1)
		var val string
		switch {
		case k < len(v) && v[k] == '"':
			qEnd, ok := quotedEnd(v, k)
			if !ok {
				return Link{}, 0, false
			}
			val = unquote(v[k+1 : qEnd-1])
			i = qEnd
		default:
			tEnd := tokenEnd(v, k)
			if tEnd == k {
				return Link{}, 0, false
			}
			val = v[k:tEnd]
			i = tEnd
		}
		if strings.EqualFold(name, "rel") && !sawRel {
			sawRel = true
			l.Rels = relTypes(val)
		}
	}
}

// unquote undoes the quoted-pairs of a quoted-string's contents (quotes
// already removed), which quotedEnd has checked.
func unquote(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// relTypes splits a rel value into its relation types (separated by
// whitespace), lower-cased, without duplicates, at most maxLinkRels.
func relTypes(v string) []string {
	var rels []string
	for f := range strings.FieldsSeq(v) {
		f = strings.ToLower(f)
		dup := false
		for _, r := range rels {
			dup = dup || r == f
		}
		if dup {
			continue
		}
		if len(rels) == maxLinkRels {
			break
		}
		rels = append(rels, f)
	}
	return rels
}

// MagnetLink returns the magnet named by the first Link of h that has the
// describedby relation and a target that is a usable magnet URI: at most
// MaxMagnetLen bytes, with a v1 (urn:btih) info-hash, accepted by
// metainfo.ParseMagnet. Links that fail are skipped.
func MagnetLink(h http.Header) (metainfo.Magnet, bool) {
	for _, l := range ParseLinks(h) {
		if !l.HasRel(RelDescribedBy) || !isMagnetURI(l.Target) {
			continue
		}
		if mg, err := metainfo.ParseMagnet(l.Target); err == nil {
			return mg, true
		}
	}
	return metainfo.Magnet{}, false
}

// magnetScheme starts every magnet URI tbproxy uses.
const magnetScheme = "magnet:?"

// isMagnetURI is a cheap pre-check: the scheme (any case) and the length.
func isMagnetURI(s string) bool {
	return len(s) <= MaxMagnetLen && len(s) >= len(magnetScheme) && strings.EqualFold(s[:len(magnetScheme)], magnetScheme)
}

// magnetPrefix reports whether a body that starts with prefix may be a
// magnet URI: it starts with "magnet:?", in any case.
func magnetPrefix(prefix []byte) bool {
	return len(prefix) >= len(magnetScheme) && strings.EqualFold(string(prefix[:len(magnetScheme)]), magnetScheme)
}

// ReadMagnet reads a body that is one magnet URI (the answer of Decide's
// KindMagnetBody) and parses it. The body may end in white space (a final
// newline); it must hold nothing else and be at most MaxMagnetLen bytes,
// which is all that is read of it (plus one byte, to see that it ends).
// Errors wrap ErrMagnetBody and, for a URI that does not parse,
// metainfo.ErrMagnet.
func ReadMagnet(body io.Reader) (metainfo.Magnet, error) {
	if body == nil {
		return metainfo.Magnet{}, fmt.Errorf("%w: no body", ErrMagnetBody)
	}
	data, err := io.ReadAll(io.LimitReader(body, MaxMagnetLen+1))
	if err != nil {
		return metainfo.Magnet{}, fmt.Errorf("%w: reading: %w", ErrMagnetBody, err)
	}
	if len(data) > MaxMagnetLen {
		return metainfo.Magnet{}, fmt.Errorf("%w: longer than %d bytes", ErrMagnetBody, MaxMagnetLen)
	}
	data = bytes.TrimRight(data, " \t\r\n")
	for _, c := range data {
		if c <= ' ' || c >= 0x7f {
			return metainfo.Magnet{}, fmt.Errorf("%w: white space, control or non-ASCII byte in the URI", ErrMagnetBody)
		}
	}
	if !magnetPrefix(data) {
		return metainfo.Magnet{}, fmt.Errorf("%w: does not start with %q", ErrMagnetBody, magnetScheme)
	}
	mg, err := metainfo.ParseMagnet(string(data))
	if err != nil {
		return metainfo.Magnet{}, fmt.Errorf("%w: %w", ErrMagnetBody, err)
	}
	return mg, nil
}
