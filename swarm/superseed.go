package swarm

import (
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/picker"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// Super-seeding (BEP 16): a seed that wants its upload to be spent once,
// not once per peer, hides what it has and offers each peer a few pieces
// at a time: the pieces the swarm has least, lowest index first so that
// peers streaming from the start find them in their reading window. A
// peer gets a new offer when it announces a piece it was offered, so the
// other peers must trade among themselves for the pieces it took. An
// offer the peer does not ask for soon stops counting, so a peer that
// wants other parts of the file (or nothing) cannot hold pieces back from
// the rest.
const (
	// superSlots is how many live offers a peer holds at once while it
	// has others to trade with; superAlone while it is the only peer that
	// lacks pieces, when hiding pieces saves nothing and would only slow
	// it down.
	superSlots = 2
	superAlone = 16
	// superFresh is how long an offer nobody asked for stays live.
	superFresh = 500 * time.Millisecond
	// superMaxOffers bounds the offers a peer has not taken up in full;
	// offers it took stay (it may ask for a block again), one per piece
	// at most.
	superMaxOffers = 64
)

// offer is a piece offered to one peer.
type offer struct {
	at     time.Time
	asked  int64 // bytes of the piece the peer requested from us
	length int64 // the piece's length
}

// superSeeding reports whether this torrent hides its pieces: it was
// asked to and has every piece.
func (t *Torrent) superSeeding() bool {
	return t.opts.SuperSeed && t.verified.count() == t.info.NumPieces()
}

// live reports whether an offer still holds one of the peer's slots: it
// is fresh, or the peer is downloading it. Once every block was asked
// for, the slot is free: peers need not announce a piece to a peer that
// announced it first, so the request is the sign that counts.
func (o offer) live(now time.Time) bool {
	if o.asked > 0 {
		return o.asked < o.length
	}
	return now.Sub(o.at) < superFresh
}

// superStart announces no pieces to a new peer, then offers some.
func (t *Torrent) superStart(p *peer) {
	p.offers = map[int]offer{}
	if p.fast {
		p.conn.Send(wire.Message{ID: wire.HaveNone})
	}
	t.superOffer(p)
}

// superOffer fills p's free slots with the pieces the swarm has least.
func (t *Torrent) superOffer(p *peer) {
	if p.offers == nil {
		return
	}
	now := t.client.now()
	liveHere, open := 0, 0
	for _, o := range p.offers {
		if o.live(now) {
			liveHere++
		}
		if o.asked < o.length {
			open++
		}
	}
	n := t.info.NumPieces()
	slots := superSlots
	if t.leeches() <= 1 {
		slots = superAlone
	}
	for liveHere < slots && open < superMaxOffers {
		best, bestScore := -1, 0
		for i := range n {
			if _, ok := p.offers[i]; ok || t.s.picker.PeerHas(picker.PeerID(p.id), i) {
				continue
			}
			score := t.s.picker.Availability(i) + t.liveOffers(i, now)
			if best < 0 || score < bestScore {
				best, bestScore = i, score
				if score == 0 {
					break // nothing beats a piece nobody has or was offered
				}
			}
		}
		if best < 0 {
			return // it has, or was offered, everything
		}
		p.offers[best] = offer{at: now, length: t.info.PieceLen(best)}
		liveHere++
		open++
		p.conn.Send(wire.Message{ID: wire.Have, Index: uint32(best)})
	}
}

// leeches counts the connected peers that lack pieces.
func (t *Torrent) leeches() int {
	n := 0
	for _, q := range t.s.peers {
		if q.pieces < t.info.NumPieces() {
			n++
		}
	}
	return n
}

// liveOffers counts the peers holding an offer of piece i that is live
// or that they took up: a piece one peer is fetching, or fetched and has
// not announced, is not offered to another while pieces nobody was
// offered remain, or the seed would upload it twice.
func (t *Torrent) liveOffers(i int, now time.Time) int {
	n := 0
	for _, q := range t.s.peers {
		if o, ok := q.offers[i]; ok && (o.asked > 0 || o.live(now)) {
			n++
		}
	}
	return n
}

// superRequested reports whether p may download a block of piece i from
// us, and counts it against the offer; the last block frees the slot for
// another offer.
func (t *Torrent) superRequested(p *peer, i int, length uint32) bool {
	if p.offers == nil {
		return true // the peer saw everything we have
	}
	o, ok := p.offers[i]
	if !ok {
		return false
	}
	o.asked += int64(length)
	p.offers[i] = o
	if o.asked >= o.length {
		t.superOffer(p)
	}
	return true
}

// superHave moves p on once it announced a piece: when it was one we
// offered, that offer is done and another takes its slot.
func (t *Torrent) superHave(p *peer, i int) {
	if p.offers == nil {
		return
	}
	delete(p.offers, i)
	t.superOffer(p)
}

// superTick gives peers whose offers went stale new ones.
func (t *Torrent) superTick() {
	for _, p := range t.s.peers {
		t.superOffer(p)
	}
}
