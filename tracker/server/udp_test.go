package server

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// serveUDP runs h.ServeUDP on a loopback socket of network ("udp4" or
// "udp6") and returns its udp:// URL; the socket is closed, and the loop
// joined, at cleanup.
func serveUDP(t *testing.T, h *Handler, network, addr string) string {
	t.Helper()
	conn, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	done := make(chan error, 1)
	go func() { done <- h.ServeUDP(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP returned %v", err)
		}
	})
	return "udp://" + conn.LocalAddr().String() + "/announce"
}

func TestUDPClientEndToEnd(t *testing.T) {
	ih, untracked := hashN(1), hashN(2)
	h := New(Config{
		Intervals: Static{Every: 10 * time.Second, Min: 5 * time.Second},
		AllowList: func(x metainfo.Hash) bool { return x == ih },
	})
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(fam.network, func(t *testing.T) {
			u := serveUDP(t, h, fam.network, fam.addr)
			c := &tracker.UDPClient{BaseTimeout: 500 * time.Millisecond, Retries: 2, Limits: tracker.Limits{MinInterval: time.Second}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			base := 7000
			if fam.network == "udp6" {
				base = 8000
			}
			for i := range 3 {
				resp, err := c.Announce(ctx, u, tracker.AnnounceRequest{InfoHash: ih, PeerID: idN(base + i), Port: uint16(base + i), Left: int64(i), Event: tracker.Started})
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Peers) != i || resp.Interval != 10*time.Second {
					t.Errorf("announce %d: %+v", i, resp)
				}
				for _, p := range resp.Peers {
					if p.Port() == uint16(base+i) {
						t.Error("self returned")
					}
					if p.Addr().Is4() != (fam.network == "udp4") {
						t.Errorf("peer %v of the other family", p)
					}
				}
			}
			_, err := c.Announce(ctx, u, tracker.AnnounceRequest{InfoHash: untracked, PeerID: idN(1), Port: 1})
			var fe *tracker.FailureError
			if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "torrent not tracked") {
				t.Errorf("untracked: %v", err)
			}
			sr, err := c.Scrape(ctx, u, []metainfo.Hash{ih, untracked})
			if err != nil {
				t.Fatal(err)
			}
			if sr[ih].Complete < 1 || sr[ih].Incomplete < 2 || sr[untracked] != (tracker.ScrapeResponse{}) {
				t.Errorf("scrape %+v", sr)
			}
		})
	}
}

// packet helpers for the session tests.

func connectPkt(tid uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, udpProtocolID)
	b = binary.BigEndian.AppendUint32(b, udpActionConnect)
	return binary.BigEndian.AppendUint32(b, tid)
}

type udpAnn struct {
	id        uint64
	tid       uint32
	ih        metainfo.Hash
	peer      int
	left      uint64
	event     uint32
	ip        [4]byte
	numWant   int32
	port      uint16
	truncated bool
}

func (a udpAnn) bytes() []byte {
	be := binary.BigEndian
	b := be.AppendUint64(nil, a.id)
	b = be.AppendUint32(b, udpActionAnnounce)
	b = be.AppendUint32(b, a.tid)
	b = append(b, a.ih[:]...)
	id := idN(a.peer)
	b = append(b, id[:]...)
	b = be.AppendUint64(b, 0)
	b = be.AppendUint64(b, a.left)
	b = be.AppendUint64(b, 0)
	b = be.AppendUint32(b, a.event)
	b = append(b, a.ip[:]...)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, uint32(a.numWant))
	b = be.AppendUint16(b, a.port)
	if a.truncated {
		b = b[:90]
	}
	return b
}

func scrapePkt(id uint64, tid uint32, hs ...metainfo.Hash) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.BigEndian.AppendUint32(b, udpActionScrape)
	b = binary.BigEndian.AppendUint32(b, tid)
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

