package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// ann is one announce sent before a test's final request.
type ann struct {
	remote  string
	q       string
	headers []string
}

func TestAnnounceHTTP(t *testing.T) {
	ih := hashN(1)
	other := hashN(2)
	q := func(n, port int, extra ...string) string { return "/announce?" + query(ih, idN(n), port, extra...) }
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		cfg     Config
		before  []ann
		remote  string
		target  string
		headers []string
		// checks
		failure    string // substring of the failure reason; "" for success
		peers      []netip.AddrPort
		nPeers     int // checked when peers is nil and nPeers > 0
		complete   int
		incomplete int
		check      func(t *testing.T, r reply, body []byte)
	}{
		{
			name:   "first announce",
			remote: "127.0.0.1:40000", target: q(1, 6881, "left=10", "event=started"),
			incomplete: 1, peers: []netip.AddrPort{},
		},
		{
			name:   "compact ipv4",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881, "left=0")}},
			remote: "127.0.0.2:40001", target: q(2, 6882, "left=10", "compact=1"),
			complete: 1, incomplete: 1, peers: []netip.AddrPort{ap("127.0.0.1:6881")},
			check: func(t *testing.T, r reply, body []byte) {
				if r.Peers6 != "" {
					t.Error("peers6 present without IPv6 peers")
				}
				if !strings.Contains(string(body), "5:peers6:") {
					t.Errorf("body %q", body)
				}
			},
		},
		{
			name:   "same IP, other port is another peer",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}},
			remote: "127.0.0.1:40001", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.1:6881")},
		},
		{
			name:   "self not returned",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}, {remote: "127.0.0.2:40000", q: q(2, 6882)}},
			remote: "127.0.0.1:40009", target: q(1, 6881),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.2:6882")},
		},
		{
			name:   "ipv6 peers in peers6",
			before: []ann{{remote: "[2001:db8::1]:40000", q: q(1, 6881)}, {remote: "127.0.0.1:40000", q: q(2, 6882)}},
			remote: "[2001:db8::2]:40000", target: q(3, 6883),
			incomplete: 3, peers: []netip.AddrPort{ap("127.0.0.1:6882"), ap("[2001:db8::1]:6881")},
			check: func(t *testing.T, r reply, _ []byte) {
				if len(r.Peers6) != 18 {
					t.Errorf("peers6 of %d bytes", len(r.Peers6))
				}
			},
		},
		{
			name:   "ipv4-mapped remote is ipv4",
			before: []ann{{remote: "[::ffff:127.0.0.5]:40000", q: q(1, 6881)}},
			remote: "127.0.0.1:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.5:6881")},
		},
		{
			name:   "non-compact with peer ids",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}, {remote: "[::1]:40000", q: q(3, 6883)}},
			remote: "127.0.0.2:40000", target: q(2, 6882, "compact=0"),
			incomplete: 3,
			check: func(t *testing.T, r reply, _ []byte) {
				var ps []dictPeer
				if err := bencode.Unmarshal(r.Peers, &ps); err != nil {
					t.Fatal(err)
				}
				slices.SortFunc(ps, func(a, b dictPeer) int { return a.Port - b.Port })
				want := []dictPeer{{IP: "127.0.0.1", PeerID: idS(1), Port: 6881}, {IP: "::1", PeerID: idS(3), Port: 6883}}
				if !slices.Equal(ps, want) {
					t.Errorf("peers %+v, want %+v", ps, want)
				}
			},
		},
		{
			name:   "non-compact without peer ids",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}},
			remote: "127.0.0.2:40000", target: q(2, 6882, "compact=0", "no_peer_id=1"),
			incomplete: 2,
			check: func(t *testing.T, r reply, body []byte) {
				var ps []dictPeer
				if err := bencode.Unmarshal(r.Peers, &ps); err != nil {
					t.Fatal(err)
				}
				if len(ps) != 1 || ps[0] != (dictPeer{IP: "127.0.0.1", Port: 6881}) || strings.Contains(string(body), "peer id") {
					t.Errorf("peers %+v", ps)
				}
			},
		},
		{
			name:   "stopped gets no peers",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}, {remote: "127.0.0.2:40000", q: q(2, 6882)}},
			remote: "127.0.0.2:40000", target: q(2, 6882, "event=stopped"),
			incomplete: 1, peers: []netip.AddrPort{},
		},
		{
			name:   "ip= ignored by default",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 80, "ip=192.0.2.99")}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.1:80")},
		},
		{
			name:   "ip= honoured when trusted",
			cfg:    Config{TrustIP: true},
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881, "ip=192.0.2.99")}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("192.0.2.99:6881")},
		},
		{
			name:   "trusted ip= with a name uses the socket",
			cfg:    Config{TrustIP: true},
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881, "ip=victim.example")}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.1:6881")},
		},
		{
			name:   "trusted ip= unspecified refused",
			cfg:    Config{TrustIP: true},
			remote: "127.0.0.1:40000", target: q(1, 6881, "ip=0.0.0.0"),
			failure: "invalid ip",
		},
		{
			name:   "X-Forwarded-For ignored by default",
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881), headers: []string{"X-Forwarded-For: 192.0.2.7"}}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.1:6881")},
		},
		{
			name:   "X-Forwarded-For last entry when trusted",
			cfg:    Config{TrustForwardedFor: true},
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881), headers: []string{"X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 10.0.0.1, 192.0.2.7"}}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("192.0.2.7:6881")},
		},
		{
			name:   "trusted X-Forwarded-For garbage uses the socket",
			cfg:    Config{TrustForwardedFor: true},
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881), headers: []string{"X-Forwarded-For: nonsense"}}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, peers: []netip.AddrPort{ap("127.0.0.1:6881")},
		},
		{
			name:   "allow-list refuses others",
			cfg:    Config{AllowList: func(h metainfo.Hash) bool { return h == other }},
			remote: "127.0.0.1:40000", target: q(1, 6881),
			failure: "torrent not tracked",
		},
		{
			name:   "allow-list accepts its own",
			cfg:    Config{AllowList: func(h metainfo.Hash) bool { return h == ih }},
			remote: "127.0.0.1:40000", target: q(1, 6881),
			incomplete: 1, peers: []netip.AddrPort{},
		},
		{
			name:   "interval from the policy",
			cfg:    Config{Intervals: Growing{Base: 10 * time.Second, Min: 2 * time.Second, PerPeers: 1, Max: time.Minute}},
			before: []ann{{remote: "127.0.0.1:40000", q: q(1, 6881)}},
			remote: "127.0.0.2:40000", target: q(2, 6882),
			incomplete: 2, nPeers: 1,
			check: func(t *testing.T, r reply, _ []byte) {
				if r.Interval != 30 || r.MinInterval != 2 {
					t.Errorf("interval %d, min %d; want 30, 2", r.Interval, r.MinInterval)
				}
			},
		},
		{
			name:   "default intervals",
			remote: "127.0.0.1:40000", target: q(1, 6881),
			incomplete: 1,
			check: func(t *testing.T, r reply, _ []byte) {
				if r.Interval != 1800 || r.MinInterval != 300 {
					t.Errorf("interval %d, min %d", r.Interval, r.MinInterval)
				}
			},
		},
		{
			name:   "numwant=1000000 is clamped",
			before: manyPeers(q, 300),
			remote: "127.0.0.1:40000", target: q(9999, 6881, "numwant=1000000"),
			incomplete: 301, nPeers: DefaultNumWant,
		},
		{
			name:   "MaxNumWant never above 200",
			cfg:    Config{MaxNumWant: 100000},
			before: manyPeers(q, 300),
			remote: "127.0.0.1:40000", target: q(9999, 6881, "numwant=1000000"),
			incomplete: 301, nPeers: MaxNumWant,
		},
		{
			name:   "numwant absent is the default",
			cfg:    Config{MaxNumWant: 200, DefaultNumWant: 30},
			before: manyPeers(q, 100),
			remote: "127.0.0.1:40000", target: q(9999, 6881),
			incomplete: 101, nPeers: 30,
		},
		{
			name:   "numwant=0",
			before: manyPeers(q, 10),
			remote: "127.0.0.1:40000", target: q(9999, 6881, "numwant=0"),
			incomplete: 11, peers: []netip.AddrPort{},
		},

		// Hostile requests (HARDENING 86-90): a failure reason, no crash.
		{name: "missing info_hash", remote: "127.0.0.1:1", target: "/announce?peer_id=" + escID(1) + "&port=1", failure: "missing info_hash"},
		{name: "no query", remote: "127.0.0.1:1", target: "/announce", failure: "missing info_hash"},
		{name: "19-byte info_hash", remote: "127.0.0.1:1", target: "/announce?info_hash=" + esc(ih[:19]) + "&peer_id=" + escID(1) + "&port=1", failure: "invalid info_hash"},
		{name: "garbage info_hash", remote: "127.0.0.1:1", target: "/announce?info_hash=%G0%ZZ&peer_id=" + escID(1) + "&port=1", failure: "invalid info_hash"},
		{name: "port=0", remote: "127.0.0.1:1", target: q(1, 0), failure: "invalid port"},
		{name: "port=70000", remote: "127.0.0.1:1", target: q(1, 70000), failure: "invalid port"},
		{name: "left=-1", remote: "127.0.0.1:1", target: q(1, 1, "left=-1"), failure: "invalid left"},
		{name: "huge query", remote: "127.0.0.1:1", target: q(1, 1, "x="+strings.Repeat("a", 5000)), failure: "request too long"},
		{name: "unparseable remote", remote: "@", target: q(1, 1), failure: "invalid peer address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(tt.cfg)
			for _, b := range tt.before {
				r, _ := do(t, h, b.remote, b.q, b.headers...)
				if r.Failure != "" {
					t.Fatalf("setup announce refused: %s", r.Failure)
				}
			}
			r, body := do(t, h, tt.remote, tt.target, tt.headers...)
			if tt.failure != "" {
				if !strings.Contains(r.Failure, tt.failure) {
					t.Fatalf("failure %q, want %q (body %q)", r.Failure, tt.failure, body)
				}
				if !strings.HasPrefix(string(body), "d14:failure reason") {
					t.Errorf("body %q", body)
				}
				if h.Stats().Failures == 0 {
					t.Error("failure not counted")
				}
				return
			}
			if r.Failure != "" {
				t.Fatalf("refused: %s", r.Failure)
			}
			if r.Complete != tt.complete || r.Incomplete != tt.incomplete {
				t.Errorf("complete %d incomplete %d; want %d, %d", r.Complete, r.Incomplete, tt.complete, tt.incomplete)
			}
			if tt.peers != nil || tt.nPeers > 0 {
				got := r.compactPeers(t)
				if tt.peers != nil {
					slices.SortFunc(got, func(a, b netip.AddrPort) int { return a.Compare(b) })
					if !slices.Equal(got, tt.peers) && (len(got) != 0 || len(tt.peers) != 0) {
						t.Errorf("peers %v, want %v", got, tt.peers)
					}
				} else if len(got) != tt.nPeers {
					t.Errorf("%d peers, want %d", len(got), tt.nPeers)
				}
				self, _ := netip.ParseAddrPort(tt.remote)
				for _, p := range got {
					if p.Addr() == self.Addr().Unmap() && strings.Contains(tt.target, "port="+strconv.Itoa(int(p.Port()))+"&") {
						t.Errorf("announcing peer %v returned to itself", p)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, r, body)
			}
		})
	}
}

