package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// fakePeer is a scripted peer, written with the wire codec, that listens on
// loopback and answers one torrent.
type fakePeer struct {
	t        testing.TB
	f        *fixture
	ln       net.Listener
	wg       sync.WaitGroup
	conns    atomic.Int32                                       // connections accepted
	served   atomic.Int64                                       // blocks sent
	behave   func(w *bufio.Writer, m *wire.Message, f *fixture) // answers one request
	greeting func(w *bufio.Writer, f *fixture)                  // what it sends after the handshake
}

func startFakePeer(t testing.TB, f *fixture, greeting func(*bufio.Writer, *fixture), behave func(*bufio.Writer, *wire.Message, *fixture)) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePeer{t: t, f: f, ln: ln, behave: behave, greeting: greeting}
	fp.wg.Go(fp.accept)
	t.Cleanup(func() {
		ln.Close()
		fp.wg.Wait()
	})
	return fp
}

func (fp *fakePeer) addr() netip.AddrPort { return netip.MustParseAddrPort(fp.ln.Addr().String()) }

func (fp *fakePeer) accept() {
	acceptAll(fp.ln, func(c net.Conn) {
		fp.conns.Add(1)
		fp.serve(c)
	})
}

// answerHandshake reads the BitTorrent handshake on c (through br) and
// answers it for the same torrent, with a fresh peer id that starts with
// prefix (8 bytes), supporting BEP 10 when extended.
func answerHandshake(c net.Conn, br *bufio.Reader, prefix string, extended bool) error {
	hs, err := wire.ReadHandshake(br)
	if err != nil {
		return err
	}
	reply := wire.Handshake{InfoHash: hs.InfoHash}
	copy(reply.PeerID[:], prefix)
	rand.Read(reply.PeerID[8:])
	reply.SetExtended(extended)
	return wire.WriteHandshake(c, reply)
}

// acceptAll runs handle on every connection ln accepts, each on its own
// goroutine, until ln is closed; it then closes the connections still
// open and waits for their handlers.
func acceptAll(ln net.Listener, handle func(net.Conn)) {
	var conns sync.WaitGroup
	defer conns.Wait()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		open = append(open, c)
		conns.Go(func() {
			defer c.Close()
			handle(c)
		})
	}
}

func (fp *fakePeer) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	if answerHandshake(c, br, "-FAKE01-", false) != nil {
		return
	}
	w := bufio.NewWriter(c)
	fp.greeting(w, fp.f)
	w.Flush()
	dec := wire.NewDecoder(br, wire.Limits{})
	var m wire.Message
	for {
		if err := dec.Decode(&m); err != nil {
			return
		}
		if m.ID == wire.Request {
			fp.behave(w, &m, fp.f)
			fp.served.Add(1)
			if w.Flush() != nil {
				return
			}
		}
	}
}

// seedGreeting announces every piece and unchokes.
func seedGreeting(w *bufio.Writer, f *fixture) {
	n := f.meta.Info.NumPieces()
	bf := make([]byte, (n+7)/8)
	for i := range n {
		bf[i/8] |= 0x80 >> (i % 8)
	}
	w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Bitfield, Bitfield: bf}))
	w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Unchoke}))
}

func blockOf(f *fixture, m *wire.Message) []byte {
	off := int64(m.Index)*f.meta.Info.PieceLength + int64(m.Begin)
	return append([]byte(nil), f.content[off:off+int64(m.Length)]...)
}

// corruptOneBlockPerPiece serves every block, but the first block of each
// piece has one byte flipped.
func corruptOneBlockPerPiece(w *bufio.Writer, m *wire.Message, f *fixture) {
	b := blockOf(f, m)
	if m.Begin == 0 {
		b[len(b)/2] ^= 0xff
	}
	w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Piece, Index: m.Index, Begin: m.Begin, Block: b}))
}

// TestCorruptPeerIsBanned: a peer that serves corrupt blocks makes pieces
// fail; the download still completes from an honest seed with identical
// bytes, only verified bytes reach the reader, and the liar is banned.
func TestCorruptPeerIsBanned(t *testing.T) {
	f := newFixture(t, 4<<20, 64<<10)
	evil := startFakePeer(t, f, seedGreeting, corruptOneBlockPerPiece)
	honest, _ := f.seed(t)
	leech := newClient(t, Config{})
	st := NewMemoryStorage(&f.meta.Info)
	tor, err := leech.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	// The liar first, alone, so it is sure to be asked for pieces.
	tor.AddPeers(evil.addr())
	deadline := time.Now().Add(10 * time.Second)
	for tor.Stats().HashFailures == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tor.AddPeers(honest.Addr().(*net.TCPAddr).AddrPort())
	streamEquals(t, t.Context(), tor, f.content)
	waitComplete(t, tor, 30*time.Second)
	s := tor.Stats()
	if s.HashFailures == 0 || s.Bans == 0 {
		t.Fatalf("hash failures %d, bans %d: the corrupt peer was not caught", s.HashFailures, s.Bans)
	}
	for _, p := range s.Peers {
		if p.Addr == evil.addr() {
			t.Fatal("the banned peer is still connected")
		}
	}
	// It is never dialled again.
	before := evil.conns.Load()
	tor.AddPeers(evil.addr())
	time.Sleep(200 * time.Millisecond)
	if evil.conns.Load() != before {
		t.Fatal("a banned peer was dialled again")
	}
}

