package negotiate

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Limits on a Range header (HARDENING 61, RFC 9110 §14.2).
const (
	// MaxRanges is the most range-specs ParseRange accepts.
	MaxRanges = 50
	// MaxOverlap is the most satisfiable ranges that may cover one byte.
	MaxOverlap = 3
	// MaxRangeLen caps the length of a Range value in bytes.
	MaxRangeLen = 8 << 10
)

// Sentinel errors of the range functions.
var (
	// ErrInvalid reports a malformed Range or Content-Range, including an
	// unknown range unit and a range whose last position is before its
	// first. A server ignores such a Range and answers 200 with the whole
	// representation.
	ErrInvalid = errors.New("negotiate: malformed range")
	// ErrUnsatisfiable reports a well-formed Range of which no range
	// overlaps the representation (answer 416 with "bytes */<size>"), or
	// a Content-Range of the form "bytes */<size>".
	ErrUnsatisfiable = errors.New("negotiate: range not satisfiable")
	// ErrTooManyRanges reports more than MaxRanges ranges or more than
	// MaxOverlap ranges over one byte: a request a server may refuse
	// (416) or answer with the whole representation (200).
	ErrTooManyRanges = errors.New("negotiate: too many or overlapping ranges")
)

// ByteRange is a half-open range of byte offsets [Start, End) within a
// representation.
type ByteRange struct {
	Start, End int64
}

// Len is the number of bytes in r.
func (r ByteRange) Len() int64 { return r.End - r.Start }

// ParseRange parses a Range header value (RFC 9110 §14.1.2) against a
// representation of size bytes (a negative size counts as 0). It returns the
// satisfiable ranges, clipped to the representation, in the order given and
// not merged: "a-b" (b clipped to size-1), "a-" (to the end) and "-n" (the
// last n bytes, or all of them when n >= size). The unit "bytes" matches in
// any case; whitespace is allowed around commas only; empty list elements
// are skipped; positions too large for an int64 count as infinitely far.
//
// It returns ErrInvalid for syntax errors, an unknown unit, a value longer
// than MaxRangeLen, or "a-b" with b < a; ErrTooManyRanges for more than
// MaxRanges range-specs or more than MaxOverlap satisfiable ranges covering
// one byte; and ErrUnsatisfiable when no range is satisfiable: every "a-" or
// "a-b" starts at or past size, or is "-0", or size is 0.
func ParseRange(header string, size int64) ([]ByteRange, error) {
	if len(header) > MaxRangeLen {
		return nil, ErrInvalid
	}
	size = max(size, 0)
	unit, set, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return nil, ErrInvalid
	}
	var out []ByteRange
	specs := 0
	for _, spec := range strings.Split(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue
		}
		if specs++; specs > MaxRanges {
			return nil, ErrTooManyRanges
		}
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, ErrInvalid
		}
		if first == "" { // suffix-range
			n, ok := parseSaturating(last)
			if !ok {
				return nil, ErrInvalid
			}
			if n > 0 && size > 0 {
				out = append(out, ByteRange{Start: size - min(n, size), End: size})
			}
			continue
		}
		a, ok := parseSaturating(first)
		if !ok {
			return nil, ErrInvalid
		}
		end := size
		if last != "" {
			b, ok := parseSaturating(last)
			if !ok || b < a {
				return nil, ErrInvalid
			}
			if b < size {
				end = b + 1
			}
		}
		if a < size {
			out = append(out, ByteRange{Start: a, End: end})
		}
	}
	if specs == 0 {
		return nil, ErrInvalid
	}
	if len(out) == 0 {
		return nil, ErrUnsatisfiable
	}
	if overlap(out) > MaxOverlap {
		return nil, ErrTooManyRanges
	}
	return out, nil
}

