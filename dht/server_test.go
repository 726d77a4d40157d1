package dht

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/dht/internal/krpc"
	"github.com/tbproxy/tbproxy/metainfo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestServer(t *testing.T, bootstrap ...string) *Server {
	t.Helper()
	s, err := New(Config{
		Addr:          "127.0.0.1:0",
		Bootstrap:     bootstrap,
		AllowLocal:    true,
		QueryTimeout:  500 * time.Millisecond,
		RetryInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type fakeTorrent struct {
	ih   metainfo.Hash
	port uint16
}

func (f fakeTorrent) InfoHash() metainfo.Hash { return f.ih }
func (f fakeTorrent) Port() uint16            { return f.port }

// TestDHTNetwork: eight of our nodes on loopback join through the first;
// one announces an info-hash, another finds the announcer through
// FindPeers.
func TestDHTNetwork(t *testing.T) {
	first := newTestServer(t)
	nodes := []*Server{first}
	for range 7 {
		nodes = append(nodes, newTestServer(t, first.Addr().String()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range nodes[1:] {
		if got := n.Bootstrap(ctx); got == 0 {
			t.Fatalf("node %s bootstrapped to an empty table", n.Addr())
		}
	}
	ih := metainfo.Hash(randomID())
	_, announced := nodes[3].Announce(ctx, ih, 7000)
	if announced == 0 {
		t.Fatal("announce reached no node")
	}
	want := netip.MustParseAddrPort("127.0.0.1:7000")
	got := make(chan []netip.AddrPort, 10)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		nodes[6].FindPeers(fctx, fakeTorrent{ih: ih}, func(p []netip.AddrPort) {
			select {
			case got <- p:
			default:
			}
		})
	}()
	defer func() { fcancel(); <-done }()
	for {
		select {
		case p := <-got:
			if slices.Contains(p, want) {
				return
			}
		case <-ctx.Done():
			t.Fatal("FindPeers did not find the announced peer")
		}
	}
}

// rawClient is a UDP socket speaking to a Server by hand.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newRawClient(t *testing.T, s *Server) *rawClient {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, to: net.UDPAddrFromAddrPort(s.Addr())}
}

func (c *rawClient) send(b string) {
	if _, err := c.conn.WriteToUDP([]byte(b), c.to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next reply, or nil after wait. Queries from the
// server (it pings newcomers) are skipped.
func (c *rawClient) recv(wait time.Duration) *krpc.Msg {
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		m, err := krpc.Decode(buf[:n])
		if err != nil {
			c.t.Fatalf("undecodable reply %q: %v", buf[:n], err)
		}
		if m.Y != krpc.Query {
			return m
		}
	}
}

func (c *rawClient) query(q string, a krpc.Args) *krpc.Msg {
	a.ID = strings.Repeat("c", 20)
	b, err := krpc.Encode(&krpc.Msg{T: "zz", Y: krpc.Query, Q: q, A: &a})
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(string(b))
	return c.recv(2 * time.Second)
}

func TestDHTHostile(t *testing.T) {
	s := newTestServer(t)
	ih := strings.Repeat("h", 20)
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"garbage", "\x00\x01garbage"},
		{"oversized", "d1:t2:aa1:y1:q1:z" + strings.Repeat("x", 2000) + "e"},
		{"huge string length", "d1:t99999999999:x"},
		{"wrong types", "d1:ad2:idi5ee1:q4:ping1:t2:aa1:y1:qe"},
		{"unsorted keys", "d1:y1:q1:t2:aae"},
		{"response nobody asked for", "d1:rd2:id20:" + strings.Repeat("r", 20) + "e1:t2:aa1:y1:re"},
		{"error nobody asked for", "d1:eli201e1:xe1:t2:aa1:y1:ee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, s)
			before := s.Stats().Dropped
			c.send(tc.in)
			if m := c.recv(300 * time.Millisecond); m != nil {
				t.Fatalf("answered %+v", m)
			}
			if s.Stats().Dropped != before+1 {
				t.Fatal("not counted as dropped")
			}
			if s.Stats().Nodes != 0 {
				t.Fatal("a node entered the table")
			}
		})
	}
	for _, tc := range []struct {
		name string
		q    string
		args krpc.Args
		code int64
	}{
		{"unknown method", "vote", krpc.Args{}, krpc.ErrMethod},
		{"find_node without target", krpc.FindNode, krpc.Args{}, krpc.ErrProtocol},
		{"get_peers with short info_hash", krpc.GetPeers, krpc.Args{InfoHash: "abc"}, krpc.ErrProtocol},
		{"announce without token", krpc.AnnouncePeer, krpc.Args{InfoHash: ih, Port: 80}, krpc.ErrProtocol},
		{"announce with forged token", krpc.AnnouncePeer, krpc.Args{InfoHash: ih, Port: 80, Token: "12345678"}, krpc.ErrProtocol},
		{"announce with port 0", krpc.AnnouncePeer, krpc.Args{InfoHash: ih, Token: "12345678"}, krpc.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newRawClient(t, s).query(tc.q, tc.args)
			if m == nil || m.E == nil || m.E.Code != tc.code || m.T != "zz" {
				t.Fatalf("got %+v, want error %d", m, tc.code)
			}
		})
	}
	t.Run("announce stores the querier's own IP", func(t *testing.T) {
		c := newRawClient(t, s)
		r := c.query(krpc.GetPeers, krpc.Args{InfoHash: ih})
		if r == nil || r.R == nil || r.R.Token == "" || len(r.R.Values) != 0 {
			t.Fatalf("get_peers: %+v", r)
		}
		if a := c.query(krpc.AnnouncePeer, krpc.Args{InfoHash: ih, Port: 4242, Token: r.R.Token}); a == nil || a.R == nil {
			t.Fatalf("announce: %+v", a)
		}
		// Another source cannot use that token.
		if a := newRawClient(t, s).query(krpc.AnnouncePeer, krpc.Args{InfoHash: ih, Port: 4343, Token: r.R.Token}); a == nil || a.E == nil {
			// Same IP (loopback), so the token is valid: that is BEP 5.
			t.Logf("token bound to the IP, not the port: %+v", a)
		}
		r = c.query(krpc.GetPeers, krpc.Args{InfoHash: ih})
		if r == nil || r.R == nil || !slices.Contains(r.R.Values, string(krpc.AppendPeer(nil, netip.MustParseAddrPort("127.0.0.1:4242")))) {
			t.Fatalf("announced peer not returned: %+v", r)
		}
		if r.IP != string(krpc.AppendPeer(nil, c.conn.LocalAddr().(*net.UDPAddr).AddrPort())) {
			t.Fatal("reply lacks our address (BEP 42 ip)")
		}
	})
	t.Run("flood is rate limited", func(t *testing.T) {
		c := newRawClient(t, s)
		ping, _ := krpc.Encode(&krpc.Msg{T: "fl", Y: krpc.Query, Q: krpc.Ping, A: &krpc.Args{ID: strings.Repeat("f", 20)}})
		for range 300 {
			c.send(string(ping))
		}
		replies := 0
		for c.recv(300*time.Millisecond) != nil {
			replies++
		}
		if replies == 0 || replies > 60 {
			t.Fatalf("%d replies to a flood of 300 pings (burst is 50)", replies)
		}
	})
}

// TestDHTQueryTimeout: a node that never answers is marked failed, and
// Close ends a lookup in progress.
func TestDHTQueryTimeout(t *testing.T) {
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s := newTestServer(t, silent.LocalAddr().String())
	start := time.Now()
	if n := s.Bootstrap(context.Background()); n != 0 {
		t.Fatalf("%d nodes from a silent bootstrap node", n)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("bootstrap took %v", d)
	}
	s.Close()
	if _, err := s.query(context.Background(), silent.LocalAddr().(*net.UDPAddr).AddrPort(), krpc.Ping, &krpc.Args{}); err != ErrClosed {
		t.Fatalf("query after Close: %v", err)
	}
}
