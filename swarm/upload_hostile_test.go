package swarm

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// These tests play a hostile downloader against a real seeding Client: a
// scripted peer that dials the client over loopback, speaks the wire
// protocol through package wire, and makes requests the client must not
// serve (HARDENING 27, 28 and 35).

// rawPeer is a scripted peer connection to a Client, driven step by step
// from the test's goroutine; it starts no goroutines of its own.
type rawPeer struct {
	t       *testing.T
	f       *fixture
	nc      net.Conn
	dec     *wire.Decoder
	m       wire.Message
	addr    netip.AddrPort // ours, as the client sees it
	has     []bool         // what the client announced it has
	choking bool           // what we last told the client: we start choking it
}

// rawDeadline bounds every wait on the client: generous, so that only a
// client that never answers fails on it.
const rawDeadline = 30 * time.Second

// dialRaw connects to c for f's torrent, with or without the fast extension
// (BEP 6), and reads the client's first message: what it has.
func dialRaw(t *testing.T, c *Client, f *fixture, fast bool) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", c.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	hs := wire.Handshake{InfoHash: f.meta.InfoHash}
	hs.SetFast(fast)
	copy(hs.PeerID[:], "-HOSTILE-")
	rand.Read(hs.PeerID[9:])
	if err := wire.WriteHandshake(nc, hs); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(rawDeadline))
	br := bufio.NewReader(nc)
	remote, err := wire.ReadHandshake(br)
	if err != nil {
		t.Fatalf("client's handshake: %v", err)
	}
	if remote.InfoHash != f.meta.InfoHash || !remote.SupportsFast() {
		t.Fatalf("client's handshake %+v", remote)
	}
	n := f.meta.Info.NumPieces()
	rp := &rawPeer{
		t:       t,
		f:       f,
		nc:      nc,
		dec:     wire.NewDecoder(br, wire.Limits{NumPieces: n}),
		addr:    netip.MustParseAddrPort(nc.LocalAddr().String()),
		has:     make([]bool, n),
		choking: true,
	}
	m := rp.must()
	switch {
	case m.ID == wire.HaveAll && fast:
		for i := range rp.has {
			rp.has[i] = true
		}
	case m.ID == wire.Bitfield:
		for i := range rp.has {
			rp.has[i] = m.Bitfield[i/8]&(0x80>>(i%8)) != 0
		}
	default:
		t.Fatalf("client opened with %v (fast %v)", m.ID, fast)
	}
	if fast {
		rp.send(wire.Message{ID: wire.HaveNone})
	}
	return rp
}

func (rp *rawPeer) send(ms ...wire.Message) {
	rp.t.Helper()
	if err := rp.write(ms...); err != nil {
		rp.t.Fatalf("sending to the client: %v", err)
	}
}

func (rp *rawPeer) write(ms ...wire.Message) error {
	var buf []byte
	for i := range ms {
		buf = wire.AppendMessage(buf, &ms[i])
	}
	_, err := rp.nc.Write(buf)
	return err
}

// read returns the client's next message other than a keep-alive; it is
// valid until the next read.
func (rp *rawPeer) read() (*wire.Message, error) {
	for {
		rp.nc.SetReadDeadline(time.Now().Add(rawDeadline))
		if err := rp.dec.Decode(&rp.m); err != nil {
			return nil, err
		}
		if !rp.m.Keepalive {
			return &rp.m, nil
		}
	}
}

func (rp *rawPeer) must() *wire.Message {
	rp.t.Helper()
	m, err := rp.read()
	if err != nil {
		rp.t.Fatalf("reading from the client: %v", err)
	}
	return m
}

// unchoked declares interest and reads up to the client's unchoke; no
// block and no reject may come before it.
func (rp *rawPeer) unchoked() {
	rp.t.Helper()
	rp.send(wire.Message{ID: wire.Interested})
	for {
		switch m := rp.must(); m.ID {
		case wire.Unchoke:
			return
		case wire.Piece, wire.Reject:
			rp.t.Fatalf("got %v (%d, %d, %d) before the unchoke", m.ID, m.Index, m.Begin, len(m.Block)+int(m.Length))
		}
	}
}

