package bitfield

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
)

// FuzzFromWire feeds arbitrary payloads to FromWire. The first input byte
// chooses how many spare bits the length n implies (n = 8·len(payload) -
// data[0]%8); the rest is the payload. Accepted input must round-trip
// through Wire byte for byte and agree with a naive reading; rejected input
// must really have a spare bit set. Lengths one byte off must always fail.
func FuzzFromWire(f *testing.F) {
	f.Add([]byte{0, 0xff})
	f.Add([]byte{3, 0xff, 0xe0})
	f.Add([]byte{3, 0xff, 0xe1})
	f.Add([]byte{})
	f.Add([]byte{7, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		spare, payload := int(data[0]%8), data[1:]
		if len(payload) == 0 {
			spare = 0
		}
		n := 8*len(payload) - spare

		b, err := FromWire(payload, n)
		if err != nil {
			if !errors.Is(err, ErrSpareBits) {
				t.Fatalf("unexpected error %v", err)
			}
			if payload[len(payload)-1]&(0xff>>(8-spare)) == 0 {
				t.Fatalf("rejected %x for n=%d without spare bits set", payload, n)
			}
			return
		}
		if b.Len() != n {
			t.Fatalf("Len = %d, want %d", b.Len(), n)
		}
		if got := b.Wire(); !bytes.Equal(got, payload) {
			t.Fatalf("Wire = %x, want %x", got, payload)
		}
		pop := 0
		for _, c := range payload {
			pop += bits.OnesCount8(c)
		}
		if b.Count() != pop {
			t.Fatalf("Count = %d, want %d", b.Count(), pop)
		}
		next := b.NextSet(0)
		for i := range n {
			set := payload[i/8]&(0x80>>(i%8)) != 0
			if b.Has(i) != set {
				t.Fatalf("Has(%d) = %v", i, !set)
			}
			if set {
				if next != i {
					t.Fatalf("NextSet walk gave %d, want %d", next, i)
				}
				next = b.NextSet(i + 1)
			}
		}
		if next != -1 {
			t.Fatalf("NextSet past the last bit gave %d", next)
		}
		if _, err := FromWire(payload, n+8); !errors.Is(err, ErrLength) {
			t.Fatalf("n+8: err = %v", err)
		}
		if n >= 8 {
			if _, err := FromWire(payload, n-8); !errors.Is(err, ErrLength) {
				t.Fatalf("n-8: err = %v", err)
			}
		}
	})
}
