package picker

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
)

// peer returns the state of a live peer, panicking on an unknown ID.
func (p *Picker) peer(id PeerID) *peer {
	if uint(id) >= uint(len(p.peers)) || !p.peers[id].live {
		panic(fmt.Sprintf("picker: unknown peer %d", id))
	}
	return &p.peers[id]
}

// AddPeer registers a connection that has announced nothing yet. It panics
// if id is negative, too large, or already added.
func (p *Picker) AddPeer(id PeerID) {
	if id < 0 || id > math.MaxInt32 {
		panic(fmt.Sprintf("picker: invalid peer id %d", id))
	}
	for int(id) >= len(p.peers) {
		p.peers = append(p.peers, peer{})
	}
	pr := &p.peers[id]
	if pr.live {
		panic(fmt.Sprintf("picker: peer %d added twice", id))
	}
	pr.has.ClearAll()
	*pr = peer{live: true, has: pr.has}
}

// RemovePeer forgets peer id: its announcements leave the availability
// counts, and every request in flight to it is released as by Release,
// whose result it returns. It panics if id was not added.
func (p *Picker) RemovePeer(id PeerID) (released []Block) {
	pr := p.peer(id)
	released = p.Release(id)
	p.forget(pr)
	pr.live = false
	return released
}

// Release returns every request in flight to peer id to the missing blocks,
// for a choke without BEP 6, and reports them so the engine can forget
// them. A block also in flight to another peer (endgame) stays requested
// there. The peer stays added. The slice is the caller's. It costs
// O(started pieces × blocks per piece / 64 + released). It panics if id was
// not added.
func (p *Picker) Release(id PeerID) (released []Block) {
	pr := p.peer(id)
	pid := int32(id)
	for _, pp := range p.parts {
		if pp.piece < 0 {
			continue
		}
		if pp.owner == pid {
			pp.owner = noPeer
		}
		if pr.inflight == 0 || pp.nRequested == 0 {
			continue
		}
		i := int(pp.piece)
		dropped := false
		for w := range pp.requested {
			word := pp.requested[w]
			for word != 0 {
				k := w<<6 + bits.TrailingZeros64(word)
				word &= word - 1
				if p.dropRequest(pp, k, pid) {
					dropped = true
					released = append(released, Block{Piece: i, Begin: k * p.blockSize, Length: p.blockLen(i, k)})
				}
			}
		}
		if dropped {
			p.afterRelease(pp)
		}
	}
	return released
}

// forget withdraws everything peer pr announced.
func (p *Picker) forget(pr *peer) {
	if pr.seed {
		pr.seed = false
		p.seeds--
		return
	}
	if pr.has.Count() == 0 {
		return
	}
	for i := pr.has.NextSet(0); i >= 0; i = pr.has.NextSet(i + 1) {
		p.bumpAvail(i, -1)
	}
	pr.has.ClearAll()
	pr.interest = 0
	pr.fresh = 0
}

// ensureHas gives pr a bitfield to record announcements in.
func (p *Picker) ensureHas(pr *peer) {
	if pr.has.Len() != p.numPieces {
		pr.has = bitfield.New(p.numPieces)
	}
}

// PeerHave records a BEP 3 have message: peer id has piece i. O(1) amortized.
// It panics if id was not added or i is out of range.
func (p *Picker) PeerHave(id PeerID, i int) {
	pr := p.peer(id)
	p.checkPiece(i)
	if pr.seed {
		return
	}
	p.ensureHas(pr)
	if pr.has.Has(i) {
		return
	}
	pr.has.Set(i)
	p.bumpAvail(i, 1)
	if p.need.Has(i) {
		pr.interest++
	}
	if p.fresh.Has(i) {
		pr.fresh++
	}
}

// PeerBitfield records a bitfield message, replacing whatever peer id
// announced before. A full bitfield makes it a seed, which costs O(1) from
// then on. Otherwise it costs O(pieces/64 + set bits). bf is not retained.
// It panics if id was not added or bf.Len() is not NumPieces.
func (p *Picker) PeerBitfield(id PeerID, bf bitfield.Bitfield) {
	pr := p.peer(id)
	if bf.Len() != p.numPieces {
		panic(fmt.Sprintf("picker: bitfield of %d pieces for a torrent of %d", bf.Len(), p.numPieces))
	}
	p.forget(pr)
	if bf.All() {
		pr.seed = true
		p.seeds++
		return
	}
	if bf.Count() == 0 {
		return
	}
	p.ensureHas(pr)
	for i := bf.NextSet(0); i >= 0; i = bf.NextSet(i + 1) {
		pr.has.Set(i)
		p.bumpAvail(i, 1)
	}
	pr.interest = pr.has.CountAnd(&p.need)
	pr.fresh = pr.has.CountAnd(&p.fresh)
}

// PeerHaveAll records a BEP 6 have-all: peer id is a seed. It panics if id
// was not added.
func (p *Picker) PeerHaveAll(id PeerID) {
	pr := p.peer(id)
	p.forget(pr)
	pr.seed = true
	p.seeds++
}

// PeerHaveNone records a BEP 6 have-none, withdrawing anything peer id
// announced before. It panics if id was not added.
func (p *Picker) PeerHaveNone(id PeerID) {
	p.forget(p.peer(id))
}

// PeerHas reports whether peer id announced piece i. It panics if id was
// not added or i is out of range.
func (p *Picker) PeerHas(id PeerID, i int) bool {
	pr := p.peer(id)
	p.checkPiece(i)
	return hasPiece(pr, i)
}

func hasPiece(pr *peer, i int) bool {
	return pr.seed || (pr.has.Len() > 0 && pr.has.Has(i))
}

// Interesting reports whether peer id has a piece we lack that is wanted or
// that a reader needs: whether we should be interested in it. O(1) plus the
// number of urgent pieces outside the wanted range (normally none). It
// panics if id was not added.
func (p *Picker) Interesting(id PeerID) bool {
	pr := p.peer(id)
	if pr.seed && p.need.Count() > 0 || !pr.seed && pr.interest > 0 {
		return true
	}
	for _, i := range p.urgentUnwanted {
		if !p.have.Has(int(i)) && hasPiece(pr, int(i)) {
			return true
		}
	}
	return false
}

// Started returns the number of pieces with block state: requested or
// partly received, and not yet verified or failed.
func (p *Picker) Started() int { return len(p.parts) - len(p.free) }

// InFlight returns the number of requests in flight to peer id, endgame
// duplicates included. It panics if id was not added.
func (p *Picker) InFlight(id PeerID) int {
	return p.peer(id).inflight
}