// manyPeers is n announces of distinct peers from distinct loopback
// addresses.
func manyPeers(q func(n, port int, extra ...string) string, n int) []ann {
	var out []ann
	for i := range n {
		out = append(out, ann{remote: fmt.Sprintf("127.1.%d.%d:1000", i/250, i%250+1), q: q(i, 6881)})
	}
	return out
}

func TestScrapeHTTP(t *testing.T) {
	a, b, c := hashN(1), hashN(2), hashN(3)
	type counts struct {
		Complete   int `bencode:"complete"`
		Downloaded int `bencode:"downloaded"`
		Incomplete int `bencode:"incomplete"`
	}
	type files struct {
		Files map[string]counts `bencode:"files"`
	}
	setup := []ann{
		{remote: "127.0.0.1:1", q: "/announce?" + query(a, idN(1), 1, "left=0")},
		{remote: "127.0.0.1:1", q: "/announce?" + query(a, idN(2), 2, "left=5")},
		{remote: "127.0.0.1:1", q: "/announce?" + query(a, idN(2), 2, "left=0", "event=completed")},
		{remote: "127.0.0.1:1", q: "/announce?" + query(b, idN(3), 3, "left=5")},
	}
	hq := func(hs ...metainfo.Hash) string {
		var parts []string
		for _, h := range hs {
			parts = append(parts, "info_hash="+esc(h[:]))
		}
		return strings.Join(parts, "&")
	}
	many := make([]metainfo.Hash, 10_000)
	for i := range many {
		many[i] = hashN(i)
	}
	tests := []struct {
		name    string
		cfg     Config
		target  string
		want    map[metainfo.Hash]tracker.ScrapeResponse
		failure string
	}{
		{name: "counts", target: "/scrape?" + hq(a), want: map[metainfo.Hash]tracker.ScrapeResponse{a: {Complete: 2, Downloaded: 1}}},
		{name: "several, repeated, unsorted", target: "/scrape?" + hq(b, a, b), want: map[metainfo.Hash]tracker.ScrapeResponse{
			a: {Complete: 2, Downloaded: 1}, b: {Incomplete: 1}}},
		{name: "unknown hash has zeros", target: "/scrape?" + hq(c), want: map[metainfo.Hash]tracker.ScrapeResponse{c: {}}},
		{name: "allow-list omits others", cfg: Config{AllowList: func(h metainfo.Hash) bool { return h != b }},
			target: "/scrape?" + hq(a, b), want: map[metainfo.Hash]tracker.ScrapeResponse{a: {Complete: 2, Downloaded: 1}}},
		{name: "mounted under a prefix", target: "/tracker/x/scrape?" + hq(a), want: map[metainfo.Hash]tracker.ScrapeResponse{a: {Complete: 2, Downloaded: 1}}},
		{name: "full scrape disabled", target: "/scrape", failure: "full scrape disabled"},
		{name: "10k hashes", target: "/scrape?" + hq(many...), failure: "request too long"},
		{name: "75 hashes", target: "/scrape?" + hq(many[:75]...), failure: "too many info_hash"},
		{name: "19-byte hash", target: "/scrape?info_hash=" + esc(a[:19]), failure: "invalid info_hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(tt.cfg)
			for _, s := range setup {
				if r, _ := do(t, h, s.remote, s.q); r.Failure != "" && tt.cfg.AllowList == nil {
					t.Fatal(r.Failure)
				}
			}
			r, body := do(t, h, "127.0.0.9:1", tt.target)
			if tt.failure != "" {
				if !strings.Contains(r.Failure, tt.failure) {
					t.Fatalf("failure %q, want %q", r.Failure, tt.failure)
				}
				return
			}
			var f files
			if err := bencode.Unmarshal(body, &f); err != nil {
				t.Fatal(err)
			}
			got := map[metainfo.Hash]tracker.ScrapeResponse{}
			for k, v := range f.Files {
				got[metainfo.Hash([]byte(k))] = tracker.ScrapeResponse(v)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%x: %+v, want %+v", k[:4], got[k], v)
				}
			}
			if h.Stats().Scrapes != 1 {
				t.Errorf("stats %+v", h.Stats())
			}
		})
	}
}

