package krpc

import (
	"bytes"
	"testing"
)

// FuzzDecode checks, for any datagram: no panic; a decoded message obeys
// the shape Decode promises; and it encodes to a message that decodes to
// the same thing.
func FuzzDecode(f *testing.F) {
	id := "abcdefghij0123456789"
	for _, s := range []string{
		"d1:ad2:id20:" + id + "e1:q4:ping1:t2:aa1:y1:qe",
		"d1:ad2:id20:" + id + "6:target20:" + id + "e1:q9:find_node1:t2:aa1:y1:qe",
		"d1:ad2:id20:" + id + "12:implied_porti1e9:info_hash20:" + id + "4:porti6881e5:token2:xye1:q13:announce_peer1:t2:aa1:y1:qe",
		"d1:rd2:id20:" + id + "5:nodes26:" + id + "\x7f\x00\x00\x01\x1a\xe15:token2:xy6:valuesl6:\x7f\x00\x00\x01\x1a\xe1ee1:t2:aa1:y1:re",
		"d1:eli201e5:oh noe1:t2:aa1:y1:ee",
		"d1:t99999999:x", "d1:y1:q1:t2:aae", "", "\x00garbage",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Decode(in)
		if err != nil {
			return
		}
		if len(in) > MaxPacket {
			t.Fatalf("accepted %d bytes", len(in))
		}
		switch m.Y {
		case Query:
			if m.A == nil || len(m.A.ID) != IDLen {
				t.Fatalf("query without a 20-byte ID: %+v", m)
			}
		case Response:
			if m.R == nil || len(m.R.ID) != IDLen || len(m.R.Nodes)%NodeLen != 0 {
				t.Fatalf("bad response accepted: %+v", m)
			}
			ParseNodes(m.R.Nodes)
			for _, v := range m.R.Values {
				ParsePeer(v)
			}
		case Failure:
			if m.E == nil {
				t.Fatalf("error without error: %+v", m)
			}
		default:
			t.Fatalf("kind %q accepted", m.Y)
		}
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if len(out) <= MaxPacket {
			m2, err := Decode(out)
			if err != nil {
				t.Fatalf("re-decode of %q: %v", out, err)
			}
			out2, _ := Encode(m2)
			if !bytes.Equal(out, out2) {
				t.Fatalf("unstable encoding: %q then %q", out, out2)
			}
		}
	})
}