// sync makes sure the client has handled everything sent so far, and that
// this connection is still up: it flips our choke state and waits for the
// client's stats to show it. Messages on a connection are handled in order.
func (rp *rawPeer) sync(tor *Torrent) {
	rp.t.Helper()
	rp.choking = !rp.choking
	id := wire.Unchoke
	if rp.choking {
		id = wire.Choke
	}
	rp.send(wire.Message{ID: id})
	deadline := time.Now().Add(rawDeadline)
	for {
		ps, ok := peerStatsOf(tor, rp.addr)
		if !ok {
			rp.t.Fatal("the client dropped the connection")
		}
		if ps.Choked == rp.choking {
			return
		}
		if time.Now().After(deadline) {
			rp.t.Fatal("the client never handled our messages")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkBlock fails unless m is the piece message answering want, with the
// torrent's bytes.
func (rp *rawPeer) checkBlock(m *wire.Message, want wire.Message) {
	rp.t.Helper()
	if m.ID != wire.Piece || m.Index != want.Index || m.Begin != want.Begin || len(m.Block) != int(want.Length) {
		rp.t.Fatalf("got %v (%d, %d, %d bytes), want the block (%d, %d, %d)",
			m.ID, m.Index, m.Begin, len(m.Block), want.Index, want.Begin, want.Length)
	}
	rp.checkBytes(m)
}

// checkBytes fails unless the block of piece message m is the torrent's.
func (rp *rawPeer) checkBytes(m *wire.Message) {
	rp.t.Helper()
	off := int64(m.Index)*rp.f.meta.Info.PieceLength + int64(m.Begin)
	if end := off + int64(len(m.Block)); end > int64(len(rp.f.content)) || !bytes.Equal(m.Block, rp.f.content[off:end]) {
		rp.t.Fatalf("block (%d, %d, %d bytes) is not the torrent's data", m.Index, m.Begin, len(m.Block))
	}
}

// checkReject fails unless m rejects want.
func (rp *rawPeer) checkReject(m *wire.Message, want wire.Message) {
	rp.t.Helper()
	if m.ID != wire.Reject || m.Index != want.Index || m.Begin != want.Begin || m.Length != want.Length {
		rp.t.Fatalf("got %v (%d, %d, %d), want a reject of (%d, %d, %d)",
			m.ID, m.Index, m.Begin, m.Length, want.Index, want.Begin, want.Length)
	}
}

// expectClosed reads until the client ends the connection, failing on any
// block; it returns the rejects that came before the end.
func (rp *rawPeer) expectClosed() (rejects int) {
	rp.t.Helper()
	for {
		m, err := rp.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				rp.t.Fatal("the client kept the connection open")
			}
			return rejects
		}
		switch m.ID {
		case wire.Piece:
			rp.t.Fatalf("the client sent block (%d, %d, %d bytes)", m.Index, m.Begin, len(m.Block))
		case wire.Reject:
			rejects++
		}
	}
}

func request(index, begin, length uint32) wire.Message {
	return wire.Message{ID: wire.Request, Index: index, Begin: begin, Length: length}
}

func peerStatsOf(tor *Torrent, addr netip.AddrPort) (PeerStats, bool) {
	for _, ps := range tor.Stats().Peers {
		if ps.Addr == addr {
			return ps, true
		}
	}
	return PeerStats{}, false
}

// waitGone waits for tor to drop the peer at addr.
func waitGone(t *testing.T, tor *Torrent, addr netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(rawDeadline)
	for {
		if _, ok := peerStatsOf(tor, addr); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the client still lists the peer it should have dropped")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// uploadedTo reads the block bytes the client counts as sent to rp.
func uploadedTo(t *testing.T, tor *Torrent, rp *rawPeer) int64 {
	t.Helper()
	ps, ok := peerStatsOf(tor, rp.addr)
	if !ok {
		t.Fatal("the client dropped the connection")
	}
	return ps.Uploaded
}

// leechFrom downloads f from the client at addr and checks its bytes.
func leechFrom(t *testing.T, f *fixture, addr netip.AddrPort) {
	t.Helper()
	c := newClient(t, Config{})
	st := NewMemoryStorage(&f.meta.Info)
	tor, err := c.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	tor.AddPeers(addr)
	waitComplete(t, tor, 60*time.Second)
	got := make([]byte, len(f.content))
	if _, err := st.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.content) {
		t.Fatal("the well-behaved leech downloaded bytes that differ")
	}
}

func forFastAndPlain(t *testing.T, run func(t *testing.T, fast bool)) {
	t.Run("fast", func(t *testing.T) { run(t, true) })
	t.Run("plain", func(t *testing.T) { run(t, false) })
}

// TestUploadRequestsWhileChoked: requests from a peer we choke are rejected
// (BEP 6) or ignored, and are not served once the peer is unchoked either.
func TestUploadRequestsWhileChoked(t *testing.T) {
	forFastAndPlain(t, func(t *testing.T, fast bool) {
		f := newFixture(t, 512<<10, 64<<10)
		c := newClient(t, Config{})
		tor := f.seedOn(t, c, TorrentOptions{})
		rp := dialRaw(t, c, f, fast)
		var reqs []wire.Message
		for i := range 20 {
			reqs = append(reqs, request(uint32(i%8), uint32(i/8)*blockSize, blockSize))
		}
		rp.send(reqs...)
		if fast {
			for _, r := range reqs {
				rp.checkReject(rp.must(), r)
			}
		}
		rp.unchoked()
		// Only a request made while unchoked is served: its block is the
		// first to come.
		want := request(5, 3*blockSize, blockSize)
		rp.send(want)
		rp.checkBlock(rp.must(), want)
		if n := uploadedTo(t, tor, rp); n != blockSize {
			t.Fatalf("the client sent %d block bytes, want one block", n)
		}
	})
}

// partialStorage holds every piece of f verified but missing, whose bytes
// are stored, altered and unverified: data that must never go out. With
// missing < 0 it holds all of f.
func partialStorage(t *testing.T, f *fixture, missing int) *MemoryStorage {
	t.Helper()
	info := &f.meta.Info
	st := NewMemoryStorage(info)
	for i := range info.NumPieces() {
		off := int64(i) * info.PieceLength
		data := bytes.Clone(f.content[off : off+info.PieceLen(i)])
		if i == missing {
			for j := range data {
				data[j] ^= 0x5a
			}
		}
		if err := st.WritePiece(i, data); err != nil {
			t.Fatal(err)
		}
		if i != missing {
			if err := st.MarkVerified(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// TestUploadRequestForMissingPiece: a partial seed rejects (BEP 6) or
// ignores requests for a piece it lacks, even though unverified bytes of
// that piece sit in its storage, and still serves the pieces it has.
func TestUploadRequestForMissingPiece(t *testing.T) {
	forFastAndPlain(t, func(t *testing.T, fast bool) {
		const missing = 2
		f := newFixture(t, 512<<10, 64<<10)
		c := newClient(t, Config{})
		tor, err := c.AddTorrent(f.meta, partialStorage(t, f, missing), TorrentOptions{NoTrackers: true})
		if err != nil {
			t.Fatal(err)
		}
		rp := dialRaw(t, c, f, fast)
		for i, h := range rp.has {
			if h != (i != missing) {
				t.Fatalf("the client announced piece %d as %v", i, h)
			}
		}
		rp.unchoked()
		absent := []wire.Message{
			request(missing, 0, blockSize),
			request(missing, blockSize, blockSize),
			request(missing, 100, 1),
		}
		present := request(missing+1, 0, blockSize)
		rp.send(append(absent, present)...)
		// Requests are answered in order: the rejects, then the block.
		if fast {
			for _, r := range absent {
				rp.checkReject(rp.must(), r)
			}
		}
		rp.checkBlock(rp.must(), present)
		if n := uploadedTo(t, tor, rp); n != blockSize {
			t.Fatalf("the client sent %d block bytes, want one block", n)
		}
		if tor.HavePiece(missing) {
			t.Fatal("the unverified piece became verified")
		}
	})
}

// TestUploadBadRequestSpans: a request whose span is not inside a piece
// (zero or oversized length, past the piece's end, past the last piece, a
// begin that wraps) ends the connection before anything is read from
// storage; a well-behaved peer is served afterwards, the short last piece
// whole.
func TestUploadBadRequestSpans(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 16*pieceLen+5000, pieceLen) // 17 pieces, the last 5000 bytes
	c := newClient(t, Config{})
	tor := f.seedOn(t, c, TorrentOptions{})
	for _, tc := range []struct {
		name string
		req  wire.Message
	}{
		{"zero length", request(0, 0, 0)},
		{"longer than a block", request(0, 0, blockSize+1)},
		{"far longer than a block", request(0, 0, 1<<20)},
		{"past the end of the piece", request(0, pieceLen-blockSize/2, blockSize)},
		{"past the end of the short last piece", request(16, 4096, 1024)},
		{"piece past the last", request(17, 0, blockSize)},
		{"huge piece index", request(1<<31, 0, blockSize)},
		{"begin plus length wraps", request(0, 1<<32-16, 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := dialRaw(t, c, f, true)
			rp.unchoked()
			rp.send(tc.req)
			if n := rp.expectClosed(); n != 0 {
				t.Fatalf("got %d rejects before the disconnect", n)
			}
			waitGone(t, tor, rp.addr)
		})
	}
	rp := dialRaw(t, c, f, true)
	rp.unchoked()
	last := request(16, 0, 5000)
	rp.send(last)
	rp.checkBlock(rp.must(), last)
}

// gatedStorage holds its one read of n bytes at off until open is called,
// which stalls the writer of the connection that asked for it. The hold
// ends by itself after rawDeadline: should the client drop that
// connection, it waits for the writer, and the test must fail, not hang.
type gatedStorage struct {
	*MemoryStorage
	off     int64
	n       int
	entered chan struct{} // the held read has begun
	release chan struct{}
	once    sync.Once
}

func (g *gatedStorage) ReadAt(p []byte, off int64) (int, error) {
	if off == g.off && len(p) == g.n {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		hold := time.NewTimer(rawDeadline)
		defer hold.Stop()
		select {
		case <-g.release:
		case <-hold.C:
		}
	}
	return g.MemoryStorage.ReadAt(p, off)
}

func (g *gatedStorage) open() { g.once.Do(func() { close(g.release) }) }

// heldWriter is a seeding client whose writer to the raw peer rp is held
// inside the block of first, a 5-byte read at byte 3 of piece 1, so that
// everything rp asks next queues until gs.open.
type heldWriter struct {
	f     *fixture
	c     *Client
	tor   *Torrent
	gs    *gatedStorage
	rp    *rawPeer
	first wire.Message
}

// holdWriter starts a heldWriter, unchoked, with or without the fast
// extension, and returns once the writer is inside first's block.
func holdWriter(t *testing.T, fast bool) *heldWriter {
	t.Helper()
	const pieceLen = 64 << 10
	h := &heldWriter{f: newFixture(t, 1<<20, pieceLen), c: newClient(t, Config{}), first: request(1, 3, 5)}
	ms := NewMemoryStorage(&h.f.meta.Info)
	if err := ms.Fill(bytes.NewReader(h.f.content)); err != nil {
		t.Fatal(err)
	}
	h.gs = &gatedStorage{MemoryStorage: ms, off: pieceLen + 3, n: 5, entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(h.gs.open) // before the client closes: its writer waits on the gate
	var err error
	if h.tor, err = h.c.AddTorrent(h.f.meta, h.gs, TorrentOptions{NoTrackers: true}); err != nil {
		t.Fatal(err)
	}
	h.rp = dialRaw(t, h.c, h.f, fast)
	h.rp.unchoked()
	h.rp.send(h.first)
	select {
	case <-h.gs.entered:
	case <-time.After(rawDeadline):
		t.Fatal("the first request was never served")
	}
	return h
}

// TestUploadRequestFloodIsCapped: while the client's writer to a peer is
// stalled, the peer's requests queue up to the cap (2000); the ones past it
// are rejected (BEP 6) or ignored, never served. Just short of the invalid
// limit the peer stays connected and is served again; a well-behaved leech
// downloads the whole torrent meanwhile.
func TestUploadRequestFloodIsCapped(t *testing.T) {
	forFastAndPlain(t, func(t *testing.T, fast bool) {
		h := holdWriter(t, fast)
		f, c, tor, gs, rp, first := h.f, h.c, h.tor, h.gs, h.rp, h.first
		// The writer is held inside the first block; everything now queues.
		var flood []wire.Message
		for k := range maxQueuedUploads + maxInvalid {
			flood = append(flood, request(uint32(k%16), uint32(k/16%64)*1024, 1024))
		}
		rp.send(flood...)
		rp.sync(tor)

		leechFrom(t, f, addrOf(c))

		gs.open()
		served := append([]wire.Message{first}, flood[:maxQueuedUploads]...)
		refused := flood[maxQueuedUploads:]
		for len(served) > 0 || (fast && len(refused) > 0) {
			switch m := rp.must(); m.ID {
			case wire.Piece:
				if len(served) == 0 {
					t.Fatalf("block (%d, %d) past the queue cap was served", m.Index, m.Begin)
				}
				rp.checkBlock(m, served[0])
				served = served[1:]
			case wire.Reject:
				if !fast || len(refused) == 0 {
					t.Fatalf("unexpected reject of (%d, %d, %d)", m.Index, m.Begin, m.Length)
				}
				rp.checkReject(m, refused[0])
				refused = refused[1:]
			case wire.Choke:
				t.Fatal("the flooding peer was choked; its queue was dropped")
			}
		}
		// It is still connected and served; nothing of the refused
		// requests comes before this block.
		again := request(7, 0, blockSize)
		rp.send(again)
		rp.checkBlock(rp.must(), again)
		if got, want := uploadedTo(t, tor, rp), int64(5+maxQueuedUploads*1024+blockSize); got != want {
			t.Fatalf("the client counts %d block bytes sent, want %d", got, want)
		}
	})
}

// TestUploadRequestFloodDisconnects: a peer that sends 10,000 requests and
// reads nothing fills its queue to the cap, and is disconnected once more
// than 300 requests past the cap were refused; another peer is served
// throughout.
func TestUploadRequestFloodDisconnects(t *testing.T) {
	const requests = 10000
	f := newFixture(t, 1<<20, 64<<10)
	c := newClient(t, Config{})
	tor := f.seedOn(t, c, TorrentOptions{})
	good := dialRaw(t, c, f, true)
	good.unchoked()

	rp := dialRaw(t, c, f, true)
	// A small window, so that the client's writer stalls early.
	rp.nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	rp.unchoked()
	var flood []wire.Message
	for k := range requests {
		flood = append(flood, request(uint32(k%16), uint32(k/16%4)*blockSize, blockSize))
	}
	// The client may hang up before it has read every request.
	if err := rp.write(flood...); err != nil {
		t.Logf("sending the flood: %v", err)
	}
	waitGone(t, tor, rp.addr)
	// What the client sent before it hung up is good data, and less than
	// the requests it accepted.
	pieces, rejects := 0, 0
	for {
		m, err := rp.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the client kept the flooding connection open")
			}
			break
		}
		switch m.ID {
		case wire.Piece:
			rp.checkBytes(m)
			pieces++
		case wire.Reject:
			rejects++
		}
	}
	if pieces > requests-maxInvalid-1 || rejects > maxInvalid {
		t.Fatalf("got %d blocks and %d rejects for %d requests", pieces, rejects, requests)
	}
	t.Logf("before the disconnect: %d blocks, %d rejects", pieces, rejects)

	want := request(3, blockSize, blockSize)
	good.send(want)
	good.checkBlock(good.must(), want)
	leechFrom(t, f, addrOf(c))
}

// TestUploadInvalidRequestsDisconnect: a peer may make 300 invalid
// requests (while choked, or for a piece we lack), each rejected (BEP 6) or
// ignored; the 301st ends its connection, and the peers beside it are
// unaffected.
func TestUploadInvalidRequestsDisconnect(t *testing.T) {
	const missing = 5
	for _, kind := range []string{"while choked", "for a missing piece"} {
		t.Run(kind, func(t *testing.T) {
			forFastAndPlain(t, func(t *testing.T, fast bool) {
				f := newFixture(t, 512<<10, 64<<10)
				c := newClient(t, Config{})
				var st Storage = partialStorage(t, f, missing)
				if kind == "while choked" {
					st = partialStorage(t, f, -1)
				}
				tor, err := c.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
				if err != nil {
					t.Fatal(err)
				}
				good := dialRaw(t, c, f, fast)
				good.unchoked()

				rp := dialRaw(t, c, f, fast)
				var reqs []wire.Message
				for k := range maxInvalid {
					i := uint32(k % 8)
					if kind == "for a missing piece" {
						i = missing
					}
					reqs = append(reqs, request(i, uint32(k/8%4)*blockSize, blockSize))
				}
				if kind == "for a missing piece" {
					rp.unchoked()
				}
				rp.send(reqs...)
				if fast {
					for _, r := range reqs {
						rp.checkReject(rp.must(), r)
					}
				}
				rp.sync(tor) // all 300 handled, and still connected
				rp.send(reqs[0])
				if n := rp.expectClosed(); n != 0 {
					t.Fatalf("got %d rejects after the limit", n)
				}
				waitGone(t, tor, rp.addr)

				want := request(6, 2*blockSize, blockSize)
				good.send(want)
				good.checkBlock(good.must(), want)
				if _, ok := peerStatsOf(tor, good.addr); !ok {
					t.Fatal("the well-behaved peer was dropped")
				}
				if kind == "while choked" {
					leechFrom(t, f, addrOf(c))
				}
			})
		})
	}
}

// TestUploadCancelAnswered: with the fast extension every request gets one
// answer (BEP 6): a request cancelled while still queued is rejected, one
// already sent is not answered twice. Without it a cancel is silent.
func TestUploadCancelAnswered(t *testing.T) {
	forFastAndPlain(t, func(t *testing.T, fast bool) {
		h := holdWriter(t, fast)
		tor, gs, rp, first := h.tor, h.gs, h.rp, h.first
		// The writer is held inside the first block: these two queue.
		kept, dropped := request(2, 0, 1024), request(3, 0, 1024)
		rp.send(kept, dropped)
		rp.sync(tor)
		cancel := dropped
		cancel.ID = wire.Cancel
		rp.send(cancel)
		rp.sync(tor)
		gs.open()
		rp.checkBlock(rp.must(), first)
		gotKept, gotReject := false, false
		for !gotKept || fast && !gotReject {
			switch m := rp.must(); m.ID {
			case wire.Piece:
				if m.Index == dropped.Index {
					t.Fatal("the cancelled request was served")
				}
				rp.checkBlock(m, kept)
				gotKept = true
			case wire.Reject:
				if !fast || gotReject {
					t.Fatalf("unexpected reject of (%d, %d, %d)", m.Index, m.Begin, m.Length)
				}
				rp.checkReject(m, dropped)
				gotReject = true
			}
		}
		// Nothing more: a block that follows is the next request's.
		again := request(7, 0, 1024)
		rp.send(again)
		rp.checkBlock(rp.must(), again)
	})
}