func TestRouting(t *testing.T) {
	h := New(Config{})
	tests := []struct {
		method, target string
		code           int
	}{
		{http.MethodGet, "/announce", 200},
		{http.MethodHead, "/announce", 200},
		{http.MethodGet, "/a/b/announce?x=1", 200},
		{http.MethodGet, "/scrape", 200},
		{http.MethodGet, "/", 404},
		{http.MethodGet, "/announce/x", 404},
		{http.MethodGet, "/myannounce", 404},
		{http.MethodPost, "/announce", 405},
		{http.MethodDelete, "/scrape", 405},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, nil))
			if w.Code != tt.code {
				t.Errorf("status %d, want %d", w.Code, tt.code)
			}
		})
	}
}

func TestAnnounceExpiryHTTP(t *testing.T) {
	clock := newClock()
	h := New(Config{Intervals: Static{Every: 10 * time.Second, Min: time.Second}, Now: clock.Now})
	ih := hashN(1)
	do(t, h, "127.0.0.1:1", "/announce?"+query(ih, idN(1), 6881))
	clock.Advance(15 * time.Second)
	do(t, h, "127.0.0.2:1", "/announce?"+query(ih, idN(2), 6882))
	clock.Advance(10 * time.Second) // peer 1 is 25 s old: past the 20 s TTL
	r, _ := do(t, h, "127.0.0.3:1", "/announce?"+query(ih, idN(3), 6883))
	got := r.compactPeers(t)
	if r.Incomplete != 2 || len(got) != 1 || got[0] != netip.MustParseAddrPort("127.0.0.2:6882") {
		t.Errorf("incomplete %d, peers %v", r.Incomplete, got)
	}
}

