package dht

import (
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestBEP42Vectors(t *testing.T) {
	// The examples of BEP 42: IP, the random byte r, the ID prefix.
	for _, tc := range []struct {
		ip     string
		r      byte
		prefix string
	}{
		{"124.31.75.21", 1, "5fbfbf"},
		{"21.75.31.124", 86, "5a3ce9"},
		{"65.23.51.170", 22, "a5d432"},
		{"84.124.73.14", 65, "1b0321"},
		{"43.213.53.83", 90, "e56f6c"},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			var id ID
			p, _ := hex.DecodeString(tc.prefix)
			copy(id[:], p)
			id[19] = tc.r
			if !bep42Valid(ip, id) {
				t.Fatalf("BEP 42 example %s rejected", id)
			}
			id[0] ^= 0x80
			if bep42Valid(ip, id) {
				t.Fatal("wrong prefix accepted")
			}
			for range 20 {
				if g := bep42ID(ip); !bep42Valid(ip, g) {
					t.Fatalf("generated %s invalid for %s", g, ip)
				}
			}
		})
	}
	if !bep42Valid(netip.MustParseAddr("192.168.1.1"), randomID()) {
		t.Fatal("a private address is exempt")
	}
}

func TestRandomIDWithPrefix(t *testing.T) {
	base := randomID()
	for n := range 160 {
		if got := commonPrefix(base, randomIDWithPrefix(base, n)); got != n {
			t.Fatalf("prefix %d: got an ID sharing %d bits", n, got)
		}
	}
}

// idAt is an ID sharing exactly n leading bits with self.
func idAt(self ID, n int) ID { return randomIDWithPrefix(self, n) }

func addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{1, 2, byte(i >> 8), byte(i)}), 6881)
}

func TestTable(t *testing.T) {
	now := time.Unix(1e9, 0)
	self := ID{}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, tb *table)
	}{
		{"a query does not insert", func(t *testing.T, tb *table) {
			if !tb.heardQuery(idAt(self, 0), addr(1), now) {
				t.Fatal("a newcomer with room should be wanted (pinged)")
			}
			if tb.len() != 0 {
				t.Fatal("a query inserted a node")
			}
		}},
		{"far bucket holds 8, no split", func(t *testing.T, tb *table) {
			// Fill bucket 0 and the own bucket so that it splits.
			for i := range 20 {
				tb.heardReply(idAt(self, 0), addr(i), now)
			}
			for i := range 20 {
				tb.heardReply(idAt(self, 5), addr(100+i), now)
			}
			if n := len(tb.buckets[0].nodes); n != K {
				t.Fatalf("bucket 0 holds %d nodes", n)
			}
			if n := len(tb.buckets[0].replacements); n != K {
				t.Fatalf("bucket 0 has %d replacements", n)
			}
			if len(tb.buckets) < 6 {
				t.Fatalf("own range did not split: %d buckets", len(tb.buckets))
			}
			for i, b := range tb.buckets {
				if len(b.nodes) > K {
					t.Fatalf("bucket %d holds %d", i, len(b.nodes))
				}
				for _, n := range b.nodes {
					if got := tb.index(n.id); got != i {
						t.Fatalf("node in bucket %d belongs in %d", i, got)
					}
				}
			}
		}},
		{"bad node replaced", func(t *testing.T, tb *table) {
			for i := range 9 {
				tb.heardReply(idAt(self, 0), addr(i), now)
			}
			// Force two splits away so that bucket 0 is not the own range.
			tb.heardReply(idAt(self, 3), addr(50), now)
			tb.split()
			tb.split()
			for range badAfter {
				tb.failed(addr(0), now)
			}
			if tb.byAddr[addr(0)] != nil && !tb.byAddr[addr(0)].bad() {
				t.Fatal("node not bad after failures")
			}
			found := false
			for _, n := range tb.buckets[0].nodes {
				found = found || n.addr == addr(8)
			}
			if !found && tb.byAddr[addr(0)] != nil {
				t.Fatal("bad node neither replaced nor removed")
			}
		}},
		{"one node per IP", func(t *testing.T, tb *table) {
			a := addr(7)
			tb.heardReply(idAt(self, 0), a, now)
			tb.heardReply(idAt(self, 1), netip.AddrPortFrom(a.Addr(), 9999), now)
			if tb.len() != 1 {
				t.Fatalf("%d nodes from one IP", tb.len())
			}
		}},
		{"local and bogus addresses refused", func(t *testing.T, tb *table) {
			for _, s := range []string{"127.0.0.1:1", "10.0.0.1:1", "192.168.0.1:1", "0.0.0.0:1", "224.0.0.1:1", "1.2.3.4:0", "[2001:db8::1]:1"} {
				tb.heardReply(randomID(), netip.MustParseAddrPort(s), now)
			}
			if tb.len() != 0 {
				t.Fatalf("%d nodes with local addresses", tb.len())
			}
		}},
		{"own ID refused", func(t *testing.T, tb *table) {
			tb.heardReply(self, addr(1), now)
			if tb.len() != 0 {
				t.Fatal("own ID entered the table")
			}
		}},
		{"questionable after 15 minutes", func(t *testing.T, tb *table) {
			tb.heardReply(idAt(self, 0), addr(1), now)
			if q := tb.questionable(now.Add(time.Minute)); len(q) != 0 {
				t.Fatalf("fresh node questionable: %v", q)
			}
			if q := tb.questionable(now.Add(goodFor + time.Second)); len(q) != 1 {
				t.Fatalf("old node not questionable: %v", q)
			}
			if _, ok := tb.stale(now.Add(goodFor + time.Second)); !ok {
				t.Fatal("an old bucket is not stale")
			}
			if _, ok := tb.stale(now.Add(goodFor + time.Second)); ok {
				t.Fatal("a bucket just refreshed is stale")
			}
		}},
		{"every stale bucket refreshed in turn", func(t *testing.T, tb *table) {
			for range 3 {
				tb.split() // four buckets
			}
			later := now.Add(goodFor + time.Second)
			seen := map[int]bool{}
			for range len(tb.buckets) {
				target, ok := tb.stale(later)
				if !ok {
					t.Fatalf("only %d of %d stale buckets refreshed", len(seen), len(tb.buckets))
				}
				seen[tb.index(target)] = true
			}
			if len(seen) != len(tb.buckets) {
				t.Fatalf("refreshed buckets %v, want all %d", seen, len(tb.buckets))
			}
			if _, ok := tb.stale(later); ok {
				t.Fatal("a stale bucket after all were refreshed")
			}
		}},
		{"closest", func(t *testing.T, tb *table) {
			for i := range 40 {
				tb.heardReply(randomID(), addr(i), now)
			}
			target := randomID()
			got := tb.closest(target, K)
			if len(got) != K {
				t.Fatalf("%d closest", len(got))
			}
			for i := 1; i < len(got); i++ {
				if closer(target, got[i].id, got[i-1].id) {
					t.Fatal("closest not sorted")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newTable(self, false, now)) })
	}
}

