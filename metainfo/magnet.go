package metainfo

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Limits applied by ParseMagnet. A magnet URI is untrusted input (it arrives in
// links and HTTP bodies), so every list it can grow is bounded.
const (
	// MaxMagnetLen is the longest magnet URI ParseMagnet accepts, in bytes.
	MaxMagnetLen = 64 << 10
	// MaxMagnetTrackers is the most distinct tr= values a magnet may carry.
	MaxMagnetTrackers = 100
	// MaxMagnetWebSeeds is the most distinct ws= values a magnet may carry.
	MaxMagnetWebSeeds = 100
	// MaxMagnetSelect is the most file indices a so= parameter may expand to.
	MaxMagnetSelect = 10000
	// MaxMagnetFileIndex bounds every file index named by so= (exclusive).
	MaxMagnetFileIndex = 1 << 20
)

// ErrMagnet is wrapped by every error ParseMagnet returns.
var ErrMagnet = errors.New("metainfo: bad magnet URI")

// ErrV2Only reports a magnet that names only a BitTorrent v2 (urn:btmh:)
// info-hash. tbproxy speaks v1 only, so such a link is unusable. It wraps ErrMagnet.
var ErrV2Only = fmt.Errorf("%w: v2-only magnet (urn:btmh without urn:btih) is unsupported", ErrMagnet)

// Magnet is a parsed magnet URI (BEP 9, with BEP 53 file selection).
//
// Every string in it comes from untrusted input and is kept verbatim: callers
// must encode Name, Trackers and WebSeeds before they reach headers, logs or HTML.
type Magnet struct {
	// InfoHash is the v1 info-hash from the single xt=urn:btih: parameter.
	InfoHash Hash
	// Name is the dn= display name; empty when absent. Not sanitised.
	Name string
	// Trackers are the tr= URLs in order of appearance, exact duplicates and
	// empty values dropped; nil when none.
	Trackers []string
	// WebSeeds are the ws= URLs in order of appearance, exact duplicates and
	// empty values dropped; nil when none.
	WebSeeds []string
	// Length is the xl= exact length in bytes, or -1 when absent.
	Length int64
	// SelectOnly holds the so= file indices, sorted and de-duplicated; nil when absent.
	SelectOnly []int
	// Params holds every other parameter (including xt= values that are not
	// urn:btih:, such as a hybrid torrent's urn:btmh:), values in order of
	// appearance, so that String can reproduce them; nil when none.
	Params url.Values
}

// magnetKnownKey maps a parameter key to the base key ParseMagnet interprets,
// accepting the numbered form ("tr.1") and any letter case. It returns "" for a
// key that is kept verbatim in Params.
func magnetKnownKey(key string) string {
	base := key
	if i := strings.LastIndexByte(key, '.'); i >= 0 && magnetAllDigits(key[i+1:]) {
		base = key[:i]
	}
	switch b := strings.ToLower(base); b {
	case "xt", "dn", "tr", "ws", "xl", "so":
		return b
	}
	return ""
}

// magnetAllDigits reports whether s is a non-empty run of ASCII digits.
func magnetAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// magnetHasPrefixFold reports whether s starts with prefix, ignoring ASCII case.
func magnetHasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// ParseMagnet parses a magnet URI of the form
// magnet:?xt=urn:btih:<40 hex or 32 base32>&dn=…&tr=…&ws=…&xl=…&so=….
//
// Exactly one urn:btih: xt is required; other xt values (a hybrid torrent's
// urn:btmh:) are kept in Params. Known keys match in any case and in the
// numbered form ("tr.1"). A repeated dn, xl or so must repeat the same value.
// The fragment, if any, is ignored. Both the URI and its canonical form (see
// String) must fit in MaxMagnetLen bytes. All errors wrap ErrMagnet.
func ParseMagnet(uri string) (Magnet, error) {
	m := Magnet{Length: -1}
	if len(uri) > MaxMagnetLen {
		return Magnet{}, fmt.Errorf("%w: longer than %d bytes", ErrMagnet, MaxMagnetLen)
	}
	const scheme = "magnet:?"
	if !magnetHasPrefixFold(uri, scheme) {
		return Magnet{}, fmt.Errorf("%w: does not start with %q", ErrMagnet, scheme)
	}
	query := uri[len(scheme):]
	if i := strings.IndexByte(query, '#'); i >= 0 {
		query = query[:i]
	}

	var (
		haveHash, haveV2       bool
		seenDN, seenXL, seenSO bool
		rawDN, rawXL, rawSO    string
		seenTR, seenWS         map[string]bool
	)
	for part := range strings.SplitSeq(query, "&") {
		if part == "" {
			continue
		}
		rawKey, rawVal, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return Magnet{}, fmt.Errorf("%w: bad escape in key: %v", ErrMagnet, err)
		}
		val, err := url.QueryUnescape(rawVal)
		if err != nil {
			return Magnet{}, fmt.Errorf("%w: bad escape in %q value: %v", ErrMagnet, key, err)
		}
		if key == "" {
			return Magnet{}, fmt.Errorf("%w: parameter with an empty key", ErrMagnet)
		}
		switch magnetKnownKey(key) {
		case "xt":
			switch {
			case magnetHasPrefixFold(val, "urn:btih:"):
				if haveHash {
					return Magnet{}, fmt.Errorf("%w: more than one urn:btih info-hash", ErrMagnet)
				}
				h, err := ParseHash(val[len("urn:btih:"):])
				if err != nil {
					return Magnet{}, fmt.Errorf("%w: xt: %w", ErrMagnet, err)
				}
				m.InfoHash, haveHash = h, true
			default:
				if magnetHasPrefixFold(val, "urn:btmh:") {
					haveV2 = true
				}
				m.Params = magnetAddParam(m.Params, "xt", val)
			}
		case "dn":
			if seenDN && val != rawDN {
				return Magnet{}, fmt.Errorf("%w: conflicting dn values", ErrMagnet)
			}
			seenDN, rawDN, m.Name = true, val, val
		case "xl":
			if seenXL && val != rawXL {
				return Magnet{}, fmt.Errorf("%w: conflicting xl values", ErrMagnet)
			}
			if !magnetAllDigits(val) {
				return Magnet{}, fmt.Errorf("%w: xl %q is not a non-negative integer", ErrMagnet, val)
			}
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return Magnet{}, fmt.Errorf("%w: xl %q out of range", ErrMagnet, val)
			}
			seenXL, rawXL, m.Length = true, val, n
		case "so":
			if seenSO && val != rawSO {
				return Magnet{}, fmt.Errorf("%w: conflicting so values", ErrMagnet)
			}
			sel, err := parseMagnetSelect(val)
			if err != nil {
				return Magnet{}, err
			}
			seenSO, rawSO, m.SelectOnly = true, val, sel
		case "tr":
			if val == "" || seenTR[val] {
				continue
			}
			if len(m.Trackers) == MaxMagnetTrackers {
				return Magnet{}, fmt.Errorf("%w: more than %d trackers", ErrMagnet, MaxMagnetTrackers)
			}
			if seenTR == nil {
				seenTR = make(map[string]bool)
			}
			seenTR[val] = true
			m.Trackers = append(m.Trackers, val)
		case "ws":
			if val == "" || seenWS[val] {
				continue
			}
			if len(m.WebSeeds) == MaxMagnetWebSeeds {
				return Magnet{}, fmt.Errorf("%w: more than %d web seeds", ErrMagnet, MaxMagnetWebSeeds)
			}
			if seenWS == nil {
				seenWS = make(map[string]bool)
			}
			seenWS[val] = true
			m.WebSeeds = append(m.WebSeeds, val)
		default:
			m.Params = magnetAddParam(m.Params, key, val)
		}
	}
	if !haveHash {
		if haveV2 {
			return Magnet{}, ErrV2Only
		}
		return Magnet{}, fmt.Errorf("%w: missing the urn:btih info-hash (xt)", ErrMagnet)
	}
	// Escaping can lengthen a value threefold. Refuse what String could not
	// turn back into a URI that ParseMagnet accepts.
	if n := len(m.String()); n > MaxMagnetLen {
		return Magnet{}, fmt.Errorf("%w: canonical form is %d bytes, longer than %d", ErrMagnet, n, MaxMagnetLen)
	}
	return m, nil
}

