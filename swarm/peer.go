package swarm

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/metadata"
	"github.com/tbproxy/tbproxy/swarm/internal/peerconn"
	"github.com/tbproxy/tbproxy/swarm/internal/pex"
	"github.com/tbproxy/tbproxy/swarm/internal/picker"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

const (
	blockSize = 16 << 10
	// maxQueuedUploads bounds the requests a peer may have waiting with us.
	maxQueuedUploads = 2000
	// maxInvalid is how many invalid requests a peer may make before it is
	// dropped.
	maxInvalid = 300
	// minQueue and maxQueue bound the requests we keep in flight to a peer;
	// between them, the depth follows the peer's delivery rate.
	minQueue = 32
	maxQueue = 1000
	// queueTime is how much of a peer's delivery we keep requested ahead.
	queueTime = time.Second
)

// peer is the run loop's state for one connection.
type peer struct {
	conn *peerconn.Conn // nil for a web seed
	id   int
	addr netip.AddrPort
	web  *webSeed // set when this is a web seed's identity

	amChoking, amInterested     bool
	peerChoking, peerInterested bool
	fast, extended              bool // negotiated in the handshake
	gotFirst                    bool // a message other than an extension handshake has arrived

	inflight     map[picker.Block]time.Time // requests we sent and when
	depth        int                        // requests to keep in flight
	reqq         int                        // the peer's own request queue limit, 0 if unknown
	invalid      int                        // invalid requests so far
	ext          extension.Peer             // the peer's BEP 10 message IDs
	client       string                     // the peer's client name, from BEP 10
	metaRequests int                        // BEP 9 requests it made, against a budget

	rateDown, rateUp float64 // bytes per second, smoothed
	lastDown, lastUp int64   // conn counters at the last tick
	connectedAt      time.Time
	activeAt         time.Time     // last seen interested, either way, or moving a block (Config.InactivityTimeout)
	pieces           int           // pieces it has told us it has
	lastBlock        time.Time     // when it last delivered a block we asked for
	snubbed          bool          // it let a request time out
	offers           map[int]offer // pieces offered while super-seeding; nil otherwise
	encryption       string        // as in PeerStats; fixed at the handshake

	origin     Origin       // how we learned of it
	listenPort uint16       // the port it listens on, from BEP 10 "p"; 0 if unknown
	pexOut     pex.Sender   // what we have told it through ut_pex
	pexIn      pex.Receiver // rate limit on its ut_pex messages
}

// handshaken is a connection whose BitTorrent handshake is done.
type handshaken struct {
	conn     net.Conn
	br       *bufio.Reader
	remote   wire.Handshake
	outgoing bool
	dialed   netip.AddrPort // for outgoing: the address dialled
}

func (t *Torrent) adoptConn(hs *handshaken) {
	if hs.outgoing {
		t.s.dialing--
	}
	addr, _ := netip.ParseAddrPort(hs.conn.RemoteAddr().String())
	reject := ""
	switch {
	case hs.remote.PeerID == t.client.peerID:
		reject = "connected to ourselves"
	case t.s.banned[banKey(addr)]:
		reject = "banned"
	case t.s.peerIDs[hs.remote.PeerID] != 0:
		reject = "already connected to that peer-id"
	case len(t.s.peers) >= t.client.cfg.MaxPeers:
		reject = "peer limit reached"
	case t.client.conns.Load() >= int64(t.client.cfg.MaxConns):
		reject = "the client's connection limit reached"
	case !addr.Addr().IsLoopback() && t.connectedIP(addr.Addr()):
		reject = "already connected to that address"
	}
	if reject != "" {
		t.log.Debug("dropping connection", "addr", addr, "why", reject)
		hs.conn.Close()
		return
	}
	origin := FromIncoming
	if c := t.s.known[hs.dialed]; hs.outgoing && c != nil {
		c.failures = 0 // it answered; redial it soon if it drops
		origin = c.origin
	}
	id := t.s.allocID()
	pc := peerconn.New(hs.conn, hs.br, id, hs.remote, hs.outgoing, peerconn.Config{
		Limits: wire.Limits{
			NumPieces:   t.info.NumPieces(),
			PieceLength: func(i uint32) uint32 { return uint32(t.info.PieceLen(int(i))) },
		},
		IdleTimeout: t.client.cfg.IdleTimeout,
		Fast:        hs.remote.SupportsFast(),
		ReadBlock:   t.readBlock,
		Blocks:      &t.client.blocks,
	})
	p := &peer{
		conn:        pc,
		id:          id,
		addr:        addr,
		amChoking:   true,
		peerChoking: true,
		fast:        hs.remote.SupportsFast(),
		extended:    hs.remote.SupportsExtended(),
		inflight:    map[picker.Block]time.Time{},
		depth:       minQueue,
		connectedAt: t.client.now(),
		activeAt:    t.client.now(),
		encryption:  encryptionOf(hs.conn),
		origin:      origin,
	}
	t.s.peers[id] = p
	t.client.conns.Add(1)
	t.s.peerIDs[hs.remote.PeerID] = id
	t.s.picker.AddPeer(picker.PeerID(id))
	if t.superSeeding() {
		t.superStart(p)
	} else {
		t.sendHave(p)
	}
	if p.extended {
		t.sendExtHandshake(p)
	}
	pc.Start(t.events, t.done)
	t.log.Debug("peer connected", "addr", addr, "outgoing", hs.outgoing)
}

