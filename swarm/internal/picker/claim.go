package picker

import "math"

// Claim requests for peer id every block of piece i that is neither
// received nor in flight, and appends them to out. It is how a web seed,
// which fetches whole pieces in one HTTP range, takes its share: Pick for
// other peers then skips those blocks as it skips any in flight. Nothing
// is claimed for a piece we have. It panics if id was not added or i is
// out of range.
func (p *Picker) Claim(id PeerID, i int, out []Block) []Block {
	return p.claim(id, i, out, false)
}

// ClaimSolo is Claim, and keeps the endgame from duplicating the claimed
// blocks to other peers until id delivers or releases them: for a piece
// that failed its hash, whose good copy must come from id, not again from
// the peers that may have sent the bad one.
func (p *Picker) ClaimSolo(id PeerID, i int, out []Block) []Block {
	return p.claim(id, i, out, true)
}

func (p *Picker) claim(id PeerID, i int, out []Block, solo bool) []Block {
	pr := p.peer(id)
	p.checkPiece(i)
	if p.have.Has(i) {
		return out
	}
	pp := p.partialFor(i)
	if pp.owner == noPeer {
		pp.owner = int32(id)
	}
	pp.solo = pp.solo || solo
	return p.takeBlocks(pp, pr, int32(id), out, math.MaxInt)
}

// Untouched reports whether piece i is missing and has no block received
// or in flight: a web seed can take it whole.
func (p *Picker) Untouched(i int) bool {
	p.checkPiece(i)
	if p.have.Has(i) {
		return false
	}
	pi := p.partialOf[i]
	return pi < 0 || p.parts[pi].nReceived+p.parts[pi].nRequested == 0
}

// Wanted reports whether piece i is wanted or urgent for a reader.
func (p *Picker) Wanted(i int) bool {
	p.checkPiece(i)
	if p.wanted.Has(i) {
		return true
	}
	for _, u := range p.urgent {
		if int(u) == i {
			return true
		}
	}
	return false
}

// Lost records that piece i, ours until now, is gone: storage could not
// read it back. It is missing again, and fetched anew if wanted or urgent.
// It panics if i is out of range.
func (p *Picker) Lost(i int) {
	p.checkPiece(i)
	if !p.have.Has(i) {
		return
	}
	p.have.Clear(i)
	p.urgentDone = 0
	if !p.wanted.Has(i) {
		return
	}
	p.need.Set(i)
	p.addFresh(i)
	for j := range p.peers {
		pr := &p.peers[j]
		if pr.live && !pr.seed && pr.has.Len() > 0 && pr.has.Has(i) {
			pr.interest++
		}
	}
}