func TestTokens(t *testing.T) {
	now := time.Unix(1e9, 0)
	tk := newTokens(now)
	ip := netip.MustParseAddr("1.2.3.4")
	tok := tk.issue(ip, now)
	for _, tc := range []struct {
		name  string
		after time.Duration
		ip    netip.Addr
		ok    bool
	}{
		{"at once", 0, ip, true},
		{"other IP", 0, netip.MustParseAddr("1.2.3.5"), false},
		{"after 4 min", 4 * time.Minute, ip, true},
		{"after 9 min", 9 * time.Minute, ip, true},
		{"after 11 min", 11 * time.Minute, ip, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk := *tk // each case from the same state
			if got := tk.valid(tok, tc.ip, now.Add(tc.after)); got != tc.ok {
				t.Fatalf("valid = %v", got)
			}
		})
	}
	if tk.valid("", ip, now) || tk.valid("xxxxxxxx", ip, now) {
		t.Fatal("forged token accepted")
	}
}

func TestPeerStore(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newPeerStore()
	ih := randomID()
	for i := range 10 {
		s.add(ih, netip.AddrPortFrom(netip.MustParseAddr("1.1.1.1"), uint16(1000+i)), now)
	}
	if n := len(s.torrents[ih]); n != maxPeersPerIP {
		t.Fatalf("one IP stored %d peers", n)
	}
	for i := range maxPeersPerTorrent + 50 {
		s.add(ih, addr(i), now)
	}
	if n := len(s.torrents[ih]); n != maxPeersPerTorrent {
		t.Fatalf("torrent holds %d peers", n)
	}
	rnd := newTestRand()
	if got := s.get(ih, maxValuesPerReply, now, rnd); len(got) != maxValuesPerReply {
		t.Fatalf("get: %d", len(got))
	}
	if got := s.get(ih, 10, now.Add(peerTTL), rnd); len(got) != 0 {
		t.Fatalf("expired peers returned: %d", len(got))
	}
	for i := range maxStoredTorrents + 10 {
		s.add(ID{byte(i >> 8), byte(i)}, addr(1), now.Add(peerTTL))
	}
	if n := len(s.torrents); n != maxStoredTorrents {
		t.Fatalf("%d torrents stored", n)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLimiter(10, 50)
	a := addr(1)
	n := 0
	for range 200 {
		if l.allow(a, now) {
			n++
		}
	}
	if n != 50 {
		t.Fatalf("burst allowed %d", n)
	}
	if !l.allow(a, now.Add(200*time.Millisecond)) {
		t.Fatal("no refill")
	}
	if !l.allow(addr(2), now) {
		t.Fatal("another source limited")
	}
	for i := range maxLimited + 5 {
		l.allow(netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("9.9.%d.%d", i>>8&255, i&255)), uint16(i>>16+1)), now)
	}
	if len(l.sources) > maxLimited {
		t.Fatalf("limiter tracks %d sources", len(l.sources))
	}
}

func newTestRand() *mrand.Rand { return mrand.New(mrand.NewPCG(1, 2)) }