// connectedIP reports a connection from ip already: one per address, so a
// single host cannot take many slots (loopback excepted, where every peer
// shares one address).
func (t *Torrent) connectedIP(ip netip.Addr) bool {
	for _, p := range t.s.peers {
		if p.addr.Addr().Unmap() == ip.Unmap() {
			return true
		}
	}
	return false
}

// sendHave tells a new peer what we have, as compactly as the protocol allows.
func (t *Torrent) sendHave(p *peer) {
	n := t.verified.count()
	switch {
	case p.fast && n == t.info.NumPieces():
		p.conn.Send(wire.Message{ID: wire.HaveAll})
	case p.fast && n == 0:
		p.conn.Send(wire.Message{ID: wire.HaveNone})
	case n > 0:
		p.conn.Send(wire.Message{ID: wire.Bitfield, Bitfield: t.ourWire()})
	}
}

func (t *Torrent) sendExtHandshake(p *peer) {
	m := t.client.ext.Ours()
	if !t.pexEnabled() {
		delete(m, pex.Name) // a private torrent does not even offer it
	}
	payload, err := extension.MarshalHandshake(extension.Handshake{
		M:            m,
		V:            t.client.cfg.ClientName,
		P:            int(t.client.port()),
		Reqq:         maxQueuedUploads,
		MetadataSize: int64(len(t.meta.InfoBytes)),
	})
	if err != nil {
		t.log.Error("encoding extension handshake", "err", err)
		return
	}
	p.conn.Send(wire.Message{ID: wire.Extended, ExtendedID: 0, Payload: payload})
}

// readBlock serves an upload from storage. It runs on a peer's writer
// goroutine; the loop queued the upload only for a verified piece.
func (t *Torrent) readBlock(index, begin uint32, p []byte) error {
	if !t.verified.has(int(index)) {
		return fmt.Errorf("swarm: upload of unverified piece %d", index)
	}
	off := int64(index)*t.info.PieceLength + int64(begin)
	if _, err := t.storage.ReadAt(p, off); err != nil {
		t.reportLost(err)
		return err
	}
	t.uploaded.Add(int64(len(p)))
	return nil
}

// dropPeer disconnects p and returns its requests to the pool.
func (t *Torrent) dropPeer(p *peer, why error) {
	if t.s.peers[p.id] != p {
		return
	}
	delete(t.s.peers, p.id)
	t.client.conns.Add(-1)
	delete(t.s.peerIDs, p.conn.Remote.PeerID)
	t.s.picker.RemovePeer(picker.PeerID(p.id))
	t.s.freeIDs = append(t.s.freeIDs, p.id)
	clear(p.inflight)
	// Close waits for the conn's goroutines; its reader may be blocked
	// handing us an event, which Close's stop channel releases.
	p.conn.Close()
	t.log.Debug("peer dropped", "addr", p.addr, "why", why)
	if errors.Is(why, errBothSeeds) {
		t.markSeed(p)
	}
	t.fillAll()
}

