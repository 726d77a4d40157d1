package krpc

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestDecodeValid(t *testing.T) {
	id := strings.Repeat("a", 20)
	for _, tc := range []struct {
		name string
		in   string
		want func(*Msg) bool
	}{
		{"ping query", "d1:ad2:id20:" + id + "e1:q4:ping1:t2:aa1:y1:qe",
			func(m *Msg) bool { return m.Q == Ping && m.A.ID == id && m.T == "aa" }},
		{"get_peers query", "d1:ad2:id20:" + id + "9:info_hash20:" + id + "e1:q9:get_peers1:t2:aa1:y1:qe",
			func(m *Msg) bool { return m.Q == GetPeers && m.A.InfoHash == id }},
		{"response with values", "d1:rd2:id20:" + id + "5:token2:xy6:valuesl6:\x7f\x00\x00\x01\x1a\xe1ee1:t2:aa1:y1:re",
			func(m *Msg) bool { return len(m.R.Values) == 1 && m.R.Token == "xy" }},
		{"error", "d1:eli201e5:oh noe1:t2:aa1:y1:ee",
			func(m *Msg) bool { return m.E.Code == 201 && m.E.Msg == "oh no" }},
		{"unknown keys ignored", "d1:ad2:id20:" + id + "4:zzzzi1ee1:q4:ping1:t2:aa1:y1:q1:zl1:xee",
			func(m *Msg) bool { return m.Q == Ping }},
		{"unknown method still decodes", "d1:ad2:id20:" + id + "e1:q3:foo1:t2:aa1:y1:qe",
			func(m *Msg) bool { return m.Q == "foo" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(m) {
				t.Fatalf("decoded %+v", m)
			}
			// Strict decoding means what decodes re-encodes byte for byte,
			// except for unknown keys, which are dropped.
			if !strings.Contains(tc.name, "unknown keys") {
				out, err := Encode(m)
				if err != nil || string(out) != tc.in {
					t.Fatalf("re-encoded %q, %v", out, err)
				}
			}
		})
	}
}

func TestDecodeHostile(t *testing.T) {
	id := strings.Repeat("a", 20)
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"garbage", "\x00\x01\x02garbage"},
		{"not a dict", "l1:ae"},
		{"truncated", "d1:ad2:id20:" + id},
		{"oversized", "d1:t2:aa1:y1:q1:zl" + strings.Repeat("i1e", 600) + "ee"},
		{"huge length prefix", "d1:t99999999:x"},
		{"too many tokens", "d1:t2:aa1:y1:q1:zl" + strings.Repeat("0:", 600) + "ee"},
		{"deep nesting", "d1:t2:aa1:y1:q1:z" + strings.Repeat("l", 20) + strings.Repeat("e", 20) + "e"},
		{"unsorted keys", "d1:y1:q1:t2:aae"},
		{"duplicate keys", "d1:t2:aa1:t2:bb1:y1:qe"},
		{"no transaction", "d1:ad2:id20:" + id + "e1:q4:ping1:y1:qe"},
		{"long transaction", "d1:ad2:id20:" + id + "e1:q4:ping1:t17:" + strings.Repeat("t", 17) + "1:y1:qe"},
		{"unknown kind", "d1:t2:aa1:y1:xe"},
		{"query without args", "d1:q4:ping1:t2:aa1:y1:qe"},
		{"short id", "d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe"},
		{"id is an int", "d1:ad2:idi5ee1:q4:ping1:t2:aa1:y1:qe"},
		{"args is a list", "d1:al2:ide1:q4:ping1:t2:aa1:y1:qe"},
		{"port is a string", "d1:ad2:id20:" + id + "4:port2:80e1:q4:ping1:t2:aa1:y1:qe"},
		{"nodes not a multiple of 26", "d1:rd2:id20:" + id + "5:nodes3:abce1:t2:aa1:y1:re"},
		{"values not a list", "d1:rd2:id20:" + id + "6:valuesi1ee1:t2:aa1:y1:re"},
		{"error not a list", "d1:e5:oh no1:t2:aa1:y1:ee"},
		{"error of wrong shape", "d1:eli201ei5ee1:t2:aa1:y1:ee"},
		{"both a and r", "d1:ad2:id20:" + id + "e1:q4:ping1:rd2:id20:" + id + "e1:t2:aa1:y1:qe"},
		{"leading zero", "d1:ad2:id20:" + id + "4:porti01ee1:q4:ping1:t2:aa1:y1:qe"},
		{"trailing data", "d1:eli201e1:xe1:t2:aa1:y1:eexyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := Decode([]byte(tc.in)); err == nil {
				t.Fatalf("decoded %+v", m)
			}
		})
	}
	big := make([]byte, MaxPacket+1)
	if _, err := Decode(big); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized datagram: %v", err)
	}
}

func TestCompact(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:6881")
	b := AppendPeer(nil, a)
	if got, ok := ParsePeer(string(b)); !ok || got != a {
		t.Fatalf("peer round trip: %v %v", got, ok)
	}
	if _, ok := ParsePeer("12345"); ok {
		t.Fatal("5-byte peer accepted")
	}
	ns := []Node{{ID: [20]byte{1}, Addr: a}, {ID: [20]byte{2}, Addr: netip.MustParseAddrPort("10.0.0.1:1")},
		{ID: [20]byte{3}, Addr: netip.MustParseAddrPort("[::1]:1")}}
	enc := AppendNodes(nil, ns)
	if len(enc) != 2*NodeLen {
		t.Fatalf("IPv6 node not skipped: %d bytes", len(enc))
	}
	got := ParseNodes(string(enc))
	if len(got) != 2 || got[0] != ns[0] || got[1] != ns[1] {
		t.Fatalf("nodes round trip: %+v", got)
	}
}
