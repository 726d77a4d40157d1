// Package bitfield implements a fixed-length set of piece indices, with the
// byte layout of the BEP 3 bitfield message.
//
// It knows nothing of pieces, peers or messages: it stores bits, counts them
// in O(1) and finds the next set or clear bit a 64-bit word at a time. It does
// no locking; callers that share a Bitfield serialise access themselves.
//
// An index outside [0, Len()) is a programming error, and every method that
// takes one panics on it, as a slice index would. Data from the network
// enters only through FromWire, which reports malformed input as an error.
package bitfield

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Errors returned by FromWire, wrapped with the offending sizes.
var (
	// ErrLength means the message does not have exactly ⌈n/8⌉ bytes.
	ErrLength = errors.New("bitfield: wrong length")
	// ErrSpareBits means a bit past the last piece is set; BEP 3 requires
	// the spare bits of the last byte to be zero.
	ErrSpareBits = errors.New("bitfield: spare bits set")
)

// Bitfield is a set of indices in [0, Len()). The zero value is an empty
// bitfield of length 0.
//
// Bit i lives in words[i/64] at bit position 63-i%64, so that each word,
// written big-endian, is eight bytes of the wire form.
//
// A Bitfield holds a slice: assigning one Bitfield to another shares the
// bits but not the count, and the two then disagree after a change. Use
// Clone to copy.
type Bitfield struct {
	words []uint64 // ⌈n/64⌉ words; bits at index ≥ n are always zero
	n     int      // fixed length, set at construction
	count int      // number of set bits, kept in step with words by every mutator
}

// New returns a Bitfield of n clear bits. It panics if n is negative.
func New(n int) Bitfield {
	if n < 0 {
		panic(fmt.Sprintf("bitfield: negative length %d", n))
	}
	return Bitfield{words: make([]uint64, (n+63)/64), n: n}
}

// FromWire decodes the payload of a BEP 3 bitfield message for n pieces:
// ⌈n/8⌉ bytes, the high bit of the first byte being piece 0. It fails with
// ErrLength if len(b) is wrong (or n is negative) and with ErrSpareBits if any
// bit past piece n-1 is set. b is not retained.
func FromWire(b []byte, n int) (Bitfield, error) {
	if n < 0 {
		return Bitfield{}, fmt.Errorf("bitfield of %d pieces: %w", n, ErrLength)
	}
	if want := (n + 7) / 8; len(b) != want {
		return Bitfield{}, fmt.Errorf("bitfield of %d pieces needs %d bytes, got %d: %w", n, want, len(b), ErrLength)
	}
	if n%8 != 0 && b[len(b)-1]&(0xff>>(n%8)) != 0 {
		return Bitfield{}, fmt.Errorf("bitfield of %d pieces: %w", n, ErrSpareBits)
	}
	bf := New(n)
	for i := range bf.words {
		var w uint64
		if chunk := b[i*8:]; len(chunk) >= 8 {
			w = binary.BigEndian.Uint64(chunk)
		} else {
			var buf [8]byte
			copy(buf[:], chunk)
			w = binary.BigEndian.Uint64(buf[:])
		}
		bf.words[i] = w
		bf.count += bits.OnesCount64(w)
	}
	return bf, nil
}

// Wire returns the BEP 3 encoding: ⌈Len()/8⌉ bytes, high bit first, spare
// bits zero. The result is a new slice.
func (b *Bitfield) Wire() []byte {
	out := make([]byte, (b.n+7)/8)
	for i, w := range b.words {
		if chunk := out[i*8:]; len(chunk) >= 8 {
			binary.BigEndian.PutUint64(chunk, w)
		} else {
			var buf [8]byte
			binary.BigEndian.PutUint64(buf[:], w)
			copy(chunk, buf[:])
		}
	}
	return out
}

// Len returns the fixed number of bits.
func (b *Bitfield) Len() int { return b.n }

// Count returns the number of set bits, in O(1).
func (b *Bitfield) Count() int { return b.count }

// All reports whether every bit is set. It is true for a zero-length
// Bitfield.
func (b *Bitfield) All() bool { return b.count == b.n }

// mask returns the single-bit mask of index i within its word.
func mask(i int) uint64 { return 1 << (63 - uint(i)&63) }