// ban refuses p's address from now on, drops p if it is still connected,
// and throws away every block it gave to a piece still being assembled.
func (t *Torrent) ban(p *peer, why string) {
	key := banKey(p.addr)
	if p.web == nil && !t.s.banned[key] {
		t.s.banned[key] = true
		t.s.stats.bans++
		t.log.Info("banning peer", "addr", p.addr, "why", why)
		// Its addresses are no candidates any more: while they stayed
		// known, the torrent waited for peers that will never be dialled
		// before letting web seeds run free (peersStalled).
		for a := range t.s.known {
			if banKey(a) == key {
				delete(t.s.known, a)
			}
		}
	}
	for i, pb := range t.s.pieces {
		if slices.Contains(pb.senders, p) {
			t.resetPiece(i)
		}
	}
	if p.web != nil {
		t.dropWebSeed(p.web, fmt.Errorf("%w: %s", ErrWrongBytes, why))
		return
	}
	if t.s.peers[p.id] == p {
		t.dropPeer(p, errors.New("banned: "+why))
	}
}

// cancel withdraws a request from the peer.
func (p *peer) cancel(b picker.Block) {
	p.conn.Send(wire.Message{ID: wire.Cancel, Index: uint32(b.Piece), Begin: uint32(b.Begin), Length: uint32(b.Length)})
}

var errProtocol = errors.New("swarm: protocol violation")

func (t *Torrent) onPeerEvent(ev peerconn.Event) {
	p := t.s.peers[ev.Conn.ID]
	if p == nil || p.conn != ev.Conn {
		if ev.BlockBuf != nil {
			t.client.blocks.Put(ev.BlockBuf)
		}
		return // a late event from a dropped peer
	}
	if ev.Err != nil {
		t.dropPeer(p, ev.Err)
		return
	}
	if err := t.onMessage(p, &ev.Msg, ev.BlockBuf); err != nil {
		t.dropPeer(p, err)
	}
}

func (t *Torrent) onMessage(p *peer, m *wire.Message, blockBuf *[]byte) error {
	// A first bitfield or have-none sets the peer's pieces; an extension
	// handshake may come before them (BEP 10 sends it right after ours).
	first := !p.gotFirst
	if m.ID != wire.Extended {
		p.gotFirst = true
	}
	switch m.ID {
	case wire.Choke:
		p.peerChoking = true
		if !p.fast {
			// Without the fast extension a choke discards our requests.
			t.s.picker.Release(picker.PeerID(p.id))
			clear(p.inflight)
			t.fillAll()
		}
	case wire.Unchoke:
		p.peerChoking = false
		t.fill(p)
	case wire.Interested:
		p.peerInterested = true
		t.maybeUnchoke(p)
	case wire.NotInterested:
		p.peerInterested = false
	case wire.Have:
		if !t.s.picker.PeerHas(picker.PeerID(p.id), int(m.Index)) {
			p.pieces++
			t.s.picker.PeerHave(picker.PeerID(p.id), int(m.Index))
		}
		t.superHave(p, int(m.Index))
		t.updateInterest(p)
		t.fill(p)
	case wire.Bitfield:
		bf, err := bitfield.FromWire(m.Bitfield, t.info.NumPieces())
		if err != nil {
			return err
		}
		if first {
			t.s.picker.PeerBitfield(picker.PeerID(p.id), bf)
			p.pieces = bf.Count()
		} else {
			// Some clients (aria2) announce batches of new pieces with a
			// fresh bitfield: take it as haves; it never takes one back.
			for i := bf.NextSet(0); i >= 0; i = bf.NextSet(i + 1) {
				if !t.s.picker.PeerHas(picker.PeerID(p.id), i) {
					p.pieces++
					t.s.picker.PeerHave(picker.PeerID(p.id), i)
				}
			}
		}
		t.updateInterest(p)
		t.fill(p)
	case wire.HaveAll, wire.HaveNone:
		if !p.fast {
			return fmt.Errorf("%w: %v without the fast extension", errProtocol, m.ID)
		}
		switch {
		case m.ID == wire.HaveAll:
			// Late, it means the peer completed (aria2 says so).
			t.s.picker.PeerHaveAll(picker.PeerID(p.id))
			p.pieces = t.info.NumPieces()
		case first:
			t.s.picker.PeerHaveNone(picker.PeerID(p.id))
		}
		t.updateInterest(p)
		t.fill(p)
	case wire.Request:
		return t.onRequest(p, m)
	case wire.Cancel:
		// With the fast extension every request gets one answer: the
		// block, or a reject for one cancelled before it went (BEP 6),
		// which the connection puts in its place.
		p.conn.CancelUpload(m.Index, m.Begin, m.Length)
	case wire.Piece:
		t.onBlock(p, m, blockBuf)
	case wire.Reject:
		if !p.fast {
			return fmt.Errorf("%w: reject without the fast extension", errProtocol)
		}
		b := picker.Block{Piece: int(m.Index), Begin: int(m.Begin), Length: int(m.Length)}
		if _, ok := p.inflight[b]; ok {
			delete(p.inflight, b)
			t.s.picker.Rejected(picker.PeerID(p.id), b)
			t.fill(p)
		}
	case wire.Extended:
		return t.onExtended(p, m)
	default:
		// Port, suggest, allowed-fast and unknown messages are hints we
		// do not act on.
	}
	if t.bothSeeds(p) {
		return errBothSeeds
	}
	return nil
}

