package metadata

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"testing"
)

func TestRoundTripAndAssemble(t *testing.T) {
	info := randomInfo(2*PieceSize + 100)
	a := NewAssembler(sha1.Sum(info))
	s, err := a.Join(int64(len(info)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := serve(a, s, info, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, info) {
		t.Fatal("assembled metadata differs")
	}
	if m := Serve(info, 3); m.Type != Reject {
		t.Fatalf("piece past the end: %+v", m)
	}
}

func randomInfo(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// serve has s give every piece it is handed of data, through Append and
// Parse when wire is set, and returns what the last Add returned.
func serve(a *Assembler, s *Source, data []byte, wire bool) ([]byte, error) {
	for {
		i, err := a.Next(s)
		if err != nil || i < 0 {
			return nil, err
		}
		m := Serve(data, i)
		if wire {
			if m, err = Parse(Append(nil, m)); err != nil {
				return nil, err
			}
		}
		out, err := a.Add(s, m)
		if out != nil || err != nil {
			return out, err
		}
	}
}

// corrupt returns data with its first byte flipped.
func corrupt(data []byte) []byte {
	b := bytes.Clone(data)
	b[0] ^= 0xff
	return b
}

func TestJoinAllocatesNothing(t *testing.T) {
	a := NewAssembler([20]byte{1})
	for _, size := range []int64{0, -1, MaxSize + 1} {
		if _, err := a.Join(size); !errors.Is(err, ErrSize) {
			t.Fatalf("size %d: got %v, want ErrSize", size, err)
		}
	}
	if _, err := a.Join(MaxSize); err != nil {
		t.Fatal(err)
	}
	if a.Size() != 0 || a.buf != nil {
		t.Fatal("a claimed size was allocated before any piece was requested")
	}
}

// TestLyingSizeIsDiscarded: the first source claims a wrong size and its
// assembly fails; it is banned, and the honest size is assembled next.
func TestLyingSizeIsDiscarded(t *testing.T) {
	for _, lieLen := range []int{PieceSize + 7, 3*PieceSize + 1, 10} {
		info := randomInfo(2*PieceSize + 100)
		lie := randomInfo(lieLen)
		a := NewAssembler(sha1.Sum(info))
		liar, _ := a.Join(int64(len(lie)))
		honest, _ := a.Join(int64(len(info)))
		i, _ := a.Next(liar)
		if i != 0 || a.Size() != int64(len(lie)) {
			t.Fatalf("liar's size not assembled first: piece %d, size %d", i, a.Size())
		}
		if i, err := a.Next(honest); i != -1 || err != nil {
			t.Fatalf("honest source got piece %d (%v) of another size's assembly", i, err)
		}
		a.Rejected(liar, 0)
		if _, err := serve(a, liar, lie, false); !errors.Is(err, ErrMismatch) {
			t.Fatalf("got %v, want ErrMismatch", err)
		}
		if a.Size() != 0 || a.buf != nil {
			t.Fatal("failed assembly kept")
		}
		bannedThenHonest(t, a, liar, honest, info)
	}
}

// bannedThenHonest checks that liar, caught, is banned, and that honest
// then serves info whole.
func bannedThenHonest(t *testing.T, a *Assembler, liar, honest *Source, info []byte) {
	t.Helper()
	if _, err := a.Next(liar); !errors.Is(err, ErrBanned) {
		t.Fatalf("liar: got %v, want ErrBanned", err)
	}
	got, err := serve(a, honest, info, false)
	if err != nil || !bytes.Equal(got, info) {
		t.Fatalf("honest source: %v", err)
	}
}

// TestCorruptSourceSharingSize: two sources of the right size give pieces
// to one assembly, one of them corrupt. The failure blames neither; each
// later assembly is left to one source, so the liar is found and banned.
func TestCorruptSourceSharingSize(t *testing.T) {
	info := randomInfo(2*PieceSize + 100)
	bad := corrupt(info)
	a := NewAssembler(sha1.Sum(info))
	liar, _ := a.Join(int64(len(info)))
	honest, _ := a.Join(int64(len(info)))
	i, _ := a.Next(liar)
	j, _ := a.Next(honest)
	k, _ := a.Next(honest)
	if i != 0 || j != 1 || k != 2 {
		t.Fatalf("pieces %d, %d, %d", i, j, k)
	}
	a.Add(honest, Serve(info, j))
	a.Add(honest, Serve(info, k))
	if _, err := a.Add(liar, Serve(bad, i)); !errors.Is(err, ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
	if i, _ := a.Next(liar); i != 0 {
		t.Fatalf("liar, not yet to blame, got piece %d", i)
	}
	if i, err := a.Next(honest); i != -1 || err != nil {
		t.Fatalf("a second source joined an assembly after a failure: piece %d, %v", i, err)
	}
	a.Rejected(liar, 0)
	if _, err := serve(a, liar, bad, false); !errors.Is(err, ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
	bannedThenHonest(t, a, liar, honest, info)
}

// TestManySizesBounded: with more sizes claimed than MaxSizes and none
// right, the Assembler assembles MaxSizes of them, one at a time, then
// gives up.
func TestManySizesBounded(t *testing.T) {
	a := NewAssembler([20]byte{1})
	var sources []*Source
	for i := range MaxSizes + 5 {
		s, err := a.Join(int64(1000 + i))
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, s)
	}
	assembled := 0
	for _, s := range sources[:MaxSizes] {
		if _, err := a.Next(s); err != nil {
			t.Fatal(err)
		}
		assembled++
		if len(a.buf) != int(s.Size()) {
			t.Fatalf("buffer of %d bytes for a size of %d", len(a.buf), s.Size())
		}
		if assembled == MaxSizes {
			if _, err := a.Join(5000); !errors.Is(err, ErrSize) {
				t.Fatalf("a size past MaxSizes: got %v, want ErrSize", err)
			}
			if _, err := a.Next(sources[MaxSizes]); !errors.Is(err, ErrSize) {
				t.Fatalf("a source of a size past MaxSizes: got %v, want ErrSize", err)
			}
		}
		a.Rejected(s, 0)
		if _, err := serve(a, s, randomInfo(int(s.Size())), false); !errors.Is(err, ErrMismatch) {
			t.Fatalf("got %v, want ErrMismatch", err)
		}
	}
	if err := a.Err(); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("got %v, want ErrGaveUp", err)
	}
	if _, err := a.Join(1000); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("join: got %v, want ErrGaveUp", err)
	}
	for _, s := range sources[MaxSizes:] {
		if _, err := a.Next(s); !errors.Is(err, ErrGaveUp) {
			t.Fatalf("got %v, want ErrGaveUp", err)
		}
	}
}

// TestManyFailuresBounded: sources of the right size that all send
// corrupt pieces make the Assembler give up after MaxFailures.
func TestManyFailuresBounded(t *testing.T) {
	info := randomInfo(100)
	bad := corrupt(info)
	a := NewAssembler(sha1.Sum(info))
	for range MaxFailures {
		s, err := a.Join(int64(len(info)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := serve(a, s, bad, false); !errors.Is(err, ErrMismatch) {
			t.Fatalf("got %v, want ErrMismatch", err)
		}
	}
	if _, err := a.Join(int64(len(info))); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("got %v, want ErrGaveUp", err)
	}
}

// TestLeavingSource: a source's requests return to the pool when it
// leaves, and an assembly no remaining source claims is freed.
func TestLeavingSource(t *testing.T) {
	info := randomInfo(2*PieceSize + 100)
	a := NewAssembler(sha1.Sum(info))
	gone, _ := a.Join(int64(len(info)))
	stays, _ := a.Join(int64(len(info)))
	if i, _ := a.Next(gone); i != 0 {
		t.Fatalf("got piece %d", i)
	}
	a.Leave(gone)
	a.Leave(gone)
	if i, _ := a.Next(stays); i != 0 {
		t.Fatalf("the piece of a source that left was not requested again: got %d", i)
	}
	a.Leave(stays)
	if a.Size() != 0 || a.buf != nil {
		t.Fatal("an assembly nobody can finish was kept")
	}
	other, _ := a.Join(10)
	if i, err := a.Next(other); i != 0 || err != nil || a.Size() != 10 {
		t.Fatalf("another size did not start: piece %d, %v, size %d", i, err, a.Size())
	}
	if _, err := a.Next(gone); err == nil {
		t.Fatal("a source that left was given a piece")
	}
}

// TestAddRefuses: data of another total size than the source claimed is
// an error; data that answers no request is ignored.
func TestAddRefuses(t *testing.T) {
	info := randomInfo(2*PieceSize + 100)
	a := NewAssembler(sha1.Sum(info))
	s, _ := a.Join(int64(len(info)))
	if _, err := a.Add(s, Serve(randomInfo(50), 0)); !errors.Is(err, ErrBad) {
		t.Fatalf("wrong total size: got %v", err)
	}
	if out, err := a.Add(s, Serve(info, 1)); out != nil || err != nil || a.received != 0 {
		t.Fatalf("unrequested piece: %v, filed %d", err, a.received)
	}
	i, _ := a.Next(s)
	short := Serve(info, i)
	short.Payload = short.Payload[:10]
	if _, err := a.Add(s, short); !errors.Is(err, ErrBad) {
		t.Fatalf("short piece: got %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"not bencode", "hello"},
		{"unknown type", "d8:msg_typei7e5:piecei0ee"},
		{"negative piece", "d8:msg_typei0e5:piecei-1ee"},
		{"huge piece", "d8:msg_typei0e5:piecei99999999ee"},
		{"data without size", "d8:msg_typei1e5:piecei0eexx"},
		{"data too large a total", "d8:msg_typei1e5:piecei0e10:total_sizei99999999999ee"},
		{"request with trailing bytes", "d8:msg_typei0e5:piecei0eeXX"},
		{"data longer than a piece", "d8:msg_typei1e5:piecei0e10:total_sizei100000ee" + string(make([]byte, PieceSize+1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.in)); !errors.Is(err, ErrBad) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("d8:msg_typei0e5:piecei0ee"))
	f.Add([]byte("d8:msg_typei1e5:piecei0e10:total_sizei5eehello"))
	f.Add([]byte("d8:msg_typei2e5:piecei3ee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		m2, err := Parse(Append(nil, m))
		if err != nil || m2.Type != m.Type || m2.Piece != m.Piece || !bytes.Equal(m2.Payload, m.Payload) {
			t.Fatalf("round trip: %+v vs %+v (%v)", m, m2, err)
		}
	})
}
