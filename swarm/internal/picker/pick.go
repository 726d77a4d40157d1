package picker

import "math/bits"

// Pick appends to out up to n new requests for peer id and records them as
// in flight to it. Only blocks of pieces the peer has and we lack are
// picked, and outside endgame none already in flight. The order is:
//
//  1. urgent pieces, nearest to a reader first, wanted or not; these may be
//     split across peers;
//  2. started wanted pieces that are this peer's, or nobody's any more (no
//     block of them in flight);
//  3. fresh wanted pieces, rarest first, each taken whole where n allows;
//  4. started wanted pieces being fetched from other peers (splitting them);
//  5. endgame, once every missing wanted block is in flight: blocks in
//     flight elsewhere, each to at most EndgameDup additional peers and
//     never twice to one peer.
//
// With a reused out, Pick does not allocate once the Picker has warmed up.
// Its cost is O(urgent pieces not yet fully requested + open pieces +
// blocks picked) plus the search for fresh pieces: O(1) amortized for a
// seed; for other peers a walk of the rarity buckets that gives up after
// scanBudget pieces the peer lacks and then samples the peer's bitfield a
// word at a time (O(pieces/64) at worst). Endgame adds O(block states ×
// blocks per piece / 64 + duplicates). It panics if id was not added.
func (p *Picker) Pick(id PeerID, n int, out []Block) []Block {
	return p.pick(id, n, out, true)
}

// PickStarted is Pick that starts no piece, except one a reader is in
// now. A caller short of buffer memory uses it to finish what it
// has begun before taking on more.
func (p *Picker) PickStarted(id PeerID, n int, out []Block) []Block {
	return p.pick(id, n, out, false)
}

func (p *Picker) pick(id PeerID, n int, out []Block, fresh bool) []Block {
	pr := p.peer(id)
	if n <= 0 {
		return out
	}
	limit := len(out) + n
	pid := int32(id)
	if len(p.urgent) > 0 {
		out = p.pickUrgent(pr, pid, out, limit, fresh)
	}
	if !pr.seed && pr.interest == 0 {
		// Nothing wanted here; only urgent pieces could have applied.
		return out
	}
	if len(out) < limit && len(p.open) > 0 {
		out = p.pickOpen(pr, pid, out, limit, false)
	}
	if fresh && len(out) < limit && p.fresh.Count() > 0 {
		out = p.pickFresh(pr, pid, out, limit)
	}
	if len(out) < limit && len(p.open) > 0 {
		out = p.pickOpen(pr, pid, out, limit, true)
	}
	if len(out) < limit && p.endgameDup > 0 && p.endgame() {
		out = p.pickEndgame(pr, pid, out, limit)
	}
	return out
}

// takeBlocks requests, from peer pid, pp's blocks that are neither requested
// nor received, lowest first, until out reaches limit.
func (p *Picker) takeBlocks(pp *partial, pr *peer, pid int32, out []Block, limit int) []Block {
	i := int(pp.piece)
	nb := int(pp.nblocks)
	taken := 0
	for w := 0; w<<6 < nb && len(out) < limit; w++ {
		free := ^(pp.received[w] | pp.requested[w])
		if rest := nb - w<<6; rest < 64 {
			free &= 1<<uint(rest) - 1
		}
		for free != 0 && len(out) < limit {
			b := bits.TrailingZeros64(free)
			free &= free - 1
			k := w<<6 + b
			pp.requested[w] |= 1 << uint(b)
			pp.peer[k] = pid
			taken++
			out = append(out, Block{Piece: i, Begin: k * p.blockSize, Length: p.blockLen(i, k)})
		}
	}
	pp.nRequested += int32(taken)
	pr.inflight += taken
	p.setOpen(pp, !pp.full())
	return out
}

// pickUrgent serves the readers' windows in order.
func (p *Picker) pickUrgent(pr *peer, pid int32, out []Block, limit int, fresh bool) []Block {
	acquired := 0
	prefix := true // still within a run of pieces that need nothing from anyone
	for j := p.urgentDone; j < len(p.urgent) && len(out) < limit; j++ {
		i := int(p.urgent[j])
		if p.have.Has(i) {
			acquired++
			if prefix {
				p.urgentDone = j + 1
			}
			continue
		}
		pi := p.partialOf[i]
		if pi >= 0 && p.parts[pi].full() {
			if prefix {
				p.urgentDone = j + 1
			}
			continue
		}
		prefix = false
		if !hasPiece(pr, i) || (!fresh && pi < 0 && !p.readerAt(i)) {
			continue
		}
		pp := p.partialFor(i)
		if pp.owner == noPeer {
			pp.owner = pid
		}
		out = p.takeBlocks(pp, pr, pid, out, limit)
		if pp.full() && j == p.urgentDone {
			p.urgentDone = j + 1
			prefix = true
		}
	}
	if acquired > 8 && acquired*4 > len(p.urgent) {
		// Drop acquired pieces so that later calls do not step over them.
		w := 0
		for _, i := range p.urgent {
			if !p.have.Has(int(i)) {
				p.urgent[w] = i
				w++
			}
		}
		p.urgent = p.urgent[:w]
		p.urgentDone = 0
	}
	return out
}

