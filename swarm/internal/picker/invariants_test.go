package picker

import (
	"fmt"
	"math/bits"
)

// checkInvariants verifies every internal invariant of p from scratch and
// returns the first violation found. It is the reference model for the
// incremental bookkeeping.
func (p *Picker) checkInvariants() error {
	n := p.numPieces
	// need, fresh, partialOf
	for i := range n {
		if p.need.Has(i) != (p.wanted.Has(i) && !p.have.Has(i)) {
			return fmt.Errorf("need[%d] = %v, wanted %v, have %v", i, p.need.Has(i), p.wanted.Has(i), p.have.Has(i))
		}
		if p.fresh.Has(i) != (p.need.Has(i) && p.partialOf[i] < 0) {
			return fmt.Errorf("fresh[%d] = %v, need %v, partial %d", i, p.fresh.Has(i), p.need.Has(i), p.partialOf[i])
		}
		if p.have.Has(i) && p.partialOf[i] >= 0 {
			return fmt.Errorf("piece %d is ours but has block state", i)
		}
		if pi := p.partialOf[i]; pi >= 0 && int(p.parts[pi].piece) != i {
			return fmt.Errorf("partialOf[%d] = %d, which tracks piece %d", i, pi, p.parts[pi].piece)
		}
	}
	// buckets
	inBucket := 0
	for a := range p.buckets {
		bk := &p.buckets[a]
		if bk.head > len(bk.entries) {
			return fmt.Errorf("bucket %d: head %d past %d entries", a, bk.head, len(bk.entries))
		}
		for idx := bk.head; idx < len(bk.entries); idx++ {
			i := int(bk.entries[idx])
			if !p.fresh.Has(i) || int(p.avail[i]) != a || int(p.slot[i]) != idx {
				return fmt.Errorf("bucket %d entry %d: piece %d (fresh %v, avail %d, slot %d)", a, idx, i, p.fresh.Has(i), p.avail[i], p.slot[i])
			}
			inBucket++
		}
	}
	if inBucket != p.fresh.Count() {
		return fmt.Errorf("%d pieces in buckets, %d fresh", inBucket, p.fresh.Count())
	}
	for i := range n {
		if !p.fresh.Has(i) && p.slot[i] != -1 {
			return fmt.Errorf("piece %d not fresh but has slot %d", i, p.slot[i])
		}
	}
	if p.urgentDone > len(p.urgent) {
		return fmt.Errorf("urgentDone %d past %d urgent pieces", p.urgentDone, len(p.urgent))
	}
	for _, i := range p.urgent[:p.urgentDone] {
		if pi := p.partialOf[i]; !p.have.Has(int(i)) && (pi < 0 || !p.parts[pi].full()) {
			return fmt.Errorf("urgent piece %d counted done but still needs requests", i)
		}
	}
	// peers: availability and interest
	avail := make([]int32, n)
	seeds := 0
	for id := range p.peers {
		pr := &p.peers[id]
		if !pr.live {
			if pr.inflight != 0 {
				return fmt.Errorf("removed peer %d has %d in flight", id, pr.inflight)
			}
			continue
		}
		if pr.seed {
			seeds++
			continue
		}
		if pr.has.Len() == 0 {
			if pr.interest != 0 {
				return fmt.Errorf("peer %d: interest %d without announcements", id, pr.interest)
			}
			continue
		}
		interest := 0
		for i := range n {
			if pr.has.Has(i) {
				avail[i]++
				if p.need.Has(i) {
					interest++
				}
			}
		}
		if interest != pr.interest {
			return fmt.Errorf("peer %d: interest %d, counted %d", id, pr.interest, interest)
		}
		if f := pr.has.CountAnd(&p.fresh); f != pr.fresh {
			return fmt.Errorf("peer %d: fresh %d, counted %d", id, pr.fresh, f)
		}
	}
	if seeds != p.seeds {
		return fmt.Errorf("seeds %d, counted %d", p.seeds, seeds)
	}
	for i := range n {
		if avail[i] != p.avail[i] {
			return fmt.Errorf("avail[%d] = %d, counted %d", i, p.avail[i], avail[i])
		}
	}
	// block state and in-flight counts
	inflight := make([]int, len(p.peers))
	freeSet := map[int32]bool{}
	for _, f := range p.free {
		freeSet[f] = true
	}
	openCount := 0
	for idx, pp := range p.parts {
		if int(pp.index) != idx {
			return fmt.Errorf("parts[%d] has index %d", idx, pp.index)
		}
		if pp.piece < 0 {
			if !freeSet[pp.index] {
				return fmt.Errorf("free block state %d not on the free list", idx)
			}
			if pp.openPos >= 0 {
				return fmt.Errorf("free block state %d is open", idx)
			}
			continue
		}
		if freeSet[pp.index] {
			return fmt.Errorf("block state %d of piece %d is on the free list", idx, pp.piece)
		}
		i := int(pp.piece)
		if p.partialOf[i] != pp.index {
			return fmt.Errorf("piece %d: partialOf %d, state %d", i, p.partialOf[i], idx)
		}
		nb := p.nblocks(i)
		if int(pp.nblocks) != nb {
			return fmt.Errorf("piece %d: %d blocks, want %d", i, pp.nblocks, nb)
		}
		rcv, req := 0, 0
		for w := range pp.received {
			if pp.received[w]&pp.requested[w] != 0 {
				return fmt.Errorf("piece %d: a block both received and requested", i)
			}
			rcv += bits.OnesCount64(pp.received[w])
			req += bits.OnesCount64(pp.requested[w])
		}
		if rcv != int(pp.nReceived) || req != int(pp.nRequested) {
			return fmt.Errorf("piece %d: counts %d/%d, bits %d/%d", i, pp.nReceived, pp.nRequested, rcv, req)
		}
		if rcv == 0 && req == 0 {
			return fmt.Errorf("piece %d: empty block state kept", i)
		}
		for k := nb; k < len(pp.received)*64; k++ {
			if bitSet(pp.received, k) || bitSet(pp.requested, k) {
				return fmt.Errorf("piece %d: bit %d past its %d blocks", i, k, nb)
			}
		}
		for k := range nb {
			who := pp.peer[k]
			switch {
			case bitSet(pp.requested, k):
				if who < 0 || int(who) >= len(p.peers) || !p.peers[who].live {
					return fmt.Errorf("piece %d block %d in flight to unknown peer %d", i, k, who)
				}
				inflight[who]++
			case bitSet(pp.received, k):
				if who < 0 {
					return fmt.Errorf("piece %d block %d received from nobody", i, k)
				}
			default:
				if who != noPeer {
					return fmt.Errorf("piece %d block %d missing but assigned to %d", i, k, who)
				}
			}
		}
		perBlock := map[int32]int{}
		seen := map[dup]bool{}
		for _, d := range pp.dups {
			if !bitSet(pp.requested, int(d.block)) {
				return fmt.Errorf("piece %d: duplicate of unrequested block %d", i, d.block)
			}
			if d.peer == pp.peer[d.block] || seen[d] {
				return fmt.Errorf("piece %d block %d in flight twice to peer %d", i, d.block, d.peer)
			}
			if d.peer < 0 || int(d.peer) >= len(p.peers) || !p.peers[d.peer].live {
				return fmt.Errorf("piece %d block %d duplicated to unknown peer %d", i, d.block, d.peer)
			}
			seen[d] = true
			perBlock[d.block]++
			if perBlock[d.block] > p.endgameDup {
				return fmt.Errorf("piece %d block %d has %d duplicates, cap %d", i, d.block, perBlock[d.block], p.endgameDup)
			}
			inflight[d.peer]++
		}
		if open := !pp.full(); open != (pp.openPos >= 0) {
			return fmt.Errorf("piece %d: open %v, openPos %d", i, open, pp.openPos)
		}
		if pp.openPos >= 0 {
			openCount++
			if int(pp.openPos) >= len(p.open) || p.open[pp.openPos] != pp {
				return fmt.Errorf("piece %d: not at open[%d]", i, pp.openPos)
			}
		}
	}
	if openCount != len(p.open) {
		return fmt.Errorf("open set has %d entries, %d open states", len(p.open), openCount)
	}
	for id := range p.peers {
		if p.peers[id].inflight != inflight[id] {
			return fmt.Errorf("peer %d: in flight %d, counted %d", id, p.peers[id].inflight, inflight[id])
		}
	}
	return nil
}
