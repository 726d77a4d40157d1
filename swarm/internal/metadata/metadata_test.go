package metadata

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"testing"
)

func TestRoundTripAndAssemble(t *testing.T) {
	info := make([]byte, 2*PieceSize+100)
	rand.Read(info)
	a := NewAssembler(sha1.Sum(info))
	if !a.SetSize(int64(len(info))) || a.SetSize(5) {
		t.Fatal("size handling")
	}
	var got []byte
	for i := a.Next(); i >= 0; i = a.Next() {
		m, err := Parse(Append(nil, Serve(info, i)))
		if err != nil {
			t.Fatal(err)
		}
		out, err := a.Add(m)
		if err != nil {
			t.Fatal(err)
		}
		if out != nil {
			got = out
		}
	}
	if !bytes.Equal(got, info) {
		t.Fatal("assembled metadata differs")
	}
	if m := Serve(info, 3); m.Type != Reject {
		t.Fatalf("piece past the end: %+v", m)
	}
}

func TestLyingPeerStartsOver(t *testing.T) {
	info := make([]byte, PieceSize+1)
	rand.Read(info)
	a := NewAssembler(sha1.Sum(info))
	a.SetSize(int64(len(info)))
	bad := bytes.Clone(info)
	bad[0] ^= 1
	a.Next()
	a.Next()
	a.Add(Serve(bad, 0))
	if _, err := a.Add(Serve(bad, 1)); !errors.Is(err, ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
	if a.Next() != 0 {
		t.Fatal("did not start over")
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
