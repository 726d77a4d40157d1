package swarm

import "sync/atomic"

// atomicBits is a fixed-size bit set that one goroutine changes and any may
// read without a lock: the torrent's verified pieces, read by Readers and
// uploads while the run loop adds to it (and, when storage loses a piece,
// takes it out).
type atomicBits struct {
	words []atomic.Uint64
	n     atomic.Int64 // bits set
}

func newAtomicBits(n int) *atomicBits {
	return &atomicBits{words: make([]atomic.Uint64, (n+63)/64)}
}

func (b *atomicBits) has(i int) bool {
	return b.words[i/64].Load()&(1<<(uint(i)%64)) != 0
}

func (b *atomicBits) set(i int) {
	w := &b.words[i/64]
	bit := uint64(1) << (uint(i) % 64)
	for {
		old := w.Load()
		if old&bit != 0 {
			return
		}
		if w.CompareAndSwap(old, old|bit) {
			b.n.Add(1)
			return
		}
	}
}

func (b *atomicBits) count() int { return int(b.n.Load()) }

func (b *atomicBits) clear(i int) {
	w := &b.words[i/64]
	bit := uint64(1) << (uint(i) % 64)
	for {
		old := w.Load()
		if old&bit == 0 {
			return
		}
		if w.CompareAndSwap(old, old&^bit) {
			b.n.Add(-1)
			return
		}
	}
}
