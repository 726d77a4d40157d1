package tracker

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// fakeUDP is a scriptable BEP 15 tracker on loopback.
type fakeUDP struct {
	pc net.PacketConn
	wg sync.WaitGroup

	// onAnnounce and onScrape return the datagrams to send for a request
	// with a valid connection ID; nil hooks stay silent. Set before use.
	onAnnounce func(req []byte, tid uint32) [][]byte
	onScrape   func(req []byte, tid uint32) [][]byte
	// dropConnects drops that many connect requests before answering.
	dropConnects int
	// ignoreStale makes requests with an unknown connection ID go
	// unanswered instead of getting an error.
	ignoreStale bool

	mu sync.Mutex
	// Guarded by mu, written by the serve goroutine.
	ids       map[uint64]bool // connection IDs issued
	nextID    uint64
	connects  int      // connect requests seen
	requests  [][]byte // announce and scrape requests seen
	datagrams int      // everything seen
}

func newFakeUDP(t *testing.T, network, addr string, setup func(f *fakeUDP)) *fakeUDP {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUDP{pc: pc, ids: map[uint64]bool{}, nextID: 0x1122334455667700}
	if setup != nil {
		setup(f)
	}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		pc.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeUDP) url(path string) string { return "udp://" + f.pc.LocalAddr().String() + path }

func (f *fakeUDP) serve() {
	defer f.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		for _, out := range f.handle(slices.Clone(buf[:n])) {
			f.pc.WriteTo(out, from)
		}
	}
}

func (f *fakeUDP) handle(b []byte) [][]byte {
	f.mu.Lock()
	f.datagrams++
	if len(b) < 16 {
		f.mu.Unlock()
		return nil
	}
	id, action, tid := binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])
	if action == actionConnect {
		f.connects++
		if id != udpProtocolID || f.dropConnects > 0 {
			f.dropConnects--
			f.mu.Unlock()
			return nil
		}
		f.nextID++
		f.ids[f.nextID] = true
		out := udpHeader(actionConnect, tid)
		out = binary.BigEndian.AppendUint64(out, f.nextID)
		f.mu.Unlock()
		return [][]byte{out}
	}
	f.requests = append(f.requests, b)
	known, ignore := f.ids[id], f.ignoreStale
	f.mu.Unlock()
	if !known {
		if ignore {
			return nil
		}
		return [][]byte{udpError(tid, "bad connection id")}
	}
	switch {
	case action == actionAnnounce && f.onAnnounce != nil:
		return f.onAnnounce(b, tid)
	case action == actionScrape && f.onScrape != nil:
		return f.onScrape(b, tid)
	}
	return nil
}

// forget makes the tracker forget every connection ID, as a restart would.
func (f *fakeUDP) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.ids)
}

func (f *fakeUDP) counts() (connects, requests, datagrams int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects, len(f.requests), f.datagrams
}

func (f *fakeUDP) lastRequest() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func udpHeader(action, tid uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, action)
	return binary.BigEndian.AppendUint32(b, tid)
}

func udpError(tid uint32, msg string) []byte {
	return append(udpHeader(actionError, tid), msg...)
}

func udpAnnounceReply(tid, interval, leechers, seeders uint32, peers string) []byte {
	b := udpHeader(actionAnnounce, tid)
	b = binary.BigEndian.AppendUint32(b, interval)
	b = binary.BigEndian.AppendUint32(b, leechers)
	b = binary.BigEndian.AppendUint32(b, seeders)
	return append(b, peers...)
}

// fastUDP is a client with test-sized timeouts.
func fastUDP() *UDPClient {
	return &UDPClient{Retries: 2, BaseTimeout: 50 * time.Millisecond}
}

