package swarm

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/pex"
	"github.com/tbproxy/tbproxy/swarm/internal/rank"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// peerWith returns the stats of the peer at addr, if connected.
func peerWith(s Stats, addr netip.AddrPort) (PeerStats, bool) {
	for _, p := range s.Peers {
		if p.Addr == addr {
			return p, true
		}
	}
	return PeerStats{}, false
}

// idleLeech adds f as a lazy torrent (it fetches nothing without a
// Reader), so that it stays connected to a seed, and dials to.
func idleLeech(t *testing.T, c *Client, meta *metainfo.MetaInfo, opts TorrentOptions, to ...netip.AddrPort) *Torrent {
	t.Helper()
	opts.Lazy, opts.NoTrackers, opts.Peers = true, true, to
	tor, err := c.AddTorrent(meta, NewMemoryStorage(&meta.Info), opts)
	if err != nil {
		t.Fatal(err)
	}
	return tor
}

// TestPEXBetweenEngines: A seeds, B is connected to A, and C, told only of
// A, learns of B from A's ut_pex message and connects to it.
func TestPEXBetweenEngines(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	a, ta := f.seed(t)
	b := newClient(t, Config{})
	// B does no PEX itself, or it might learn of C from A and dial it
	// first, and C would see B as an incoming peer.
	tb := idleLeech(t, b, f.meta, TorrentOptions{NoPEX: true}, addrOf(a))
	waitFor(t, 10*time.Second, "B never connected to A", func() bool { return len(ta.Stats().Peers) == 1 })

	c := newClient(t, Config{})
	tc := idleLeech(t, c, f.meta, TorrentOptions{}, addrOf(a))
	waitFor(t, 10*time.Second, "C never connected to B through PEX", func() bool {
		p, ok := peerWith(tc.Stats(), addrOf(b))
		return ok && p.Origin == FromPEX && p.Outgoing
	})
	sc := tc.Stats()
	if sc.PEXReceived < 1 || sc.PEXPeers != 1 || sc.PEXIgnored != 0 {
		t.Errorf("C's PEX counters: received %d, peers %d, ignored %d", sc.PEXReceived, sc.PEXPeers, sc.PEXIgnored)
	}
	if p, ok := peerWith(sc, addrOf(a)); !ok || p.Origin != FromUser {
		t.Errorf("C's peer A: %+v, %v", p, ok)
	}
	if s := ta.Stats(); s.PEXSent != 1 {
		t.Errorf("A sent %d ut_pex messages, want one, to C (B does not offer ut_pex)", s.PEXSent)
	}
	// B sees C, once.
	waitFor(t, 10*time.Second, "B does not see C", func() bool {
		n := 0
		for _, p := range tb.Stats().Peers {
			if p.Addr.Port() != addrOf(a).Port() {
				n++
			}
		}
		return n == 1
	})
}

// TestPEXOff: with Config.NoPEX, or for a private torrent, nothing is
// sent or taken, and ut_pex is not offered.
func TestPEXOff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		private bool
		opts    TorrentOptions
	}{
		{"config", Config{NoPEX: true}, false, TorrentOptions{}},
		{"torrent option", Config{}, false, TorrentOptions{NoPEX: true}},
		{"private torrent", Config{}, true, TorrentOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 256<<10, 64<<10)
			if tc.private {
				f = newPrivateFixture(t, f)
			}
			a := newClient(t, tc.cfg)
			ta := f.seedOn(t, a, tc.opts)
			b, c := newClient(t, Config{}), newClient(t, Config{})
			idleLeech(t, b, f.meta, TorrentOptions{}, addrOf(a))
			tc2 := idleLeech(t, c, f.meta, TorrentOptions{}, addrOf(a))
			waitFor(t, 10*time.Second, "B and C never connected to A", func() bool { return len(ta.Stats().Peers) == 2 })
			time.Sleep(2500 * time.Millisecond) // two ticks: a message would be out
			if s := ta.Stats(); s.PEXSent != 0 {
				t.Errorf("A sent %d ut_pex messages", s.PEXSent)
			}
			if s := tc2.Stats(); len(s.Peers) != 1 || s.PEXReceived != 0 {
				t.Errorf("C: %d peers, %d ut_pex messages", len(s.Peers), s.PEXReceived)
			}
		})
	}
}