// parseSaturating reads a non-empty run of ASCII digits, returning
// math.MaxInt64 for a value that does not fit.
func parseSaturating(s string) (int64, bool) {
	if s == "" {
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
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, true
}

// overlap is the largest number of ranges in rs that share one byte.
func overlap(rs []ByteRange) int {
	type edge struct {
		at    int64
		delta int
	}
	edges := make([]edge, 0, 2*len(rs))
	for _, r := range rs {
		edges = append(edges, edge{r.Start, 1}, edge{r.End, -1})
	}
	// At the same offset, ends sort before starts: touching ranges do not
	// share a byte.
	slices.SortFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		return a.delta - b.delta
	})
	depth, most := 0, 0
	for _, e := range edges {
		depth += e.delta
		most = max(most, depth)
	}
	return most
}

// FormatRange is the Range header value asking for the half-open byte range
// [start, end): "bytes=<start>-<end-1>", or "bytes=<start>-" when end is
// negative (to the end of the representation). It returns "" for a negative
// start or an empty range (0 <= end <= start), which have no Range form.
func FormatRange(start, end int64) string {
	if start < 0 || end >= 0 && end <= start {
		return ""
	}
	s := "bytes=" + strconv.FormatInt(start, 10) + "-"
	if end >= 0 {
		s += strconv.FormatInt(end-1, 10)
	}
	return s
}

// ParseContentRange parses a Content-Range value (RFC 9110 §14.4) of the
// form "bytes <first>-<last>/<complete-length>" or with "*" as the complete
// length. It returns the half-open range [start, end), with end = last+1,
// and total, the complete length, or -1 when unknown. It checks first <=
// last and, when total is known, last < total.
//
// For the form "bytes */<complete-length>" sent with a 416 it returns start
// and end -1, total set, and ErrUnsatisfiable. Anything else malformed
// returns ErrInvalid and -1 everywhere.
func ParseContentRange(v string) (start, end, total int64, err error) {
	bad := func() (int64, int64, int64, error) { return -1, -1, -1, ErrInvalid }
	if len(v) > 6+3*20 {
		return bad()
	}
	unit, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return bad()
	}
	rng, length, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	total = -1
	if length != "*" {
		if total, ok = ParseDigits(length); !ok {
			return bad()
		}
	}
	if rng == "*" {
		if total < 0 {
			return bad()
		}
		return -1, -1, total, ErrUnsatisfiable
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	first, ok1 := ParseDigits(a)
	last, ok2 := ParseDigits(b)
	if !ok1 || !ok2 || last < first || last == math.MaxInt64 || total >= 0 && last >= total {
		return bad()
	}
	return first, last + 1, total, nil
}

// ParseDigits reads a non-empty run of ASCII digits that fits an int64,
// as HTTP writes lengths and byte positions: no sign, no space.
func ParseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ServeRange rewrites h's Range, for a representation of size bytes, into
// the form in which Go's http.ServeContent reads it as RFC 9110 means it.
// ServeContent refuses as malformed (416) some ranges the RFC allows (a
// unit in capitals, a position too large for an int64), answers "-0" with
// a 206 of no bytes, and answers any number of parts. So:
//
//   - a Range that ParseRange accepts is written back as its satisfiable
//     ranges in the canonical "first-last" form;
//   - one that it finds unsatisfiable becomes "bytes=<size>-", which
//     ServeContent answers 416 with "bytes */<size>";
//   - one that it finds malformed, or asking for more than MaxRanges
//     ranges or more than MaxOverlap over one byte, is dropped with its
//     If-Range (RFC 9110 §14.2: a server may ignore it), as is a Range
//     sent more than once: the answer is the whole representation.
//
// A header without Range is left alone.
func ServeRange(h http.Header, size int64) {
	v := h.Values("Range")
	if len(v) == 0 {
		return
	}
	ranges, err := ParseRange(v[0], size)
	switch {
	case len(v) == 1 && errors.Is(err, ErrUnsatisfiable):
		h.Set("Range", "bytes="+strconv.FormatInt(max(size, 0), 10)+"-")
	case len(v) == 1 && err == nil:
		b := make([]byte, 0, len("bytes=")+len(ranges)*24)
		b = append(b, "bytes="...)
		for k, br := range ranges {
			if k > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, br.Start, 10)
			b = append(b, '-')
			b = strconv.AppendInt(b, br.End-1, 10)
		}
		h.Set("Range", string(b))
	default:
		h.Del("Range")
		h.Del("If-Range")
	}
}
