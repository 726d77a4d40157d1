package cache

import "math/bits"

// bitset is a fixed-size set of piece indices. It is not safe for
// concurrent use; its owner guards it.
type bitset struct {
	words []uint64
	n     int // number of bits the set can hold
	cnt   int // number of bits set
}

func newBitset(n int) bitset {
	return bitset{words: make([]uint64, (n+63)/64), n: n}
}

func (b *bitset) has(i int) bool { return b.words[i/64]&(1<<(uint(i)%64)) != 0 }

// set adds i and reports whether it was missing.
func (b *bitset) set(i int) bool {
	if b.has(i) {
		return false
	}
	b.words[i/64] |= 1 << (uint(i) % 64)
	b.cnt++
	return true
}

// clear removes i and reports whether it was present.
func (b *bitset) clear(i int) bool {
	if !b.has(i) {
		return false
	}
	b.words[i/64] &^= 1 << (uint(i) % 64)
	b.cnt--
	return true
}

func (b *bitset) count() int { return b.cnt }

func (b *bitset) full() bool { return b.cnt == b.n }

func (b *bitset) clone() bitset {
	return bitset{words: append([]uint64(nil), b.words...), n: b.n, cnt: b.cnt}
}

// andNot is a new set of the bits of b that o does not have; o holds as
// many bits as b.
func (b *bitset) andNot(o bitset) bitset {
	r := bitset{words: make([]uint64, len(b.words)), n: b.n}
	for k, w := range b.words {
		r.words[k] = w &^ o.words[k]
		r.cnt += bits.OnesCount64(r.words[k])
	}
	return r
}

// encodedLen is the size of the byte form that appendTo writes.
func (b *bitset) encodedLen() int { return (b.n + 7) / 8 }

// appendTo appends the set in BEP 3 bitfield layout: piece 0 is the high
// bit of the first byte, and the spare bits of the last byte are zero.
func (b *bitset) appendTo(dst []byte) []byte {
	for j := range b.encodedLen() {
		var c byte
		for k := range 8 {
			if i := j*8 + k; i < b.n && b.has(i) {
				c |= 0x80 >> k
			}
		}
		dst = append(dst, c)
	}
	return dst
}

// decodeBitset reads what appendTo wrote for n bits. It reports false when
// the length is wrong or a spare bit is set.
func decodeBitset(src []byte, n int) (bitset, bool) {
	b := newBitset(n)
	if len(src) != b.encodedLen() {
		return bitset{}, false
	}
	for j, c := range src {
		for k := range 8 {
			if c&(0x80>>k) == 0 {
				continue
			}
			i := j*8 + k
			if i >= n {
				return bitset{}, false
			}
			b.set(i)
		}
	}
	return b, true
}
