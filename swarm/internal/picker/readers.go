package picker

import "fmt"

// SetReader places reader rid at byte pos with a readahead of readahead
// bytes, adding it if new. The pieces overlapping [pos, pos+readahead) are
// urgent; the piece holding pos always is, even with no readahead, since
// the reader waits on it. A pos at or past the end makes nothing urgent.
//
// Urgent pieces of all readers form one order, by distance from the nearest
// reader's position (0 for the piece a reader is in), so the byte some
// reader needs soonest comes first. The order is rebuilt, in O(window ×
// readers), only when a window's first or last piece changes, so a reader
// may call SetReader on every read: moves within a piece cost O(readers).
// It panics if pos is negative.
func (p *Picker) SetReader(rid int, pos, readahead int64) {
	if pos < 0 {
		panic(fmt.Sprintf("picker: negative reader position %d", pos))
	}
	total := p.pieceLength*int64(p.numPieces-1) + p.lastLength
	readahead = min(max(readahead, 1), total)
	first, last := p.numPieces, p.numPieces-1
	if pos < total {
		first = int(pos / p.pieceLength)
		last = int(min((pos+readahead-1)/p.pieceLength, int64(p.numPieces-1)))
	}
	idx := -1
	for j := range p.readers {
		if p.readers[j].id == rid {
			idx = j
			break
		}
	}
	if idx < 0 {
		p.readers = append(p.readers, reader{id: rid})
		idx = len(p.readers) - 1
	} else {
		if r := &p.readers[idx]; r.first == first && r.last == last {
			// Same window: the order of its pieces among other readers'
			// could shift by less than a piece; not worth a rebuild.
			r.pos = pos
			return
		}
	}
	r := &p.readers[idx]
	r.pos, r.first, r.last = pos, first, last
	p.computeUrgent()
}

// RemoveReader forgets reader rid. Requests already made for its pieces
// stay in flight.
func (p *Picker) RemoveReader(rid int) {
	for j := range p.readers {
		if p.readers[j].id == rid {
			p.readers = append(p.readers[:j], p.readers[j+1:]...)
			p.computeUrgent()
			return
		}
	}
}

// dist returns how far piece i lies ahead of r's position.
func (p *Picker) dist(r *reader, i int) int64 {
	if i == r.first {
		return 0
	}
	return int64(i)*p.pieceLength - r.pos
}

// computeUrgent merges the readers' windows into p.urgent, ordered by
// (distance, piece, reader) and keeping each piece at its least distance.
func (p *Picker) computeUrgent() {
	p.urgent = p.urgent[:0]
	p.urgentDone = 0
	rs := p.readers
	for j := range rs {
		rs[j].cur = rs[j].first
	}
	for {
		best := -1
		var bd int64
		for j := range rs {
			r := &rs[j]
			if r.cur > r.last {
				continue
			}
			if d := p.dist(r, r.cur); best < 0 || d < bd || d == bd && r.cur < rs[best].cur {
				best, bd = j, d
			}
		}
		if best < 0 {
			break
		}
		i := rs[best].cur
		rs[best].cur++
		dup := false
		for j := range rs {
			o := &rs[j]
			if j == best || i < o.first || i > o.last {
				continue
			}
			if od := p.dist(o, i); od < bd || od == bd && j < best {
				dup = true
				break
			}
		}
		if !dup {
			p.urgent = append(p.urgent, int32(i))
		}
	}
	p.filterUrgentUnwanted()
}

// filterUrgentUnwanted recomputes urgentUnwanted from urgent and wanted.
func (p *Picker) filterUrgentUnwanted() {
	p.urgentUnwanted = p.urgentUnwanted[:0]
	for _, i := range p.urgent {
		if !p.wanted.Has(int(i)) {
			p.urgentUnwanted = append(p.urgentUnwanted, i)
		}
	}
}

// readerAt reports whether a reader's position is in piece i.
func (p *Picker) readerAt(i int) bool {
	for _, r := range p.readers {
		if r.first == i {
			return true
		}
	}
	return false
}