var errBothSeeds = errors.New("swarm: both sides are seeds")

// markSeed remembers that the address p listens on is a seed, so that a
// complete torrent stops redialling it only to hang up again.
func (t *Torrent) markSeed(p *peer) {
	addr := p.addr
	if !p.conn.Outgoing {
		if p.listenPort == 0 {
			return
		}
		addr = netip.AddrPortFrom(addr.Addr(), p.listenPort)
	}
	if c := t.s.known[addr]; c != nil {
		c.seed = true
	}
}

// bothSeeds reports a connection with nothing to trade.
func (t *Torrent) bothSeeds(p *peer) bool {
	n := t.info.NumPieces()
	return p.pieces == n && t.verified.count() == n
}

func (t *Torrent) onRequest(p *peer, m *wire.Message) error {
	ok := !p.amChoking && t.verified.has(int(m.Index)) && p.conn.QueuedUploads() < maxQueuedUploads &&
		t.superRequested(p, int(m.Index), m.Length)
	if !ok {
		p.invalid++
		if p.invalid > maxInvalid {
			return fmt.Errorf("%w: more than %d invalid requests", errProtocol, maxInvalid)
		}
		if p.fast {
			p.conn.Send(wire.Message{ID: wire.Reject, Index: m.Index, Begin: m.Begin, Length: m.Length})
		}
		return nil
	}
	p.conn.Upload(m.Index, m.Begin, m.Length)
	return nil
}

func (t *Torrent) onExtended(p *peer, m *wire.Message) error {
	if !p.extended {
		return fmt.Errorf("%w: extended message without the extension protocol", errProtocol)
	}
	if m.ExtendedID == 0 {
		h, err := extension.ParseHandshake(m.Payload, extension.Limits{})
		if err != nil {
			return err
		}
		had := map[string]bool{}
		for name := range t.client.extensions {
			_, had[name] = p.ext.ID(name)
		}
		p.ext.Update(h)
		if h.Reqq > 0 {
			p.reqq = h.Reqq
		}
		p.client = h.V
		if h.P > 0 {
			p.listenPort = uint16(h.P)
		}
		if ip, ok := netip.AddrFromSlice(h.YourIP); ok && !ip.Unmap().IsLoopback() {
			if ip = ip.Unmap(); ip.Is4() {
				t.s.yourIP4 = ip
			} else {
				t.s.yourIP6 = ip
			}
		}
		for name, x := range t.client.extensions {
			if _, ok := p.ext.ID(name); ok && !had[name] {
				x.Added(extPeer{t: t, p: p})
			}
		}
		return nil
	}
	name, ok := t.client.ext.NameOf(m.ExtendedID)
	if !ok {
		return nil // a message we never offered: ignore it
	}
	if name == metadata.Name {
		return t.serveMetadata(p, m.Payload)
	}
	if name == pex.Name {
		t.onPEX(p, m.Payload)
		return nil
	}
	if x := t.client.extensions[name]; x != nil {
		x.Received(extPeer{t: t, p: p}, m.Payload)
	}
	return nil
}

// serveMetadata answers a BEP 9 request for a piece of our info
// dictionary, within a budget per peer.
func (t *Torrent) serveMetadata(p *peer, payload []byte) error {
	msg, err := metadata.Parse(payload)
	if err != nil {
		return err
	}
	if msg.Type != metadata.Request {
		return nil // data we did not ask for
	}
	id, ok := p.ext.ID(metadata.Name)
	if !ok {
		return nil
	}
	p.metaRequests++
	reply := metadata.Serve(t.meta.InfoBytes, msg.Piece)
	if p.metaRequests > 2*metadata.Pieces(int64(len(t.meta.InfoBytes)))+16 {
		reply = metadata.Message{Type: metadata.Reject, Piece: msg.Piece}
	}
	p.conn.Send(wire.Message{ID: wire.Extended, ExtendedID: id, Payload: metadata.Append(nil, reply)})
	return nil
}