func TestUDPAnnounce(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte {
			return [][]byte{udpAnnounceReply(tid, 1800, 2, 3, compact("127.0.0.1:6881", "10.0.0.1:1", "0.0.0.0:5")+"\x01")}
		}
	})
	c := fastUDP()
	req := AnnounceRequest{
		InfoHash: trickyHash, PeerID: [20]byte([]byte("-TB0001-abcdefghijkl")), Port: 51413,
		Uploaded: 10, Downloaded: 20, Left: 30, Event: Started, NumWant: 5000, Key: 0xCAFEBABE,
	}
	resp, err := c.Announce(context.Background(), f.url(""), req)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Peers, addrs("127.0.0.1:6881", "10.0.0.1:1")) || resp.Interval != 1800*time.Second ||
		resp.MinInterval != DefaultMinInterval || resp.Incomplete != 2 || resp.Complete != 3 {
		t.Errorf("response %+v", resp)
	}
	b := f.lastRequest()
	be := binary.BigEndian
	tests := []struct {
		name      string
		got, want any
	}{
		{"length", len(b), 98},
		{"connection id", be.Uint64(b) >= 0x1122334455667701, true},
		{"info hash", metainfo.Hash(b[16:36]), trickyHash},
		{"peer id", string(b[36:56]), "-TB0001-abcdefghijkl"},
		{"downloaded", be.Uint64(b[56:]), uint64(20)},
		{"left", be.Uint64(b[64:]), uint64(30)},
		{"uploaded", be.Uint64(b[72:]), uint64(10)},
		{"event started is 2", be.Uint32(b[80:]), uint32(2)},
		{"ip", be.Uint32(b[84:]), uint32(0)},
		{"key", be.Uint32(b[88:]), uint32(0xCAFEBABE)},
		{"num want capped", be.Uint32(b[92:]), uint32(DefaultMaxPeers)},
		{"port", be.Uint16(b[96:]), uint16(51413)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
}

func TestUDPURLData(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte { return [][]byte{udpAnnounceReply(tid, 60, 0, 0, "")} }
	})
	long := "/" + strings.Repeat("p", 300)
	tests := []struct{ name, path, want string }{
		{"none", "", ""},
		{"root", "/", ""},
		{"path and query", "/announce?pk=1", "\x02\x0e/announce?pk=1"},
		{"split at 255", long, "\x02\xff" + long[:255] + "\x02\x2e" + long[255:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := fastUDP().Announce(context.Background(), f.url(tt.path), AnnounceRequest{}); err != nil {
				t.Fatal(err)
			}
			if got := string(f.lastRequest()[98:]); got != tt.want {
				t.Errorf("options %q; want %q", got, tt.want)
			}
		})
	}
}

func TestUDPIgnoresMismatchedDatagrams(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte {
			return [][]byte{
				udpAnnounceReply(tid+1, 60, 0, 0, compact("6.6.6.6:6")),   // another transaction
				udpError(tid^0xffff, "not for you"),                       // another transaction's error
				append(udpHeader(actionScrape, tid), make([]byte, 12)...), // right tid, wrong action
				{0, 0, 0, 1}, // too short
				udpAnnounceReply(tid, 60, 0, 0, compact("1.2.3.4:5")), // the answer
			}
		}
	})
	resp, err := fastUDP().Announce(context.Background(), f.url(""), AnnounceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Peers, addrs("1.2.3.4:5")) {
		t.Errorf("peers %v; want only the matching reply's", resp.Peers)
	}
}

func TestUDPErrorAction(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte {
			return [][]byte{udpError(tid, "torrent not\x00 registered\n")}
		}
	})
	c := fastUDP()
	_, err := c.Announce(context.Background(), f.url(""), AnnounceRequest{})
	var fe *FailureError
	if !errors.As(err, &fe) || fe.Reason != "torrent not\uFFFD registered" {
		t.Fatalf("err = %v; want a FailureError", err)
	}
	// The refusal may concern the connection ID: the next call reconnects.
	c.Announce(context.Background(), f.url(""), AnnounceRequest{})
	if connects, _, _ := f.counts(); connects != 2 {
		t.Errorf("%d connects; want 2", connects)
	}
}

func TestUDPNoAnswer(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) { f.dropConnects = 1 << 30 })
	start := time.Now()
	_, err := fastUDP().Announce(context.Background(), f.url(""), AnnounceRequest{})
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "no reply after 3 attempts") {
		t.Fatalf("err = %v", err)
	}
	// 50 + 100 + 200 ms.
	if elapsed < 340*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("gave up after %v; want about 350ms", elapsed)
	}
	if _, _, n := f.counts(); n != 3 {
		t.Errorf("%d datagrams sent; want 3", n)
	}
}