// TestHostilePeers runs peers that break the protocol in ways the engine
// must survive: each is dropped, and the download completes from an honest
// seed.
func TestHostilePeers(t *testing.T) {
	tests := []struct {
		name     string
		greeting func(*bufio.Writer, *fixture)
		behave   func(*bufio.Writer, *wire.Message, *fixture)
	}{
		{"huge length prefix", func(w *bufio.Writer, f *fixture) {
			w.Write([]byte{0xff, 0xff, 0xff, 0xff, 7})
		}, nil},
		{"bitfield of the wrong length", func(w *bufio.Writer, f *fixture) {
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Bitfield, Bitfield: []byte{0xff}}))
		}, nil},
		{"have past the last piece", func(w *bufio.Writer, f *fixture) {
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Have, Index: 1 << 20}))
		}, nil},
		{"have-all without the fast extension", func(w *bufio.Writer, f *fixture) {
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.HaveAll}))
		}, nil},
		{"bitfield after have", func(w *bufio.Writer, f *fixture) {
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Have, Index: 0}))
			seedGreeting(w, f)
		}, nil},
		{"unrequested and overrunning blocks", seedGreeting, func(w *bufio.Writer, m *wire.Message, f *fixture) {
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Piece, Index: m.Index, Begin: m.Begin + 1, Block: blockOf(f, m)}))
			w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Piece, Index: 0, Begin: 0, Block: make([]byte, 16)}))
		}},
		{"never answers", seedGreeting, func(*bufio.Writer, *wire.Message, *fixture) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 1<<20, 32<<10)
			behave := tt.behave
			if behave == nil {
				behave = corruptOneBlockPerPiece
			}
			bad := startFakePeer(t, f, tt.greeting, behave)
			honest, _ := f.seed(t)
			leech := newClient(t, Config{RequestTimeout: 2 * time.Second})
			st := NewMemoryStorage(&f.meta.Info)
			tor, err := leech.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
			if err != nil {
				t.Fatal(err)
			}
			tor.AddPeers(bad.addr(), honest.Addr().(*net.TCPAddr).AddrPort())
			waitComplete(t, tor, 30*time.Second)
			got := make([]byte, len(f.content))
			if _, err := st.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.content) {
				t.Fatal("downloaded bytes differ")
			}
			if bad.conns.Load() == 0 {
				t.Fatal("the hostile peer was never contacted")
			}
		})
	}
}

// corruptEveryBlock serves every block with one byte flipped.
func corruptEveryBlock(w *bufio.Writer, m *wire.Message, f *fixture) {
	b := blockOf(f, m)
	b[0] ^= 0xff
	w.Write(wire.AppendMessage(nil, &wire.Message{ID: wire.Piece, Index: m.Index, Begin: m.Begin, Block: b}))
}

// TestSybilSwarm (HARDENING 31): every peer serves corrupt data, and only
// the origin, as web seed, has the file. The swarm is given up on: the
// liars are banned, the reader gets the right bytes from the origin, and
// the origin serves about the file, not the file again per failed piece.
// The stall budget is an hour, so only that can bring the web seed in:
// each failed piece is fetched from it (which convicts liars that shared
// a piece), and once every liar is banned, no peer is waited for.
func TestSybilSwarm(t *testing.T) {
	for _, pieceLen := range []int64{64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(pieceLen>>10, "KiB"), func(t *testing.T) {
			f := newFixture(t, 8<<20, pieceLen)
			origin := serve(t, contentHandler("f", f.content))
			leech := newClient(t, Config{})
			st := NewMemoryStorage(&f.meta.Info)
			tor, err := leech.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true, StallBudget: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			var evil []*fakePeer
			for range 8 {
				p := startFakePeer(t, f, seedGreeting, corruptEveryBlock)
				evil = append(evil, p)
				tor.AddPeers(p.addr())
			}
			if err := tor.AddWebSeed(WebSeed{URL: origin.URL + "/f", Origin: true, File: 0}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			streamEquals(t, ctx, tor, f.content)
			waitComplete(t, tor, 10*time.Second)
			s := tor.Stats()
			t.Logf("hash failures %d, bans %d, from web seeds %d, from peers %d", s.HashFailures, s.Bans, s.FromWebSeeds, s.Downloaded)
			if s.HashFailures == 0 {
				t.Fatal("no piece failed: the liars were never asked")
			}
			// Before failed pieces went to the web seed, liars that
			// shared pieces kept them failing: 36 times the file came
			// from peers with 1 MiB pieces.
			if s.Downloaded > 2*int64(len(f.content)) {
				t.Fatalf("%d bytes taken from liars for a %d-byte file", s.Downloaded, len(f.content))
			}
			if s.FromWebSeeds != int64(len(f.content)) {
				t.Fatalf("%d bytes from the origin, want the file's %d: a corrupt piece was kept", s.FromWebSeeds, len(f.content))
			}
			origin.settle(t)
			if sent := origin.sent.Load(); sent > int64(len(f.content))*3/2 {
				t.Fatalf("the origin sent %d bytes for a %d-byte file", sent, len(f.content))
			}
			for _, p := range s.Peers {
				for _, e := range evil {
					if p.Addr == e.addr() {
						t.Fatalf("liar %v still connected", p.Addr)
					}
				}
			}
		})
	}
}
