package server

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// benchHandler is a handler whose swarm holds 1000 peers.
func benchHandler(b *testing.B) *Handler {
	h := New(Config{Store: NewMemoryStore(MemoryConfig{Rand: rand.NewPCG(1, 2)})})
	ih := hashN(1)
	for i := range 1000 {
		r := httptest.NewRequest(http.MethodGet, "/announce?"+query(ih, idN(i), 6881, "left=10"), nil)
		r.RemoteAddr = fmt.Sprintf("10.0.%d.%d:1", i>>8, i&255)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	if st := h.Stats(); st.Peers != 1000 {
		b.Fatalf("stats %+v", st)
	}
	return h
}

// BenchmarkAnnounce is one compact announce with numwant=50 into a swarm
// of 1000, through ServeHTTP with a recorder that is reset each time.
func BenchmarkAnnounce(b *testing.B) {
	h := benchHandler(b)
	r := httptest.NewRequest(http.MethodGet, "/announce?"+query(hashN(1), idN(5), 6881, "uploaded=0", "downloaded=0", "left=10", "compact=1", "numwant=50", "no_peer_id=1"), nil)
	r.RemoteAddr = "10.0.0.5:1"
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		w.Body.Reset()
		h.ServeHTTP(w, r)
	}
	if w.Body.Len() < 300 {
		b.Fatalf("body %q", w.Body.Bytes())
	}
}

// BenchmarkAnnounceHandlerOnly is BenchmarkAnnounce with a writer that
// keeps nothing: the handler's own cost.
func BenchmarkAnnounceHandlerOnly(b *testing.B) {
	h := benchHandler(b)
	r := httptest.NewRequest(http.MethodGet, "/announce?"+query(hashN(1), idN(5), 6881, "left=10", "compact=1", "numwant=50"), nil)
	r.RemoteAddr = "10.0.0.5:1"
	w := &nullWriter{h: http.Header{"Content-Type": nil}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkAnnounceParallel announces from many peers at once into 64
// swarms, exercising the shard locks.
func BenchmarkAnnounceParallel(b *testing.B) {
	h := New(Config{})
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := int(seq.Add(1))
		w := &nullWriter{h: http.Header{"Content-Type": nil}}
		reqs := make([]*http.Request, 64)
		for i := range reqs {
			reqs[i] = httptest.NewRequest(http.MethodGet, "/announce?"+query(hashN(i), idN(n*100+i), 6881, "left=10", "numwant=50"), nil)
			reqs[i].RemoteAddr = fmt.Sprintf("10.1.%d.%d:1", n&255, i)
		}
		for i := 0; pb.Next(); i++ {
			h.ServeHTTP(w, reqs[i&63])
		}
	})
}

func BenchmarkParseAnnounce(b *testing.B) {
	q := query(hashN(1), idN(1), 6881, "uploaded=0", "downloaded=0", "left=1048576", "corrupt=0", "key=1A2B3C4D", "event=started", "numwant=200", "compact=1", "no_peer_id=1", "supportcrypto=1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAnnounce(q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUDPAnnounce(b *testing.B) {
	h := New(Config{})
	u := h.newUDPSession()
	now := time.Now()
	ih := hashN(1)
	for i := range 1000 {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1)
		u.handle(udpAnn{id: u.connID(p, now.Unix()/60), ih: ih, peer: i, port: 6881}.bytes(), p, now)
	}
	from := netip.MustParseAddrPort("10.0.0.5:1")
	pkt := udpAnn{id: u.connID(from, now.Unix()/60), ih: ih, peer: 5, port: 6881, numWant: 50}.bytes()
	b.ReportAllocs()
	for b.Loop() {
		if r := u.handle(pkt, from, now); len(r) != 20+6*50 {
			b.Fatalf("reply of %d bytes", len(r))
		}
	}
}