func newPrivateFixture(t *testing.T, f *fixture) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "content.bin")
	if err := os.WriteFile(path, f.content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), path, metainfo.BuildOptions{PieceLength: f.meta.Info.PieceLength, Private: true})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Info.Private {
		t.Fatal("the fixture is not private")
	}
	return &fixture{content: f.content, meta: m}
}

// TestCandidatesByCanonicalPriority: with room for one connection, the
// candidate of highest BEP 40 priority is dialled first.
func TestCandidatesByCanonicalPriority(t *testing.T) {
	var mu sync.Mutex
	var dialed []netip.AddrPort
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, netip.MustParseAddrPort(addr))
		mu.Unlock()
		<-ctx.Done() // never answers: the slot stays taken
		return nil, ctx.Err()
	}
	c := newClient(t, Config{MaxPeers: 1, Dial: dial, HandshakeTimeout: 2 * time.Second})
	f := newFixture(t, 64<<10, 16<<10)
	var addrs []netip.AddrPort
	for i := range 40 {
		var b [4]byte
		rand.Read(b[:])
		b[0] = 1 + byte(i) // public, distinct
		addrs = append(addrs, netip.AddrPortFrom(netip.AddrFrom4(b), 6881))
	}
	tor, err := c.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, Peers: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	waitFor(t, 5*time.Second, "nothing dialled", func() bool { mu.Lock(); defer mu.Unlock(); return len(dialed) > 0 })
	ours := netip.AddrPortFrom(netip.IPv4Unspecified(), addrOf(c).Port())
	best := slices.MaxFunc(addrs, func(x, y netip.AddrPort) int {
		px, py := rank.Priority(ours, x), rank.Priority(ours, y)
		switch {
		case px != py:
			if px < py {
				return -1
			}
			return 1
		}
		return y.Compare(x)
	})
	mu.Lock()
	first := dialed[0]
	mu.Unlock()
	if first != best {
		t.Fatalf("dialled %v first (priority %#x); the highest priority is %v (%#x)", first, rank.Priority(ours, first), best, rank.Priority(ours, best))
	}
}

// lsdGroup is BEP 14's group on a free UDP port, so that the test hears no
// one else and no one hears it, on the loopback interface.
func lsdGroup(t *testing.T) LSDConfig {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	return LSDConfig{Enabled: true, Interface: "lo", Group: netip.AddrPortFrom(netip.MustParseAddr("239.192.152.143"), uint16(port))}
}

// TestLSDFindsPeer: two clients that know nothing of each other find each
// other through LSD on loopback, and the leech completes.
func TestLSDFindsPeer(t *testing.T) {
	lsdCfg := lsdGroup(t)
	f := newFixture(t, 1<<20, 64<<10)
	a := newClient(t, Config{LSD: lsdCfg})
	ta := f.seedOn(t, a, TorrentOptions{})
	b := newClient(t, Config{LSD: lsdCfg})
	tb, err := b.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	waitComplete(t, tb, 20*time.Second)
	if s := ta.Stats(); s.LSDPeers != 1 {
		t.Errorf("the seed learned %d peers through LSD, want 1", s.LSDPeers)
	}
}

