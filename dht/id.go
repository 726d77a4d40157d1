package dht

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"hash/crc32"
	"math/bits"
	"net/netip"
)

// ID is a node ID or a lookup target: 160 bits in the same space as
// info-hashes.
type ID [20]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// xor is the Kademlia distance between a and b.
func xor(a, b ID) (d ID) {
	for i := range d {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// closer reports whether a is closer to target than b.
func closer(target, a, b ID) bool {
	da, db := xor(target, a), xor(target, b)
	return bytes.Compare(da[:], db[:]) < 0
}

// commonPrefix is the number of leading bits a and b share, 0 to 160.
func commonPrefix(a, b ID) int {
	for i := range a {
		if x := a[i] ^ b[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return 160
}

// randomID is a uniformly random ID.
func randomID() (id ID) {
	rand.Read(id[:])
	return id
}

// randomIDWithPrefix is a random ID sharing exactly the first n bits of
// base (n < 160): the target that refreshes bucket n.
func randomIDWithPrefix(base ID, n int) ID {
	id := randomID()
	for i := 0; i < n/8; i++ {
		id[i] = base[i]
	}
	byteIdx, bit := n/8, uint(n%8)
	keep := byte(0xff) << (8 - bit) // the bits of byteIdx that come from base
	flip := byte(0x80) >> bit       // the first bit that differs
	id[byteIdx] = base[byteIdx]&keep | id[byteIdx]&^keep
	id[byteIdx] = id[byteIdx]&^flip | (^base[byteIdx])&flip
	return id
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bep42Prefix is the 21-bit prefix BEP 42 ties to an IPv4 address and the
// random value r (0-7), in the top bits of the result.
func bep42Prefix(ip netip.Addr, r byte) uint32 {
	a := ip.As4()
	a[0] &= 0x03
	a[1] &= 0x0f
	a[2] &= 0x3f
	a[0] |= (r & 7) << 5
	return crc32.Checksum(a[:], castagnoli) & 0xfffff800
}

// bep42Exempt reports whether BEP 42 does not apply to ip: local and
// private networks, and IPv6 (this DHT speaks IPv4 only).
func bep42Exempt(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.Is4() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()
}

// bep42Valid reports whether id is a node ID that BEP 42 allows for ip.
func bep42Valid(ip netip.Addr, id ID) bool {
	ip = ip.Unmap()
	if bep42Exempt(ip) {
		return true
	}
	want := bep42Prefix(ip, id[19])
	got := uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8
	return got&0xfffff800 == want
}

// bep42ID is a random node ID that BEP 42 allows for ip; for an exempt ip,
// just a random ID.
func bep42ID(ip netip.Addr) ID {
	id := randomID()
	ip = ip.Unmap()
	if bep42Exempt(ip) {
		return id
	}
	p := bep42Prefix(ip, id[19])
	id[0], id[1] = byte(p>>24), byte(p>>16)
	id[2] = byte(p>>8)&0xf8 | id[2]&7
	return id
}
