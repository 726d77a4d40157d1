package bitfield

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// naive is the obvious reference model: one bool per bit.
type naive []bool

func (m naive) nextSet(from int) int {
	for i := from; i < len(m); i++ {
		if m[i] {
			return i
		}
	}
	return -1
}

func (m naive) nextClear(from int) int {
	for i := from; i < len(m); i++ {
		if !m[i] {
			return i
		}
	}
	return -1
}

// agree fails the test unless b and m hold the same bits and count.
func agree(t *testing.T, b *Bitfield, m naive) {
	t.Helper()
	if b.Len() != len(m) {
		t.Fatalf("Len = %d, want %d", b.Len(), len(m))
	}
	c := 0
	for i, v := range m {
		if b.Has(i) != v {
			t.Fatalf("Has(%d) = %v, want %v", i, !v, v)
		}
		if v {
			c++
		}
	}
	if b.Count() != c {
		t.Fatalf("Count = %d, want %d", b.Count(), c)
	}
	if b.All() != (c == len(m)) {
		t.Fatalf("All = %v with %d of %d set", b.All(), c, len(m))
	}
	for from := 0; from <= len(m)+1; from++ {
		if got, want := b.NextSet(from), m.nextSet(from); got != want {
			t.Fatalf("NextSet(%d) = %d, want %d", from, got, want)
		}
		if got, want := b.NextClear(from), m.nextClear(from); got != want {
			t.Fatalf("NextClear(%d) = %d, want %d", from, got, want)
		}
	}
}

func TestOperations(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200} {
		t.Run("", func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 1))
			b := New(n)
			m := make(naive, n)
			agree(t, &b, m)
			for range 4 * n {
				i := r.IntN(n)
				if r.IntN(2) == 0 {
					b.Set(i)
					m[i] = true
				} else {
					b.Clear(i)
					m[i] = false
				}
			}
			agree(t, &b, m)

			c := b.Clone()
			b.SetAll()
			for i := range m {
				m[i] = true
			}
			agree(t, &b, m)
			if n > 0 && c.All() && c.Count() != n {
				t.Fatal("clone changed with original")
			}
			b.ClearAll()
			for i := range m {
				m[i] = false
			}
			agree(t, &b, m)
		})
	}
}

func TestIdempotentSetClear(t *testing.T) {
	b := New(10)
	b.Set(3)
	b.Set(3)
	if b.Count() != 1 {
		t.Fatalf("Count after double Set = %d", b.Count())
	}
	b.Clear(3)
	b.Clear(3)
	if b.Count() != 0 {
		t.Fatalf("Count after double Clear = %d", b.Count())
	}
}

func TestCloneIndependent(t *testing.T) {
	b := New(100)
	b.Set(5)
	c := b.Clone()
	c.Set(6)
	b.Clear(5)
	if !c.Has(5) || !c.Has(6) || c.Count() != 2 {
		t.Fatal("clone shares state with original")
	}
	if b.Has(6) || b.Count() != 0 {
		t.Fatal("original changed through clone")
	}
	var z Bitfield
	zc := z.Clone()
	if zc.Len() != 0 || zc.Count() != 0 || !zc.All() {
		t.Fatal("clone of zero value is not empty")
	}
}

func TestAndOperations(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{1, 64, 65, 300} {
		a, b := New(n), New(n)
		for i := range n {
			if r.IntN(2) == 0 {
				a.Set(i)
			}
			if r.IntN(2) == 0 {
				b.Set(i)
			}
		}
		want := 0
		for i := range n {
			if a.Has(i) && b.Has(i) {
				want++
			}
		}
		if got := a.CountAnd(&b); got != want {
			t.Fatalf("n=%d CountAnd = %d, want %d", n, got, want)
		}
		for from := 0; from <= n; from++ {
			exp := -1
			for i := from; i < n; i++ {
				if a.Has(i) && b.Has(i) {
					exp = i
					break
				}
			}
			if got := a.NextSetAnd(&b, from); got != exp {
				t.Fatalf("n=%d NextSetAnd(%d) = %d, want %d", n, from, got, exp)
			}
		}
	}
}

func TestWire(t *testing.T) {
	tests := []struct {
		name string
		n    int
		set  []int
		wire []byte
	}{
		{"empty", 0, nil, []byte{}},
		{"first of one", 1, []int{0}, []byte{0x80}},
		{"high bit first", 8, []int{0, 7}, []byte{0x81}},
		{"spare bits", 10, []int{1, 8, 9}, []byte{0x40, 0xc0}},
		{"across words", 72, []int{0, 63, 64, 71}, []byte{0x80, 0, 0, 0, 0, 0, 0, 0x01, 0x81}},
		{"all of 12", 12, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, []byte{0xff, 0xf0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.n)
			for _, i := range tt.set {
				b.Set(i)
			}
			if got := b.Wire(); !bytes.Equal(got, tt.wire) {
				t.Fatalf("Wire = %x, want %x", got, tt.wire)
			}
			d, err := FromWire(tt.wire, tt.n)
			if err != nil {
				t.Fatalf("FromWire: %v", err)
			}
			if d.Count() != len(tt.set) {
				t.Fatalf("Count = %d, want %d", d.Count(), len(tt.set))
			}
			for _, i := range tt.set {
				if !d.Has(i) {
					t.Fatalf("bit %d lost", i)
				}
			}
		})
	}
}

func TestFromWireErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		n    int
		err  error
	}{
		{"too short", []byte{0xff}, 9, ErrLength},
		{"too long", []byte{0xff, 0}, 8, ErrLength},
		{"empty for one", nil, 1, ErrLength},
		{"bytes for zero", []byte{0}, 0, ErrLength},
		{"negative n", nil, -1, ErrLength},
		{"lowest spare bit", []byte{0x00, 0x01}, 9, ErrSpareBits},
		{"first spare bit", []byte{0x00, 0x40}, 9, ErrSpareBits},
		{"spare in single byte", []byte{0x01}, 7, ErrSpareBits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromWire(tt.b, tt.n)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestPanics(t *testing.T) {
	b := New(10)
	tests := []struct {
		name string
		f    func()
	}{
		{"Has -1", func() { b.Has(-1) }},
		{"Has n", func() { b.Has(10) }},
		{"Set n", func() { b.Set(10) }},
		{"Clear big", func() { b.Clear(1 << 40) }},
		{"NextSet -1", func() { b.NextSet(-1) }},
		{"NextClear -1", func() { b.NextClear(-1) }},
		{"New -1", func() { New(-1) }},
		{"CountAnd length", func() { o := New(11); b.CountAnd(&o) }},
		{"NextSetAnd length", func() { o := New(9); b.NextSetAnd(&o, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.f()
		})
	}
}

func BenchmarkNextSet(b *testing.B) {
	bf := New(1 << 20)
	for i := 0; i < bf.Len(); i += 4096 {
		bf.Set(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := bf.NextSet(0); i >= 0; i = bf.NextSet(i + 1) {
		}
	}
}
