package certs

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzNormalizeHost feeds normalizeHost the CONNECT authorities and SNI
// names a hostile client could send. An accepted host must come out as a
// name within the DNS limits (or the canonical text of an IP address),
// normalizing that name again must give the same result, and the case,
// trailing dot and port that normalizeHost promises to ignore must not
// change it. A refused host must yield no name, no address and a
// "certs: " error. The seed corpus is in testdata/fuzz/FuzzNormalizeHost.
func FuzzNormalizeHost(f *testing.F) {
	f.Fuzz(func(t *testing.T, host string) {
		name, ip, err := normalizeHost(host)
		if err != nil {
			if name != "" || ip.IsValid() || !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("refused %q as (%q, %v, %v)", host, name, ip, err)
			}
			return
		}
		if ip.IsValid() {
			checkNormalIP(t, host, name, ip)
		} else {
			checkNormalDNSName(t, host, name)
		}
		for _, variant := range hostVariants(name, ip) {
			n2, ip2, err := normalizeHost(variant)
			if err != nil || n2 != name || ip2 != ip {
				t.Fatalf("%q normalized to (%q, %v); its variant %q gives (%q, %v, %v)",
					host, name, ip, variant, n2, ip2, err)
			}
		}
		if n2, ip2, err := normalizeHost(strings.ToUpper(host)); err != nil || n2 != name || ip2 != ip {
			t.Fatalf("%q gives (%q, %v) but upper-cased gives (%q, %v, %v)", host, name, ip, n2, ip2, err)
		}
	})
}

// checkNormalIP fails t unless name is the canonical text of ip and ip is
// unmapped and has no zone.
func checkNormalIP(t *testing.T, host, name string, ip netip.Addr) {
	t.Helper()
	if ip.Is4In6() || ip.Zone() != "" || name != ip.String() {
		t.Fatalf("%q gave address %v named %q", host, ip, name)
	}
}

// checkNormalDNSName fails t unless name is a non-empty lower-case ASCII
// name of at most 253 bytes whose labels are 1-63 bytes of [a-z0-9_-],
// without a trailing dot, that is not also an IP literal (an IP and a DNS
// name must never share a cache key).
func checkNormalDNSName(t *testing.T, host, name string) {
	t.Helper()
	if name == "" || len(name) > 253 {
		t.Fatalf("%q gave a name of %d bytes", host, len(name))
	}
	if _, err := netip.ParseAddr(name); err == nil {
		t.Fatalf("%q gave DNS name %q, which is an IP literal", host, name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			t.Fatalf("%q gave name %q with a label of %d bytes", host, name, len(label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("%q gave name %q with byte %q", host, name, c)
			}
		}
	}
}

// hostVariants returns spellings of an already normalized host that
// normalizeHost must map back to it: the name itself, with a port, in
// upper case, and (for a DNS name) with a trailing dot.
func hostVariants(name string, ip netip.Addr) []string {
	if ip.IsValid() {
		if ip.Is6() {
			return []string{name, "[" + name + "]", "[" + name + "]:443", strings.ToUpper(name)}
		}
		return []string{name, name + ":443"}
	}
	return []string{name, name + ":443", name + ".", strings.ToUpper(name) + ".:8443"}
}