// check panics unless i is a valid index.
func (b *Bitfield) check(i int) {
	if uint(i) >= uint(b.n) {
		panic(fmt.Sprintf("bitfield: index %d out of range [0, %d)", i, b.n))
	}
}

// Has reports whether bit i is set. It panics if i is out of range.
func (b *Bitfield) Has(i int) bool {
	b.check(i)
	return b.words[i>>6]&mask(i) != 0
}

// Set sets bit i. It panics if i is out of range.
func (b *Bitfield) Set(i int) {
	b.check(i)
	w := &b.words[i>>6]
	if *w&mask(i) == 0 {
		*w |= mask(i)
		b.count++
	}
}

// Clear clears bit i. It panics if i is out of range.
func (b *Bitfield) Clear(i int) {
	b.check(i)
	w := &b.words[i>>6]
	if *w&mask(i) != 0 {
		*w &^= mask(i)
		b.count--
	}
}

// SetAll sets every bit.
func (b *Bitfield) SetAll() {
	for i := range b.words {
		b.words[i] = ^uint64(0)
	}
	if r := b.n % 64; r != 0 {
		b.words[len(b.words)-1] = ^uint64(0) << (64 - r)
	}
	b.count = b.n
}

// ClearAll clears every bit.
func (b *Bitfield) ClearAll() {
	clear(b.words)
	b.count = 0
}

// NextSet returns the smallest set index ≥ from, or -1 if there is none.
// from may be anywhere in [0, Len()]; a larger from also gives -1. It panics
// if from is negative.
func (b *Bitfield) NextSet(from int) int {
	if from < 0 {
		panic(fmt.Sprintf("bitfield: negative index %d", from))
	}
	if from >= b.n {
		return -1
	}
	wi := from >> 6
	w := b.words[wi] & (^uint64(0) >> (uint(from) & 63))
	for {
		if w != 0 {
			return wi<<6 + bits.LeadingZeros64(w)
		}
		wi++
		if wi == len(b.words) {
			return -1
		}
		w = b.words[wi]
	}
}

// NextClear returns the smallest clear index ≥ from, or -1 if there is
// none. from may be anywhere in [0, Len()]; a larger from also gives -1. It
// panics if from is negative.
func (b *Bitfield) NextClear(from int) int {
	if from < 0 {
		panic(fmt.Sprintf("bitfield: negative index %d", from))
	}
	if from >= b.n {
		return -1
	}
	wi := from >> 6
	w := ^b.words[wi] & (^uint64(0) >> (uint(from) & 63))
	for {
		if w != 0 {
			// Spare bits are zero, so they read as clear here: filter them.
			if i := wi<<6 + bits.LeadingZeros64(w); i < b.n {
				return i
			}
			return -1
		}
		wi++
		if wi == len(b.words) {
			return -1
		}
		w = ^b.words[wi]
	}
}

// NextSetAnd returns the smallest index ≥ from set in both b and o, or -1 if
// there is none. It panics if the lengths differ or from is negative.
func (b *Bitfield) NextSetAnd(o *Bitfield, from int) int {
	if b.n != o.n {
		panic(fmt.Sprintf("bitfield: lengths differ: %d and %d", b.n, o.n))
	}
	if from < 0 {
		panic(fmt.Sprintf("bitfield: negative index %d", from))
	}
	if from >= b.n {
		return -1
	}
	wi := from >> 6
	w := b.words[wi] & o.words[wi] & (^uint64(0) >> (uint(from) & 63))
	for {
		if w != 0 {
			return wi<<6 + bits.LeadingZeros64(w)
		}
		wi++
		if wi == len(b.words) {
			return -1
		}
		w = b.words[wi] & o.words[wi]
	}
}

// CountAnd returns the number of indices set in both b and o, a word at a
// time. It panics if the lengths differ.
func (b *Bitfield) CountAnd(o *Bitfield) int {
	if b.n != o.n {
		panic(fmt.Sprintf("bitfield: lengths differ: %d and %d", b.n, o.n))
	}
	c := 0
	for i, w := range b.words {
		c += bits.OnesCount64(w & o.words[i])
	}
	return c
}

// Clone returns an independent copy.
func (b *Bitfield) Clone() Bitfield {
	c := *b
	c.words = append([]uint64(nil), b.words...)
	return c
}