// TestLSDOff: a private torrent, a torrent with NoLSD, and a client with
// LSD off are neither announced nor found.
func TestLSDOff(t *testing.T) {
	lsdCfg := lsdGroup(t)
	f := newFixture(t, 256<<10, 64<<10)
	priv := newPrivateFixture(t, f)
	g := newFixture(t, 256<<10, 64<<10)
	seed := newClient(t, Config{LSD: lsdCfg})
	for _, x := range []struct {
		f    *fixture
		opts TorrentOptions
	}{{priv, TorrentOptions{NoTrackers: true}}, {g, TorrentOptions{NoTrackers: true, NoLSD: true}}} {
		x.f.seedOn(t, seed, x.opts)
	}
	leech := newClient(t, Config{LSD: lsdCfg})
	t1 := idleLeech(t, leech, priv.meta, TorrentOptions{})
	t2 := idleLeech(t, leech, g.meta, TorrentOptions{})
	off := newClient(t, Config{})
	t3 := idleLeech(t, off, f.meta, TorrentOptions{})
	time.Sleep(2 * time.Second)
	for i, tor := range []*Torrent{t1, t2, t3} {
		if s := tor.Stats(); len(s.Peers) != 0 || s.LSDPeers != 0 {
			t.Errorf("torrent %d: %d peers, %d from LSD", i, len(s.Peers), s.LSDPeers)
		}
	}
	for _, ih := range []metainfo.Hash{priv.meta.InfoHash, g.meta.InfoHash} {
		tor, _ := seed.Torrent(ih)
		if s := tor.Stats(); len(s.Peers) != 0 || s.LSDPeers != 0 {
			t.Errorf("seed of %v: %d peers, %d from LSD", ih, len(s.Peers), s.LSDPeers)
		}
	}
}

// TestHostilePEX: a peer that floods ut_pex messages has the first taken,
// capped at BEP 11's 50 addresses, and the rest ignored; addresses it
// could not plausibly know are not taken; the connection survives.
func TestHostilePEX(t *testing.T) {
	f := newFixture(t, 256<<10, 64<<10)
	var dials atomic.Int32
	refuse := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("test: no dialling")
	}
	c := newClient(t, Config{Dial: refuse})
	tor := idleLeech(t, c, f.meta, TorrentOptions{})

	nc, err := net.Dial("tcp", addrOf(c).String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hs := wire.Handshake{InfoHash: f.meta.InfoHash}
	copy(hs.PeerID[:], "-EVIL01-0123456789ab")
	hs.SetExtended(true)
	if err := wire.WriteHandshake(nc, hs); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	if _, err := wire.ReadHandshake(br); err != nil {
		t.Fatal(err)
	}
	ours, _ := c.ext.Local(pex.Name)
	ext, _ := extension.MarshalHandshake(extension.Handshake{M: map[string]int{pex.Name: 1}})
	send := func(m *wire.Message) {
		t.Helper()
		if _, err := nc.Write(wire.AppendMessage(nil, m)); err != nil {
			t.Fatal(err)
		}
	}
	send(&wire.Message{ID: wire.Extended, ExtendedID: 0, Payload: ext})
	var flood pex.Message
	for i := range 120 {
		flood.Added = append(flood.Added, pex.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 6881)})
	}
	// Not plausible: port 0 is dropped by the parser, multicast here.
	flood.Added = append([]pex.Peer{{Addr: netip.MustParseAddrPort("224.0.0.1:6881")}}, flood.Added...)
	for range 5 {
		send(&wire.Message{ID: wire.Extended, ExtendedID: ours, Payload: pex.Append(nil, flood)})
	}
	send(&wire.Message{ID: wire.Extended, ExtendedID: ours, Payload: []byte("garbage")})
	waitFor(t, 5*time.Second, "the messages were not all seen", func() bool {
		s := tor.Stats()
		return s.PEXReceived+s.PEXIgnored == 6
	})
	s := tor.Stats()
	if s.PEXReceived != 1 || s.PEXIgnored != 5 || s.PEXPeers != maxPEXTake {
		t.Errorf("taken %d, ignored %d, peers learned %d; want 1, 5, %d", s.PEXReceived, s.PEXIgnored, s.PEXPeers, maxPEXTake)
	}
	if len(s.Peers) != 1 {
		t.Errorf("the flooding peer was dropped: %d peers", len(s.Peers))
	}
	waitFor(t, 5*time.Second, "no candidate from PEX was dialled", func() bool { return dials.Load() > 0 })
}