func TestUDPSession(t *testing.T) {
	clock := newClock()
	from := netip.MustParseAddrPort("192.0.2.1:5000")
	ih := hashN(1)
	type result struct {
		action uint32
		msg    string // error text, for action 3
		peers  int    // announce entries
		n      int    // scrape entries
	}
	tests := []struct {
		name  string
		cfg   Config
		setup func(h *Handler, u *udpSession, id uint64)
		pkt   func(id uint64) []byte
		from  netip.AddrPort
		adv   time.Duration // clock advance between connect and request
		want  *result       // nil: no reply
	}{
		{name: "connect", pkt: func(uint64) []byte { return connectPkt(7) }, want: &result{action: udpActionConnect}},
		{name: "connect bad protocol id", pkt: func(uint64) []byte { p := connectPkt(7); p[0] = 1; return p }},
		{name: "short", pkt: func(uint64) []byte { return []byte{0, 0, 0} }},
		{name: "announce", pkt: func(id uint64) []byte {
			return udpAnn{id: id, tid: 9, ih: ih, peer: 1, left: 5, port: 6881, numWant: -1}.bytes()
		}, want: &result{action: udpActionAnnounce}},
		{name: "announce sees others of its family", setup: func(h *Handler, u *udpSession, _ uint64) {
			for i, a := range []string{"10.0.0.1:1", "10.0.0.2:1", "[2001:db8::1]:1"} {
				p := netip.MustParseAddrPort(a)
				id := u.connID(p, clock.Now().Unix()/60)
				u.handle(udpAnn{id: id, ih: ih, peer: 10 + i, port: 7000, numWant: 0}.bytes(), p, clock.Now())
			}
		}, pkt: func(id uint64) []byte {
			return udpAnn{id: id, tid: 9, ih: ih, peer: 1, left: 5, port: 6881, numWant: 50}.bytes()
		}, want: &result{action: udpActionAnnounce, peers: 2}},
		{name: "numwant clamped", setup: func(h *Handler, u *udpSession, _ uint64) {
			for i := range 300 {
				p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1)
				u.handle(udpAnn{id: u.connID(p, clock.Now().Unix()/60), ih: ih, peer: 100 + i, port: 7000}.bytes(), p, clock.Now())
			}
		}, pkt: func(id uint64) []byte {
			return udpAnn{id: id, tid: 9, ih: ih, peer: 1, port: 6881, numWant: 1 << 30}.bytes()
		}, want: &result{action: udpActionAnnounce, peers: DefaultNumWant}},
		{name: "connection id from another address", pkt: func(uint64) []byte {
			return udpAnn{id: 12345, ih: ih, peer: 1, port: 6881}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid connection id"}},
		{name: "connection id still good a minute on", adv: time.Minute, pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 6881}.bytes()
		}, want: &result{action: udpActionAnnounce}},
		{name: "connection id expired", adv: 2 * time.Minute, pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 6881}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid connection id"}},
		{name: "connection id of another address", from: netip.MustParseAddrPort("192.0.2.2:5000"), pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 6881}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid connection id"}},
		{name: "connection id from another port of the address", from: netip.MustParseAddrPort("192.0.2.1:5001"), pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 6881}.bytes()
		}, want: &result{action: udpActionAnnounce}},
		{name: "bad id on a tiny scrape gets no reply", pkt: func(uint64) []byte {
			return scrapePkt(1, 1)
		}},
		{name: "truncated announce", pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 6881, truncated: true}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid announce"}},
		{name: "port 0", pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid port"}},
		{name: "bad event", pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 1, event: 9}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid event"}},
		{name: "negative left", pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 1, left: 1 << 63}.bytes()
		}, want: &result{action: udpActionError, msg: "invalid left"}},
		{name: "not tracked", cfg: Config{AllowList: func(metainfo.Hash) bool { return false }}, pkt: func(id uint64) []byte {
			return udpAnn{id: id, ih: ih, peer: 1, port: 1}.bytes()
		}, want: &result{action: udpActionError, msg: "torrent not tracked"}},
		{name: "ip field ignored by default", setup: func(h *Handler, u *udpSession, id uint64) {
			u.handle(udpAnn{id: id, ih: ih, peer: 2, port: 2, ip: [4]byte{198, 51, 100, 1}}.bytes(), from, clock.Now())
		}, pkt: func(id uint64) []byte {
			return scrapePkt(id, 1, ih)
		}, want: &result{action: udpActionScrape, n: 1}},
		{name: "unknown action", pkt: func(id uint64) []byte {
			p := scrapePkt(id, 1, ih)
			p[11] = 7
			return p
		}, want: &result{action: udpActionError, msg: "invalid action"}},
		{name: "scrape", pkt: func(id uint64) []byte { return scrapePkt(id, 1, ih, hashN(2)) }, want: &result{action: udpActionScrape, n: 2}},
		{name: "full scrape", pkt: func(id uint64) []byte { return scrapePkt(id, 1) }, want: &result{action: udpActionError, msg: "full scrape disabled"}},
		{name: "too many hashes", pkt: func(id uint64) []byte {
			return scrapePkt(id, 1, make([]metainfo.Hash, 75)...)
		}, want: &result{action: udpActionError, msg: "too many info_hash"}},
		{name: "rate limited", cfg: Config{RateLimit: 1, RateBurst: 1}, setup: func(h *Handler, u *udpSession, id uint64) {
			u.handle(scrapePkt(id, 1, ih), from, clock.Now())
		}, pkt: func(id uint64) []byte { return scrapePkt(id, 1, ih) }, want: &result{action: udpActionError, msg: "rate limited"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Now = clock.Now
			h := New(tt.cfg)
			u := h.newUDPSession()
			r := u.handle(connectPkt(1), from, clock.Now())
			if len(r) != 16 || binary.BigEndian.Uint32(r) != udpActionConnect || binary.BigEndian.Uint32(r[4:]) != 1 {
				t.Fatalf("connect reply %x", r)
			}
			id := binary.BigEndian.Uint64(r[8:])
			if tt.setup != nil {
				tt.setup(h, u, id)
			}
			clock.Advance(tt.adv)
			src := from
			if tt.from.IsValid() {
				src = tt.from
			}
			pkt := tt.pkt(id)
			r = u.handle(pkt, src, clock.Now())
			if tt.want == nil {
				if r != nil {
					t.Fatalf("reply %x, want none", r)
				}
				return
			}
			if len(r) < 8 {
				t.Fatalf("reply %x", r)
			}
			if got := binary.BigEndian.Uint32(r); got != tt.want.action {
				t.Fatalf("action %d (%q), want %d", got, r[8:], tt.want.action)
			}
			if len(pkt) >= 16 && string(r[4:8]) != string(pkt[12:16]) {
				t.Error("transaction id not echoed")
			}
			switch tt.want.action {
			case udpActionError:
				if string(r[8:]) != tt.want.msg {
					t.Errorf("error %q, want %q", r[8:], tt.want.msg)
				}
			case udpActionAnnounce:
				if (len(r)-20)/6 != tt.want.peers || (len(r)-20)%6 != 0 {
					t.Errorf("%d bytes of peers, want %d peers", len(r)-20, tt.want.peers)
				}
			case udpActionScrape:
				if len(r) != 8+12*tt.want.n {
					t.Errorf("scrape reply of %d bytes", len(r))
				}
			}
		})
	}
}

func TestUDPTrustedIP(t *testing.T) {
	clock := newClock()
	for _, trust := range []bool{false, true} {
		h := New(Config{TrustIP: trust, Now: clock.Now})
		u := h.newUDPSession()
		ih := hashN(1)
		from := netip.MustParseAddrPort("192.0.2.1:5000")
		id := u.connID(from, clock.Now().Unix()/60)
		u.handle(udpAnn{id: id, ih: ih, peer: 1, port: 6881, ip: [4]byte{198, 51, 100, 1}}.bytes(), from, clock.Now())
		other := netip.MustParseAddrPort("192.0.2.2:5000")
		r := u.handle(udpAnn{id: u.connID(other, clock.Now().Unix()/60), ih: ih, peer: 2, port: 6882, numWant: 10}.bytes(), other, clock.Now())
		if len(r) != 26 {
			t.Fatalf("reply %x", r)
		}
		got := netip.AddrFrom4([4]byte(r[20:24]))
		want := from.Addr()
		if trust {
			want = netip.MustParseAddr("198.51.100.1")
		}
		if got != want {
			t.Errorf("trust %v: peer %v, want %v", trust, got, want)
		}
	}
}