func TestAnnounceFloodHTTP(t *testing.T) {
	store := NewMemoryStore(MemoryConfig{MaxTorrents: 1000, MaxPeersPerTorrent: 100, MaxPeers: 5000})
	h := New(Config{Store: store})
	// 100k distinct torrents, then 100k distinct peers on one torrent.
	// The requests skip httptest and bencode decoding: 200k of them must
	// stay quick under the race detector.
	r := httptest.NewRequest(http.MethodGet, "/announce", nil)
	w := &bodyWriter{h: http.Header{}}
	announce := func(remote, q string) string {
		r.RemoteAddr, r.URL.RawQuery = remote, q
		w.body = w.body[:0]
		h.ServeHTTP(w, r)
		reason, ok := strings.CutPrefix(string(w.body), "d14:failure reason")
		if !ok {
			return ""
		}
		_, reason, _ = strings.Cut(reason, ":")
		return strings.TrimSuffix(reason, "e")
	}
	full := 0
	for i := range 100_000 {
		switch f := announce("127.0.0.1:1", query(hashN(i), idN(i), 1+i%60000)); f {
		case "":
		case "tracker is full":
			full++
		default:
			t.Fatal(f)
		}
	}
	for i := range 100_000 {
		remote := fmt.Sprintf("10.%d.%d.%d:1", i>>16, (i>>8)&255, i&255)
		if f := announce(remote, query(hashN(0), idN(i), 6881)); f != "" {
			t.Fatal(f)
		}
	}
	// One peer id from many addresses: each announce stays cheap.
	for i := range 5000 {
		remote := fmt.Sprintf("10.200.%d.%d:1", i>>8, i&255)
		if f := announce(remote, query(hashN(0), idN(7), 6881)); f != "" {
			t.Fatal(f)
		}
	}
	st := h.Stats()
	if st.Torrents > 1000 || st.Peers > 5000 || full != 99_000 {
		t.Errorf("stats %+v, %d refused", st, full)
	}
	if r, _ := do(t, h, "127.0.0.1:1", "/scrape?info_hash="+escHash(hashN(0))); r.Failure != "" {
		t.Error(r.Failure)
	}
}

