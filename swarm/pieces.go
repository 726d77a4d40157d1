package swarm

import (
	"cmp"
	"crypto/sha1"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/choker"
	"github.com/tbproxy/tbproxy/swarm/internal/picker"
	"github.com/tbproxy/tbproxy/swarm/internal/rank"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// onBlock files a block a peer sent.
func (t *Torrent) onBlock(p *peer, m *wire.Message, buf *[]byte) {
	defer t.client.blocks.Put(buf)
	b := picker.Block{Piece: int(m.Index), Begin: int(m.Begin), Length: len(m.Block)}
	accepted, done, others := t.s.picker.Received(picker.PeerID(p.id), b)
	delete(p.inflight, b)
	if !accepted {
		// Unrequested, a duplicate, or overrunning the piece: the data never
		// goes near a piece being assembled.
		t.s.stats.wasted += int64(b.Length)
		return
	}
	now := t.client.now()
	p.lastBlock = now
	p.snubbed = false
	t.s.lastDL = now
	t.downloaded.Add(int64(b.Length))
	t.cancelOthers(b, others)
	t.fileBlock(p, b, m.Block, done)
	t.fill(p)
}

// cancelOthers withdraws the endgame duplicates of block b, which has
// arrived, from the peers others that still owe it.
func (t *Torrent) cancelOthers(b picker.Block, others []picker.PeerID) {
	for _, id := range others {
		if q := t.s.peers[int(id)]; q != nil {
			delete(q.inflight, b)
			q.cancel(b)
		}
	}
}

// fileBlock copies an accepted block into its piece and, once the piece is
// whole, sends it to be hashed. from is who sent it, for blame.
func (t *Torrent) fileBlock(from *peer, b picker.Block, data []byte, done bool) {
	t.moving(b.Piece)
	pb := t.s.pieces[b.Piece]
	if pb == nil {
		pb = &pieceBuf{
			buf:     t.client.getPiece(int(t.info.PieceLen(b.Piece))),
			senders: make([]*peer, t.s.blocks),
		}
		t.s.pieces[b.Piece] = pb
	}
	copy(pb.buf[b.Begin:], data)
	pb.senders[b.Begin/blockSize] = from
	if done {
		delete(t.s.pieces, b.Piece)
		t.hash(hashJob{t: t, piece: b.Piece, buf: pb.buf}, pb.senders)
	}
}

// moving notes that bytes of piece i arrived, for the readers waiting on
// it (see rescueStalled).
func (t *Torrent) moving(i int) {
	for _, r := range t.s.readers {
		if r.piece == i {
			r.since = t.client.now()
		}
	}
}

// hash queues a whole piece for a worker. senders is kept for smart ban.
func (t *Torrent) hash(j hashJob, senders []*peer) {
	t.s.senders[j.piece] = senders
	t.client.hasher.submit(j)
}

func (t *Torrent) onHashed(res hashResult) {
	defer t.chargeMemory()
	senders := t.s.senders[res.piece]
	delete(t.s.senders, res.piece)
	switch {
	case res.ok && res.err == nil:
		t.smartBan(res.piece, res.buf)
		t.client.putPiece(res.buf)
		t.pieceVerified(res.piece)
	case res.ok:
		// The data was good but storage failed: not the peers' fault.
		// Fetch it again; the error shows in stats and the log.
		t.s.stats.storageErrs++
		t.log.Warn("storing a verified piece failed", "piece", res.piece, "err", res.err)
		t.client.putPiece(res.buf)
		t.s.picker.Failed(res.piece)
		t.fillAll()
	default:
		t.hashFailures.Add(1)
		t.pieceFailed(res.piece, res.buf, senders)
		t.client.putPiece(res.buf)
		t.fillAll()
	}
}

func (t *Torrent) pieceVerified(i int) {
	t.s.picker.Verified(i)
	t.verified.set(i)
	t.notifyVerified()
	n := t.info.NumPieces()
	for _, p := range t.s.peers {
		// A peer that has the piece hears of it too unless it is a seed:
		// a super-seeder (BEP 16) offered it, and moves on to its next
		// offer only when it hears the piece arrived, wherever from.
		if p.pieces < n || !t.s.picker.PeerHas(picker.PeerID(p.id), i) {
			p.conn.Send(wire.Message{ID: wire.Have, Index: uint32(i)})
		}
		t.updateInterest(p)
	}
	if t.verified.count() == n {
		select {
		case <-t.complete: // complete before; a lost piece came back
		default:
			close(t.complete)
			t.log.Info("download complete")
		}
		for _, p := range t.s.peers {
			if t.bothSeeds(p) {
				t.dropPeer(p, errBothSeeds)
			}
		}
	}
}

// pieceFailed returns a piece that failed its hash to the pool and works
// out who lied. A peer that sent every block of a bad piece is banned at
// once; when several peers contributed, each block's hash is remembered
// and compared once a good copy verifies (smart ban). Either way the
// piece is fetched again from a web seed, when one is ready: peers that
// sent a bad piece may be all there is (a Sybil swarm), and the good copy
// is what convicts the liars among several senders. Without it, they
// could keep a piece failing while their blocks look like progress.
func (t *Torrent) pieceFailed(i int, buf []byte, senders []*peer) {
	t.s.picker.Failed(i)
	defer t.rescue(i, 1, true, "fetching a piece that failed its hash from a web seed")
	distinct := map[*peer]bool{}
	for _, p := range senders {
		if p != nil {
			distinct[p] = true
		}
	}
	t.log.Info("piece failed its hash", "piece", i, "peers", len(distinct))
	if len(distinct) == 1 {
		for p := range distinct {
			t.ban(p, "sent a piece that failed its hash")
		}
		return
	}
	for blk, p := range senders {
		if p == nil {
			continue
		}
		lo := blk * blockSize
		hi := min(lo+blockSize, len(buf))
		t.s.suspect[i] = append(t.s.suspect[i], blockRecord{peer: p, block: blk, sum: sha1.Sum(buf[lo:hi])})
	}
}

// smartBan compares the blocks of a piece that failed before with the good
// copy that just verified, and bans whoever sent a block that differs.
func (t *Torrent) smartBan(i int, good []byte) {
	recs := t.s.suspect[i]
	delete(t.s.suspect, i)
	for _, r := range recs {
		lo := r.block * blockSize
		hi := min(lo+blockSize, len(good))
		if sha1.Sum(good[lo:hi]) != r.sum {
			t.ban(r.peer, "sent a corrupt block (smart ban)")
		}
	}
}

// resetPiece forgets every block of a piece being assembled, as when one
// of its senders turned out to lie, and cancels its requests.
func (t *Torrent) resetPiece(i int) {
	if pb := t.s.pieces[i]; pb != nil {
		t.client.putPiece(pb.buf)
		delete(t.s.pieces, i)
	}
	t.s.picker.Failed(i)
	for _, p := range t.s.peers {
		for b := range p.inflight {
			if b.Piece == i {
				delete(p.inflight, b)
				p.cancel(b)
			}
		}
	}
}

// smooth is a rate in bytes per second, smoothed over seconds, after a
// second that moved n bytes. What decays below a byte per second is 0,
// not a tail of ever smaller fractions.
func smooth(rate float64, n int64) float64 {
	const alpha = 0.4 // weight of the newest second
	rate = alpha*float64(n) + (1-alpha)*rate
	if rate < 1 {
		return 0
	}
	return rate
}

// errInactive drops a peer that neither side wanted anything from for
// Config.InactivityTimeout.
var errInactive = errors.New("swarm: neither side interested for the inactivity timeout")

// onTick runs once a second: rates, queue depths, request timeouts,
// inactive peers, the choke round and new connections.
func (t *Torrent) onTick(now time.Time) {
	t.s.rounds++
	timeout := t.client.cfg.RequestTimeout
	fromWeb := t.fromWeb.Load()
	t.s.webRate = smooth(t.s.webRate, fromWeb-t.s.lastFromWeb)
	t.s.lastFromWeb = fromWeb
	var inactive []*peer
	for _, p := range t.s.peers {
		down, up := p.conn.Downloaded.Load(), p.conn.Uploaded.Load()
		if down != p.lastDown || up != p.lastUp || p.amInterested || p.peerInterested {
			p.activeAt = now
		} else if now.Sub(p.activeAt) >= t.client.cfg.InactivityTimeout {
			inactive = append(inactive, p)
		}
		p.rateDown = smooth(p.rateDown, down-p.lastDown)
		p.rateUp = smooth(p.rateUp, up-p.lastUp)
		p.lastDown, p.lastUp = down, up
		p.depth = queueDepth(p)
		var expired []picker.Block
		for b, sent := range p.inflight {
			if now.Sub(sent) > timeout {
				expired = append(expired, b)
			}
		}
		for _, b := range expired {
			delete(p.inflight, b)
			t.s.picker.Rejected(picker.PeerID(p.id), b)
			p.cancel(b)
			p.snubbed = true
		}
	}
	for _, p := range inactive {
		t.dropPeer(p, errInactive)
	}
	if t.s.rounds%int(t.s.choker.Interval()/time.Second) == 0 {
		t.chokeRound(now)
	}
	t.rescueStalled(now)
	if len(t.s.webSeeds) > 0 {
		t.webWake()
	}
	t.superTick()
	t.connectMore(now)
	t.chargeMemory()
	t.fillAll()
	t.sendPEX(now)
}

// rescueStalled hands a web seed the gap any reader has waited on for the
// stall budget: its requests to slow peers are withdrawn and the pieces
// claimed for the seed in one range.
func (t *Torrent) rescueStalled(now time.Time) {
	for _, r := range t.s.readers {
		if t.needless(r.piece) || now.Sub(r.since) < t.stallBudget() {
			continue
		}
		r.since = now
		t.rescue(r.piece, rescueBytes, false, "rescuing a stalled reader from a web seed")
	}
}

// rescueStart races a web seed for the piece a new (or seeking) reader
// starts in, when no connected peer can send it now: at a torrent's start
// the origin answers sooner than trackers, handshakes and unchokes. It
// costs the origin one piece per such reader, and nothing when peers are
// there or the piece is ours.
func (t *Torrent) rescueStart(r *readerState) {
	if t.opts.WebSeedMode == WebSeedRescueOnly || t.needless(r.piece) || t.peerCanSend(r.piece) {
		return
	}
	if job := t.rescue(r.piece, 1, false, "fetching a new reader's first piece from a web seed"); job != nil {
		job.race = true
		t.s.racing++
	}
}

// needless reports a piece no rescue can bring sooner: past the end,
// ours, or whole and waiting for its hash.
func (t *Torrent) needless(i int) bool {
	return i >= t.info.NumPieces() || t.verified.has(i) || t.hashing(i)
}

// peerCanSend reports whether a connected peer that is not choking us has
// piece i.
func (t *Torrent) peerCanSend(i int) bool {
	for _, p := range t.s.peers {
		if !p.peerChoking && t.s.picker.PeerHas(picker.PeerID(p.id), i) {
			return true
		}
	}
	return false
}

// rescue claims for a ready web seed the pieces from first on, up to
// about limit bytes (at least one piece), withdrawing peers' requests for
// them, and queues the range for the seed's workers. solo keeps the
// endgame from sending the claimed blocks to peers as well (ClaimSolo).
// The range ends before a piece the seed is about to deliver already
// (webSeed.soon): asked twice, a seed sends the same bytes twice.
func (t *Torrent) rescue(first int, limit int64, solo bool, why string) *webJob {
	s := t.readyWebSeed(first, t.client.now())
	if s == nil {
		return nil
	}
	job := newWebJob(s, first)
	var size int64
	for i := first; i < t.info.NumPieces() && size < limit && !t.needless(i) && t.covers(s, i) && !s.soon(i); i++ {
		t.withdraw(i)
		if solo {
			t.s.out = t.s.picker.ClaimSolo(picker.PeerID(s.p.id), i, t.s.out[:0])
		} else {
			t.s.out = t.s.picker.Claim(picker.PeerID(s.p.id), i, t.s.out[:0])
		}
		job.add(i)
		size += t.info.PieceLen(i)
	}
	if job.end == job.first {
		return nil
	}
	t.log.Debug(why, "piece", first, "pieces", job.end-job.first)
	t.s.ready = append(t.s.ready, job)
	t.webWake()
	return job
}

// hashing reports whether piece i has all its blocks and waits for (or
// is in) a hash worker: no source can deliver it sooner.
func (t *Torrent) hashing(i int) bool {
	_, ok := t.s.senders[i]
	return ok
}

// readyWebSeed is a web seed that can serve piece i now, and is not about
// to deliver it already.
func (t *Torrent) readyWebSeed(i int, now time.Time) *webSeed {
	for _, s := range t.s.webSeeds {
		if !s.dropped && !now.Before(s.retryAt) && t.covers(s, i) && !s.soon(i) {
			return s
		}
	}
	return nil
}

// withdraw cancels every request for piece i that peers still owe us, so
// that its blocks can be claimed elsewhere.
func (t *Torrent) withdraw(i int) {
	for _, p := range t.s.peers {
		for b := range p.inflight {
			if b.Piece == i {
				delete(p.inflight, b)
				t.s.picker.Rejected(picker.PeerID(p.id), b)
				p.cancel(b)
			}
		}
	}
}

// queueDepth keeps queueTime of a peer's delivery in flight, within the
// peer's own limit.
func queueDepth(p *peer) int {
	d := int(p.rateDown * queueTime.Seconds() / blockSize)
	hi := maxQueue
	if p.reqq > 1 {
		// One short of the peer's stated limit: some (transmission) reject
		// the last slot they advertise.
		hi = min(hi, p.reqq-1)
	}
	return max(min(d, hi), min(minQueue, hi))
}

func (t *Torrent) chokeRound(now time.Time) {
	peers := make([]choker.Peer, 0, len(t.s.peers))
	for _, p := range t.s.peers {
		peers = append(peers, choker.Peer{
			ID:           p.id,
			Interested:   p.peerInterested,
			DownloadRate: p.rateDown,
			UploadRate:   p.rateUp,
			Snubbed:      p.snubbed,
			Choked:       p.amChoking,
			ConnectedAt:  p.connectedAt,
		})
	}
	seeding := t.verified.count() == t.info.NumPieces()
	unchoke := t.s.choker.Round(peers, seeding, now)
	for _, p := range t.s.peers {
		t.setChoke(p, !slices.Contains(unchoke, p.id))
	}
}

// addCandidates remembers addresses to connect to, learned from origin,
// and connects to more peers if there is room.
func (t *Torrent) addCandidates(addrs []netip.AddrPort, origin Origin) {
	for _, a := range addrs {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() || a.Addr().IsMulticast() {
			continue
		}
		if t.client.isSelf(a) || t.s.banned[banKey(a)] {
			continue
		}
		if _, ok := t.s.known[a]; ok || len(t.s.known) >= maxCandidates {
			continue
		}
		t.s.known[a] = &candidate{addr: a, origin: origin}
		switch origin {
		case FromPEX:
			t.s.stats.pexPeers++
		case FromLSD:
			t.s.stats.lsdPeers++
		}
	}
	t.connectMore(t.client.now())
}

// maxCandidates bounds the addresses remembered per torrent.
const maxCandidates = 3000

// connectMore dials known peers while below the connection limit, those
// of highest canonical priority (BEP 40) first.
func (t *Torrent) connectMore(now time.Time) {
	if !t.roomToDial() {
		return
	}
	connected := map[netip.AddrPort]bool{}
	for _, p := range t.s.peers {
		connected[p.addr] = true
	}
	type ranked struct {
		c    *candidate
		prio uint32
	}
	var ready []ranked
	complete := t.verified.count() == t.info.NumPieces()
	for _, c := range t.s.known {
		if c.retryAt.After(now) || connected[c.addr] || (c.seed && complete) {
			continue
		}
		ready = append(ready, ranked{c, rank.Priority(t.ourAddrFor(c.addr), c.addr)})
	}
	slices.SortFunc(ready, func(a, b ranked) int {
		if a.prio != b.prio {
			return cmp.Compare(b.prio, a.prio)
		}
		return a.c.addr.Compare(b.c.addr)
	})
	for _, r := range ready {
		if !t.roomToDial() {
			return
		}
		c := r.c
		c.retryAt = now.Add(min(2*time.Second<<min(c.failures, 10), 5*time.Minute))
		c.failures++
		t.s.dialing++
		addr := c.addr
		t.log.Debug("dialling", "addr", addr, "origin", c.origin)
		t.wg.Go(func() { t.dial(addr) })
	}
}

func (t *Torrent) roomToDial() bool {
	return len(t.s.peers)+t.s.dialing < t.client.cfg.MaxPeers && t.s.dialing < maxDialing &&
		t.client.conns.Load() < int64(t.client.cfg.MaxConns)
}

// ourAddrFor is our address as the peer at a sees it, for BEP 40: on
// loopback the loopback address, otherwise what peers last told us our
// address is (BEP 10 yourip), or the unspecified address of a's family
// while no one has. The port is our listening port.
func (t *Torrent) ourAddrFor(a netip.AddrPort) netip.AddrPort {
	ip := a.Addr().Unmap()
	var ours netip.Addr
	switch {
	case ip.IsLoopback() && ip.Is4():
		ours = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case ip.IsLoopback():
		ours = netip.IPv6Loopback()
	case ip.Is4():
		ours = t.s.yourIP4
		if !ours.IsValid() {
			ours = netip.IPv4Unspecified()
		}
	default:
		ours = t.s.yourIP6
		if !ours.IsValid() {
			ours = netip.IPv6Unspecified()
		}
	}
	return netip.AddrPortFrom(ours, t.client.port())
}

// maxDialing bounds the outgoing connections in progress per torrent.
const maxDialing = 10

// dial connects to addr and does the handshake, then hands the connection
// to the loop. It runs on its own goroutine.
func (t *Torrent) dial(addr netip.AddrPort) {
	hs, err := t.client.dialPeer(t, addr)
	if err != nil {
		t.log.Debug("dial failed", "addr", addr, "err", err)
		hs = nil
	}
	if hs == nil {
		select {
		case t.cmds <- func() { t.s.dialing-- }:
		case <-t.done:
		}
		return
	}
	select {
	case t.adopt <- hs:
	case <-t.done:
		hs.conn.Close()
	}
}
