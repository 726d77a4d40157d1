package rank

import (
	"hash/crc32"
	"net/netip"
	"testing"
)

func crc(s string) uint32 { return crc32.Checksum([]byte(s), castagnoli) }

func TestPriority(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want uint32
	}{
		// The test vectors of BEP 40.
		{"bep40: different /16", "123.213.32.10:0", "98.76.54.32:0", 0xec2d7224},
		{"bep40: same /24", "123.213.32.10:0", "123.213.32.234:0", 0x99568189},
		// The rules, with the bytes hashed spelled out.
		{"same ip: the ports, lowest first", "230.12.123.3:1234", "230.12.123.3:300", crc("\x01\x2c\x04\xd2")},
		{"same /24: the ips", "230.12.123.1:1234", "230.12.123.3:300", crc("\xe6\x0c\x7b\x01\xe6\x0c\x7b\x03")},
		{"same /16: masked by ff.ff.ff.55", "230.12.23.1:1234", "230.12.123.3:300", crc("\xe6\x0c\x17\x01\xe6\x0c\x7b\x01")},
		{"different /16: masked by ff.ff.55.55", "230.120.23.1:1234", "230.12.123.3:300", crc("\xe6\x0c\x51\x01\xe6\x78\x15\x01")},
		{"ipv4-mapped counts as ipv4", "[::ffff:123.213.32.10]:0", "98.76.54.32:0", 0xec2d7224},
		{"ipv6 same ip", "[ffff:ffff:ffff:ffff::1]:1234", "[ffff:ffff:ffff:ffff::1]:300", crc("\x01\x2c\x04\xd2")},
		{"ipv6 different /32", "[ffff:ffff:ffff:ffff::1]:1234", "[ffff:0fff:ffff:ffff::1]:300",
			crc("\xff\xff\x0f\xff\x55\x55\x55\x55\x00\x00\x00\x00\x00\x00\x00\x01" +
				"\xff\xff\xff\xff\x55\x55\x55\x55\x00\x00\x00\x00\x00\x00\x00\x01")},
		{"mixed families", "1.2.3.4:1", "[2001:db8::1]:1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := netip.MustParseAddrPort(tt.a), netip.MustParseAddrPort(tt.b)
			if got := Priority(a, b); got != tt.want {
				t.Errorf("Priority(%v, %v) = %#x, want %#x", a, b, got, tt.want)
			}
			if got := Priority(b, a); got != tt.want {
				t.Errorf("Priority(%v, %v) = %#x, want %#x (not symmetric)", b, a, got, tt.want)
			}
		})
	}
	if Priority(netip.AddrPort{}, netip.MustParseAddrPort("1.2.3.4:5")) != 0 {
		t.Error("an invalid address has a priority")
	}
}