func TestRateLimit(t *testing.T) {
	clock := newClock()
	h := New(Config{RateLimit: 1, RateBurst: 2, RateTable: 32, Now: clock.Now})
	ih := hashN(1)
	target := "/announce?" + query(ih, idN(1), 6881)
	for i, want := range []string{"", "", "rate limited"} {
		if r, _ := do(t, h, "192.0.2.1:1", target); r.Failure != want {
			t.Errorf("request %d: failure %q, want %q", i, r.Failure, want)
		}
	}
	if r, _ := do(t, h, "192.0.2.2:1", target); r.Failure != "" {
		t.Errorf("another address limited: %q", r.Failure)
	}
	// Loopback, which every local peer shares, is never limited.
	for i := range 5 {
		if r, _ := do(t, h, "127.0.0.1:1", target); r.Failure != "" {
			t.Errorf("loopback request %d: %q", i, r.Failure)
		}
	}
	if r, _ := do(t, h, "[2001:db8::1]:1", target); r.Failure != "" {
		t.Error(r.Failure)
	}
	do(t, h, "[2001:db8::2]:1", target)
	if r, _ := do(t, h, "[2001:db8::3]:1", target); r.Failure != "rate limited" {
		t.Errorf("same /64 not limited together: %q", r.Failure)
	}
	clock.Advance(time.Second)
	if r, _ := do(t, h, "192.0.2.1:1", target); r.Failure != "" {
		t.Errorf("after refill: %q", r.Failure)
	}
	// The table stays bounded under many sources.
	for i := range 10_000 {
		do(t, h, fmt.Sprintf("10.0.%d.%d:1", i>>8, i&255), "/announce?"+query(ih, idN(i), 6881, "numwant=0"))
	}
	n := 0
	for i := range h.limit.shards {
		n += len(h.limit.shards[i].buckets)
	}
	if n > 32 {
		t.Errorf("%d buckets, cap 32", n)
	}
}

// failingStore fails with internal detail that must not reach clients.
type failingStore struct{}

func (failingStore) Announce(Announce, time.Time, []Peer) ([]Peer, tracker.ScrapeResponse, error) {
	return nil, tracker.ScrapeResponse{}, errors.New("dial tcp 10.1.1.1:6379: secret detail")
}
func (failingStore) Scrape(metainfo.Hash, time.Time) (tracker.ScrapeResponse, bool) {
	return tracker.ScrapeResponse{}, false
}