// maybeUnchoke unchokes a newly interested peer at once when a slot is
// free, instead of making it wait for the next choke round.
func (t *Torrent) maybeUnchoke(p *peer) {
	if !p.amChoking {
		return
	}
	unchoked := 0
	for _, q := range t.s.peers {
		if !q.amChoking {
			unchoked++
		}
	}
	if unchoked < t.client.cfg.UploadSlots+1 {
		t.setChoke(p, false)
	}
}

func (t *Torrent) setChoke(p *peer, choke bool) {
	if p.amChoking == choke {
		return
	}
	p.amChoking = choke
	if choke {
		dropped := p.conn.CancelAllUploads()
		p.conn.Send(wire.Message{ID: wire.Choke})
		if p.fast {
			// A choke no longer rejects requests by itself (BEP 6): each
			// one that will not be served is rejected, after the choke.
			for _, r := range dropped {
				p.conn.Send(r)
			}
		}
		return
	}
	p.conn.Send(wire.Message{ID: wire.Unchoke})
}

// updateInterest tells p whether we want anything it has.
func (t *Torrent) updateInterest(p *peer) {
	want := t.s.picker.Interesting(picker.PeerID(p.id))
	if want == p.amInterested {
		return
	}
	p.amInterested = want
	if want {
		p.conn.Send(wire.Message{ID: wire.Interested})
	} else {
		p.conn.Send(wire.Message{ID: wire.NotInterested})
	}
}

func (t *Torrent) updateInterestAll() {
	for _, p := range t.s.peers {
		t.updateInterest(p)
	}
}

// fill tops up the requests in flight to p.
func (t *Torrent) fill(p *peer) {
	if p.peerChoking || !p.amInterested {
		return
	}
	room := p.depth - len(p.inflight)
	if room <= 0 {
		return
	}
	now := t.client.now()
	// Fresh pieces only as far as the client's piece memory allows; the
	// rest of the room goes to pieces already started.
	id := picker.PeerID(p.id)
	fresh := min(room, t.memoryRoom())
	t.s.out = t.s.picker.Pick(id, fresh, t.s.out[:0])
	if n := room - len(t.s.out); n > 0 {
		t.s.out = t.s.picker.PickStarted(id, n, t.s.out)
	}
	t.chargeMemory()
	for _, b := range t.s.out {
		p.inflight[b] = now
		p.conn.Send(wire.Message{ID: wire.Request, Index: uint32(b.Piece), Begin: uint32(b.Begin), Length: uint32(b.Length)})
	}
}

// chargeMemory brings the client's count of piece memory up to date with
// this torrent's started pieces (a buffer each, assembling or hashing).
func (t *Torrent) chargeMemory() {
	now := int64(t.s.picker.Started()) * t.info.PieceLength
	t.client.pieceMem.Add(now - t.s.memCharged)
	t.s.memCharged = now
}

// memoryRoom is how many blocks of fresh pieces the torrent may request
// now: the client's free piece memory, and one piece's worth whatever it
// is when the torrent has nothing started, so that none starves.
func (t *Torrent) memoryRoom() int {
	t.chargeMemory()
	free := t.client.cfg.PieceMemory - t.client.pieceMem.Load()
	n := int(max(free, 0) / blockSize)
	if t.s.memCharged == 0 {
		n = max(n, t.s.blocks)
	}
	return n
}

func (t *Torrent) fillAll() {
	for _, p := range t.s.peers {
		t.fill(p)
	}
}

// extPeer is the handle an Extension gets for a peer.
type extPeer struct {
	t *Torrent
	p *peer
}

func (e extPeer) Addr() netip.AddrPort { return e.p.addr }

func (e extPeer) Send(name string, payload []byte) error {
	id, ok := e.p.ext.ID(name)
	if !ok {
		return fmt.Errorf("swarm: peer does not support extension %q", name)
	}
	e.p.conn.Send(wire.Message{ID: wire.Extended, ExtendedID: id, Payload: append([]byte(nil), payload...)})
	return nil
}
