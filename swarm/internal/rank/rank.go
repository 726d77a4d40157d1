// Package rank computes BEP 40's canonical peer priority: a number both
// ends of a connection agree on, from their two addresses alone, so that a
// whole swarm prefers the same connections and no one can crowd out the
// rest by connecting from many addresses in one network.
//
// The masks and byte order follow BEP 40 and libtorrent, its reference
// implementation, for IPv6 as well: only the upper 64 bits are masked
// (and compared for the /32 and /48 rules), the lower 64 are hashed as
// they are. It is pure and has no state.
package rank

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	v4Masks = [3][4]byte{
		{0xff, 0xff, 0x55, 0x55}, // different /16
		{0xff, 0xff, 0xff, 0x55}, // same /16
		{0xff, 0xff, 0xff, 0xff}, // same /24
	}
	v6Masks = [3][8]byte{
		{0xff, 0xff, 0xff, 0xff, 0x55, 0x55, 0x55, 0x55}, // different /32
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x55, 0x55}, // same /32
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // same /48
	}
)

// Priority is the canonical priority of a connection between a and b,
// which is symmetric: Priority(a, b) == Priority(b, a). Higher is more
// important. When the two are of different families (one IPv4, one IPv6;
// IPv4-mapped addresses count as IPv4), or either is invalid, it is 0.
func Priority(a, b netip.AddrPort) uint32 {
	ia, ib := a.Addr().Unmap(), b.Addr().Unmap()
	if !ia.IsValid() || !ib.IsValid() || ia.Is4() != ib.Is4() {
		return 0
	}
	if ia == ib {
		pa, pb := a.Port(), b.Port()
		if pa > pb {
			pa, pb = pb, pa
		}
		var buf [4]byte
		binary.BigEndian.PutUint16(buf[0:], pa)
		binary.BigEndian.PutUint16(buf[2:], pb)
		return crc32.Checksum(buf[:], castagnoli)
	}
	// Order by the addresses as they are, lowest first, then mask.
	if ib.Less(ia) {
		ia, ib = ib, ia
	}
	if ia.Is4() {
		x, y := ia.As4(), ib.As4()
		m := v4Masks[sharedPrefix(x[:], y[:], 2, 3)]
		var buf [8]byte
		for i := range 4 {
			buf[i] = x[i] & m[i]
			buf[4+i] = y[i] & m[i]
		}
		return crc32.Checksum(buf[:], castagnoli)
	}
	x, y := ia.As16(), ib.As16()
	m := v6Masks[sharedPrefix(x[:], y[:], 4, 6)]
	for i := range 8 {
		x[i] &= m[i]
		y[i] &= m[i]
	}
	var buf [32]byte
	copy(buf[:16], x[:])
	copy(buf[16:], y[:])
	return crc32.Checksum(buf[:], castagnoli)
}

// sharedPrefix picks the mask: 0 when x and y differ in their first short
// bytes, 1 when they differ only within the first long, 2 otherwise.
func sharedPrefix(x, y []byte, short, long int) int {
	switch {
	case string(x[:short]) != string(y[:short]):
		return 0
	case string(x[:long]) != string(y[:long]):
		return 1
	}
	return 2
}