func TestStoreErrorNotLeaked(t *testing.T) {
	h := New(Config{Store: failingStore{}})
	r, body := do(t, h, "127.0.0.1:1", "/announce?"+query(hashN(1), idN(1), 1))
	if r.Failure != "internal error" || strings.Contains(string(body), "secret") {
		t.Errorf("body %q", body)
	}
}

// TestClientEndToEnd checks that this module's own HTTP tracker client
// understands the replies, over a real loopback connection.
func TestClientEndToEnd(t *testing.T) {
	ih, untracked := hashN(1), hashN(2)
	h := New(Config{
		Intervals: Static{Every: 10 * time.Second, Min: 5 * time.Second},
		AllowList: func(x metainfo.Hash) bool { return x == ih },
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	announceURL := srv.URL + "/announce"
	c := &tracker.HTTPClient{Limits: tracker.Limits{MinInterval: time.Second}}
	ctx := context.Background()

	for i := range 3 {
		req := tracker.AnnounceRequest{InfoHash: ih, PeerID: idN(i), Port: uint16(7000 + i), Left: int64(i), Event: tracker.Started, NumWant: 10}
		resp, err := c.Announce(ctx, announceURL, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Peers) != i || resp.Interval != 10*time.Second || resp.MinInterval != 5*time.Second {
			t.Errorf("announce %d: %+v", i, resp)
		}
		for _, p := range resp.Peers {
			if p.Port() == uint16(7000+i) {
				t.Errorf("announce %d: self returned", i)
			}
		}
		if resp.Complete != 1 || resp.Incomplete != i {
			t.Errorf("announce %d: complete %d, incomplete %d", i, resp.Complete, resp.Incomplete)
		}
	}
	// Non-compact.
	resp, err := c.Announce(ctx, announceURL, tracker.AnnounceRequest{InfoHash: ih, PeerID: idN(9), Port: 7009, Left: 1, NoCompact: true})
	if err != nil || len(resp.Peers) != 3 {
		t.Errorf("non-compact: %+v, %v", resp, err)
	}
	// Refusal.
	_, err = c.Announce(ctx, announceURL, tracker.AnnounceRequest{InfoHash: untracked, PeerID: idN(1), Port: 7000})
	var fe *tracker.FailureError
	if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "torrent not tracked") {
		t.Errorf("untracked: %v", err)
	}
	// Scrape.
	sr, err := c.Scrape(ctx, announceURL, []metainfo.Hash{ih, untracked})
	if err != nil {
		t.Fatal(err)
	}
	if got := sr[ih]; got != (tracker.ScrapeResponse{Complete: 1, Incomplete: 3}) {
		t.Errorf("scrape %+v", sr)
	}
	if _, ok := sr[untracked]; ok {
		t.Error("untracked hash scraped")
	}
	// Stopped.
	if _, err := c.Announce(ctx, announceURL, tracker.AnnounceRequest{InfoHash: ih, PeerID: idN(9), Port: 7009, Left: 1, Event: tracker.Stopped}); err != nil {
		t.Error(err)
	}
	if sr, _ := c.Scrape(ctx, announceURL, []metainfo.Hash{ih}); sr[ih].Incomplete != 2 {
		t.Errorf("after stop: %+v", sr[ih])
	}
	srv.CloseClientConnections()
}

// bodyWriter is a ResponseWriter that keeps the body only.
type bodyWriter struct {
	h    http.Header
	body []byte
}

func (w *bodyWriter) Header() http.Header { return w.h }
func (w *bodyWriter) Write(b []byte) (int, error) {
	w.body = append(w.body, b...)
	return len(b), nil
}
func (w *bodyWriter) WriteHeader(int) {}

// nullWriter is a ResponseWriter that keeps nothing, to measure the
// handler's own allocations.
type nullWriter struct{ h http.Header }

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nullWriter) WriteHeader(int)             {}

func TestAnnounceAllocs(t *testing.T) {
	h := New(Config{})
	ih := hashN(1)
	for i := range 1000 {
		do(t, h, fmt.Sprintf("10.0.%d.%d:1", i>>8, i&255), "/announce?"+query(ih, idN(i), 6881))
	}
	r := httptest.NewRequest(http.MethodGet, "/announce?"+query(ih, idN(5), 6881, "compact=1", "numwant=50", "left=10"), nil)
	r.RemoteAddr = "10.0.0.5:1"
	w := &nullWriter{h: http.Header{"Content-Type": nil}}
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("%v allocations per announce, want 0", n)
	}
}