// pickOpen serves started wanted pieces with blocks left to request. Without
// split it takes the ones that are pid's or nobody's and claims them for
// pid; with split it takes any.
func (p *Picker) pickOpen(pr *peer, pid int32, out []Block, limit int, split bool) []Block {
	for j := 0; j < len(p.open) && len(out) < limit; {
		pp := p.open[j]
		i := int(pp.piece)
		ok := p.need.Has(i) && hasPiece(pr, i)
		if ok && !split {
			ok = pp.owner == pid || pp.owner == noPeer || pp.nRequested == 0
		}
		if ok {
			if !split {
				pp.owner = pid
			}
			out = p.takeBlocks(pp, pr, pid, out, limit)
			if pp.openPos != int32(j) {
				continue // pp left the open set; slot j now holds another
			}
		}
		j++
	}
	return out
}

// pickFresh starts the rarest fresh pieces the peer has. Seeds are counted
// apart from the buckets, so a seed takes the head of the lowest non-empty
// bucket; any other peer's pieces have availability ≥ 1, so bucket 0 is
// skipped for it. A non-seed peer that holds few of the pieces we need, or
// whose pieces hide behind many it lacks, is served by sampling instead.
func (p *Picker) pickFresh(pr *peer, pid int32, out []Block, limit int) []Block {
	start := 0
	if !pr.seed {
		if pr.fresh == 0 {
			return out
		}
		if pr.fresh*sparseRatio < p.fresh.Count() {
			return p.pickFreshSample(pr, pid, out, limit)
		}
		start = 1
	}
	misses := 0
	for a := start; a < len(p.buckets) && len(out) < limit; a++ {
		bk := &p.buckets[a]
		for idx := bk.head; idx < len(bk.entries) && len(out) < limit; {
			i := int(bk.entries[idx])
			if !pr.seed && !pr.has.Has(i) {
				if misses++; misses > scanBudget {
					return p.pickFreshSample(pr, pid, out, limit)
				}
				idx++
				continue
			}
			// Taking i removes it from the bucket: either head moves past
			// it, or the last entry moves into idx and is examined next.
			pp := p.partialFor(i)
			pp.owner = pid
			out = p.takeBlocks(pp, pr, pid, out, limit)
			idx = max(idx, bk.head)
		}
	}
	return out
}

// pickFreshSample starts fresh pieces the peer has, rarest first among the
// next sampleSize candidates in index order from a rotating (or, with a
// Rand, random) point; it samples again if it needs more. A sample costs
// O(sampleSize + pieces/64) at worst, and far less when the peer holds many
// of the fresh pieces. pr must be a non-seed.
func (p *Picker) pickFreshSample(pr *peer, pid int32, out []Block, limit int) []Block {
	from := p.scanFrom
	if p.rng != nil {
		from = p.rng.IntN(p.numPieces)
	}
	var cand [sampleSize]int32
	for len(out) < limit && pr.fresh > 0 {
		if from >= p.numPieces {
			from = 0
		}
		// Collect up to sampleSize candidates from, wrapping once.
		n := 0
		i, wrapped := from, false
		for n < min(sampleSize, pr.fresh) {
			i = pr.has.NextSetAnd(&p.fresh, i)
			if i < 0 || wrapped && i >= from {
				if wrapped || from == 0 {
					break
				}
				wrapped = true
				if i = pr.has.NextSetAnd(&p.fresh, 0); i < 0 || i >= from {
					break
				}
			}
			cand[n] = int32(i)
			n++
			i++
		}
		if n == 0 {
			break
		}
		// Insertion sort by availability, stable so ties keep index order.
		for a := 1; a < n; a++ {
			c := cand[a]
			b := a
			for ; b > 0 && p.avail[cand[b-1]] > p.avail[c]; b-- {
				cand[b] = cand[b-1]
			}
			cand[b] = c
		}
		for _, c := range cand[:n] {
			if len(out) >= limit {
				break
			}
			pp := p.partialFor(int(c))
			pp.owner = pid
			out = p.takeBlocks(pp, pr, pid, out, limit)
		}
		from = i
		p.scanFrom = i
	}
	return out
}

// endgame reports whether every missing wanted block is in flight: no wanted
// piece is fresh, and no started wanted piece has a block left to request.
func (p *Picker) endgame() bool {
	if p.fresh.Count() > 0 {
		return false
	}
	for _, pp := range p.open {
		if p.need.Has(int(pp.piece)) {
			return false
		}
	}
	return true
}

// pickEndgame requests blocks already in flight to others, urgent pieces
// first.
func (p *Picker) pickEndgame(pr *peer, pid int32, out []Block, limit int) []Block {
	for _, i := range p.urgent {
		if len(out) >= limit {
			return out
		}
		if pi := p.partialOf[i]; pi >= 0 {
			out = p.duplicate(p.parts[pi], pr, pid, out, limit)
		}
	}
	for _, pp := range p.parts {
		if len(out) >= limit {
			break
		}
		if pp.piece >= 0 {
			out = p.duplicate(pp, pr, pid, out, limit)
		}
	}
	return out
}

// duplicate requests from pid the blocks of pp in flight to others, within
// the endgame cap.
func (p *Picker) duplicate(pp *partial, pr *peer, pid int32, out []Block, limit int) []Block {
	i := int(pp.piece)
	if pp.nRequested == 0 || pp.solo || !p.need.Has(i) || !hasPiece(pr, i) {
		return out
	}
	for w, word := range pp.requested {
		for word != 0 && len(out) < limit {
			k := w<<6 + bits.TrailingZeros64(word)
			word &= word - 1
			if pp.peer[k] == pid {
				continue
			}
			n, mine := pp.dupCount(int32(k), pid)
			if mine || n >= p.endgameDup {
				continue
			}
			pp.dups = append(pp.dups, dup{block: int32(k), peer: pid})
			pr.inflight++
			out = append(out, Block{Piece: i, Begin: k * p.blockSize, Length: p.blockLen(i, k)})
		}
	}
	return out
}