func TestUDPRetransmit(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.dropConnects = 1
		f.onAnnounce = func(req []byte, tid uint32) [][]byte { return [][]byte{udpAnnounceReply(tid, 60, 0, 0, "")} }
	})
	if _, err := fastUDP().Announce(context.Background(), f.url(""), AnnounceRequest{}); err != nil {
		t.Fatal(err)
	}
	if connects, _, _ := f.counts(); connects != 2 {
		t.Errorf("%d connects; want 2", connects)
	}
}

func TestUDPConnectionIDReuse(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.ignoreStale = true
		f.onAnnounce = func(req []byte, tid uint32) [][]byte { return [][]byte{udpAnnounceReply(tid, 60, 0, 0, "")} }
	})
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	c := fastUDP()
	c.Now = func() time.Time { return now }
	announce := func() {
		t.Helper()
		if _, err := c.Announce(context.Background(), f.url(""), AnnounceRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name         string
		before       func()
		wantConnects int
	}{
		{"first connects", func() {}, 1},
		{"second reuses", func() { now = now.Add(59 * time.Second) }, 1},
		{"expired after a minute", func() { now = now.Add(2 * time.Second) }, 2},
		{"fresh id reused", func() {}, 2},
		{"tracker forgot the id: timeout, then reconnect", f.forget, 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.before()
			announce()
			if connects, _, _ := f.counts(); connects != s.wantConnects {
				t.Errorf("%d connects; want %d", connects, s.wantConnects)
			}
		})
	}
}

func TestUDPContext(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) { f.dropConnects = 1 << 30 })
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := (&UDPClient{}).Announce(ctx, f.url(""), AnnounceRequest{}) // 15 s timeouts
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v; want %v", err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("returned after %v", d)
			}
		})
	}
}

func TestUDPScrape(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onScrape = func(req []byte, tid uint32) [][]byte {
			out := udpHeader(actionScrape, tid)
			for i := range (len(req) - 16) / 20 {
				for _, v := range []uint32{uint32(10 * i), uint32(10*i + 1), uint32(10*i + 2)} {
					out = binary.BigEndian.AppendUint32(out, v)
				}
			}
			return [][]byte{out[:len(out)-4]} // the last entry is cut short
		}
	})
	hashes := []metainfo.Hash{{1}, {2}, {3}}
	got, err := fastUDP().Scrape(context.Background(), f.url("/announce"), hashes)
	if err != nil {
		t.Fatal(err)
	}
	want := map[metainfo.Hash]ScrapeResponse{{1}: {0, 1, 2}, {2}: {10, 11, 12}}
	if len(got) != len(want) || got[hashes[0]] != want[hashes[0]] || got[hashes[1]] != want[hashes[1]] {
		t.Errorf("got %v; want %v", got, want)
	}
	if req := f.lastRequest(); len(req) != 16+60 || metainfo.Hash(req[56:76]) != hashes[2] {
		t.Errorf("scrape request of %d bytes", len(req))
	}
}

func TestUDPIPv6Tracker(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	pc.Close()
	f := newFakeUDP(t, "udp6", "[::1]:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte {
			return [][]byte{udpAnnounceReply(tid, 60, 0, 0, compact("[2001:db8::1]:1", "[::ffff:1.2.3.4]:2")+"\x00\x00\x00")}
		}
	})
	resp, err := fastUDP().Announce(context.Background(), f.url(""), AnnounceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Peers, addrs("[2001:db8::1]:1", "1.2.3.4:2")) {
		t.Errorf("peers %v", resp.Peers)
	}
}

