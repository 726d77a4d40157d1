package tracker

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Bencode builders for hand-made replies. They produce canonical output
// (dict sorts its keys) unless a test wants otherwise.

func bstr(s string) string { return strconv.Itoa(len(s)) + ":" + s }

func bint(n int64) string { return "i" + strconv.FormatInt(n, 10) + "e" }

func blist(items ...string) string { return "l" + strings.Join(items, "") + "e" }

// bdict takes key, encoded value, key, encoded value, ...
func bdict(kv ...string) string {
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.k, b.k) })
	var b strings.Builder
	b.WriteByte('d')
	for _, p := range ps {
		b.WriteString(bstr(p.k))
		b.WriteString(p.v)
	}
	b.WriteByte('e')
	return b.String()
}

// compact encodes peers in BEP 23 / BEP 7 form.
func compact(peers ...string) string {
	var b []byte
	for _, p := range peers {
		ap := netip.MustParseAddrPort(p)
		b = append(b, ap.Addr().AsSlice()...)
		b = append(b, byte(ap.Port()>>8), byte(ap.Port()))
	}
	return string(b)
}

func addrs(ss ...string) []netip.AddrPort {
	out := []netip.AddrPort{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}