// magnetAddParam appends to v, allocating it on first use so that a magnet
// without extra parameters keeps a nil Params.
func magnetAddParam(v url.Values, key, val string) url.Values {
	if v == nil {
		v = make(url.Values)
	}
	v[key] = append(v[key], val)
	return v
}

// parseMagnetSelect expands a BEP 53 so= value such as "0,2,4-6" into sorted,
// unique indices. The expansion is bounded before anything is allocated: the
// sum of the listed ranges' sizes, overlaps included, may not exceed MaxMagnetSelect.
func parseMagnetSelect(s string) ([]int, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty so", ErrMagnet)
	}
	type span struct{ lo, hi int }
	var spans []span
	total := 0
	for item := range strings.SplitSeq(s, ",") {
		loStr, hiStr, isRange := strings.Cut(item, "-")
		lo, err := parseMagnetIndex(loStr)
		if err != nil {
			return nil, err
		}
		hi := lo
		if isRange {
			if hi, err = parseMagnetIndex(hiStr); err != nil {
				return nil, err
			}
			if hi < lo {
				return nil, fmt.Errorf("%w: so range %q is descending", ErrMagnet, item)
			}
		}
		total += hi - lo + 1
		if total > MaxMagnetSelect {
			return nil, fmt.Errorf("%w: so selects more than %d files", ErrMagnet, MaxMagnetSelect)
		}
		spans = append(spans, span{lo, hi})
	}
	out := make([]int, 0, total)
	for _, sp := range spans {
		for i := sp.lo; i <= sp.hi; i++ {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseMagnetIndex reads one so= file index: ASCII digits, below MaxMagnetFileIndex.
func parseMagnetIndex(s string) (int, error) {
	if !magnetAllDigits(s) {
		return 0, fmt.Errorf("%w: so index %q is not a non-negative integer", ErrMagnet, s)
	}
	// Leading zeros are allowed, so bound the value, not the length.
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
		if n >= MaxMagnetFileIndex {
			return 0, fmt.Errorf("%w: so index %q is not below %d", ErrMagnet, s, MaxMagnetFileIndex)
		}
	}
	return n, nil
}

// String returns the canonical URI for m: xt (hex) first, then dn, xl (when
// not negative), tr and ws in order, so compressed into ranges, and finally the
// other Params sorted by key. ParseMagnet(m.String()) equals m for any m that
// ParseMagnet returned.
func (m Magnet) String() string {
	var b strings.Builder
	b.WriteString("magnet:?xt=urn:btih:")
	b.WriteString(m.InfoHash.String())
	add := func(key, val string) {
		b.WriteByte('&')
		b.WriteString(url.QueryEscape(key))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(val))
	}
	if m.Name != "" {
		add("dn", m.Name)
	}
	if m.Length >= 0 {
		add("xl", strconv.FormatInt(m.Length, 10))
	}
	for _, tr := range m.Trackers {
		add("tr", tr)
	}
	for _, ws := range m.WebSeeds {
		add("ws", ws)
	}
	if len(m.SelectOnly) > 0 {
		// Digits, commas and hyphens need no escaping; BEP 53 shows them bare.
		b.WriteString("&so=")
		b.WriteString(formatMagnetSelect(m.SelectOnly))
	}
	for _, key := range slices.Sorted(maps.Keys(m.Params)) {
		for _, val := range m.Params[key] {
			add(key, val)
		}
	}
	return b.String()
}

// formatMagnetSelect writes indices as BEP 53 ranges ("0,2,4-6"). It sorts a
// copy, so any order and repeats are accepted.
func formatMagnetSelect(idx []int) string {
	s := slices.Clone(idx)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}