func TestUDPBadURL(t *testing.T) {
	tests := []struct{ name, url string }{
		{"no port", "udp://127.0.0.1"},
		{"empty port", "udp://127.0.0.1:"},
		{"no host", "udp://:6969"},
		{"port 0", "udp://127.0.0.1:0"},
		{"port too big", "udp://127.0.0.1:70000"},
		{"http scheme", "http://127.0.0.1:6969/announce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := fastUDP().Announce(context.Background(), tt.url, AnnounceRequest{}); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestUDPDialInjected(t *testing.T) {
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte { return [][]byte{udpAnnounceReply(tid, 60, 0, 0, "")} }
	})
	var dialed []string
	c := fastUDP()
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, network+" "+addr)
		return (&net.Dialer{}).DialContext(ctx, network, f.pc.LocalAddr().String())
	}
	if _, err := c.Announce(context.Background(), "udp://tracker.invalid:6969/announce", AnnounceRequest{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dialed, []string{"udp tracker.invalid:6969"}) {
		t.Errorf("dialed %q", dialed)
	}
}

func TestParseUDPAnnounceResponse(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		ipv6    bool
		lim     Limits
		want    AnnounceResponse
		failure string
		wantErr bool
	}{
		{name: "empty", b: nil, wantErr: true},
		{name: "short header", b: []byte{0, 0, 0, 1, 0, 0, 0}, wantErr: true},
		{name: "header only: opentracker's refusal", b: udpHeader(actionAnnounce, 7), failure: "announce refused (empty udp reply)"},
		{name: "header and a byte", b: append(udpHeader(actionAnnounce, 7), 0), wantErr: true},
		{name: "19 bytes", b: udpAnnounceReply(7, 1, 1, 1, "")[:19], wantErr: true},
		{name: "wrong action", b: udpHeader(actionConnect, 7), wantErr: true},
		{name: "error action", b: udpError(7, "go away"), failure: "go away"},
		{name: "error action empty", b: udpError(7, ""), failure: "(no reason given)"},
		{
			name: "no peers, interval 0",
			b:    udpAnnounceReply(7, 0, 4, 5, ""),
			want: AnnounceResponse{Interval: DefaultMinInterval, MinInterval: DefaultMinInterval, Incomplete: 4, Complete: 5},
		},
		{
			name: "interval 2^31 and huge counts",
			b:    udpAnnounceReply(7, 1<<31, 1<<32-1, 1<<31, ""),
			want: AnnounceResponse{Interval: DefaultMaxInterval, MinInterval: DefaultMinInterval, Incomplete: 1<<31 - 1, Complete: 1<<31 - 1},
		},
		{
			name: "partial peer entry",
			b:    udpAnnounceReply(7, 600, 0, 0, compact("1.1.1.1:1")+"\x02\x02\x02\x02\x02"),
			want: AnnounceResponse{Interval: 600 * time.Second, MinInterval: DefaultMinInterval, Peers: addrs("1.1.1.1:1")},
		},
		{
			name: "ipv6 entries",
			b:    udpAnnounceReply(7, 600, 0, 0, compact("[2001:db8::9]:9", "[::]:1")),
			ipv6: true,
			want: AnnounceResponse{Interval: 600 * time.Second, MinInterval: DefaultMinInterval, Peers: addrs("[2001:db8::9]:9")},
		},
		{
			name: "max peers",
			b:    udpAnnounceReply(7, 600, 0, 0, compact("1.1.1.1:1", "2.2.2.2:2", "3.3.3.3:3")),
			lim:  Limits{MaxPeers: 2, MinInterval: time.Second},
			want: AnnounceResponse{Interval: 600 * time.Second, MinInterval: time.Second, Peers: addrs("1.1.1.1:1", "2.2.2.2:2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUDPAnnounceResponse(tt.b, tt.ipv6, tt.lim)
			if tt.failure != "" || tt.wantErr {
				var fe *FailureError
				switch {
				case err == nil:
					t.Fatalf("no error; got %+v", got)
				case tt.wantErr && !errors.Is(err, ErrBadResponse):
					t.Fatalf("err = %v; want ErrBadResponse", err)
				case !tt.wantErr && (!errors.As(err, &fe) || fe.Reason != tt.failure):
					t.Fatalf("err = %v; want failure %q", err, tt.failure)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Peers, tt.want.Peers) {
				t.Errorf("peers %v; want %v", got.Peers, tt.want.Peers)
			}
			if got.Interval != tt.want.Interval || got.MinInterval != tt.want.MinInterval ||
				got.Complete != tt.want.Complete || got.Incomplete != tt.want.Incomplete {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}
