package picker

import (
	"math/rand/v2"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
)

const benchPieceLen = 256 << 10 // 16 blocks

// benchPicker returns a Picker over n pieces of 256 KiB with everything
// wanted and 8 peers: seeds, or peers holding each piece with probability
// density.
func benchPicker(n int, density float64, dup int) *Picker {
	r := rand.New(rand.NewPCG(1, 2))
	p := New(Config{PieceLength: benchPieceLen, TotalLength: int64(n) * benchPieceLen, EndgameDup: dup, Rand: r})
	p.SetWantedAll()
	for id := range PeerID(8) {
		p.AddPeer(id)
		if density >= 1 {
			p.PeerHaveAll(id)
			continue
		}
		b := bitfield.New(n)
		for i := range n {
			if r.Float64() < density {
				b.Set(i)
			}
		}
		p.PeerBitfield(id, b)
	}
	return p
}

// releaseAll returns every request to the pool, making every piece fresh
// again.
func releaseAll(p *Picker) {
	for id := range PeerID(8) {
		p.Release(id)
	}
}

// benchPick runs Pick(peer i%8, max) in a loop, refilling the pool outside
// the timer whenever a round finds nothing left, and reports the cost per
// block picked.
func benchPick(b *testing.B, p *Picker, perCall int) {
	out := make([]Block, 0, perCall)
	// Warm up: one full cycle allocates the block states that later
	// cycles reuse.
	for id := 0; ; id++ {
		if len(p.Pick(PeerID(id%8), perCall, out[:0])) == 0 && id%8 == 7 {
			break
		}
	}
	releaseAll(p)
	b.ReportAllocs()
	blocks, empty := 0, 0
	i := 0
	for b.Loop() {
		out = p.Pick(PeerID(i%8), perCall, out[:0])
		i++
		blocks += len(out)
		if len(out) > 0 {
			empty = 0
			continue
		}
		if empty++; empty == 8 {
			b.StopTimer()
			releaseAll(p)
			empty = 0
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(blocks, 1)), "ns/block")
}

func BenchmarkPick(b *testing.B) {
	b.Run("seeds", func(b *testing.B) {
		benchPick(b, benchPicker(4096, 1, -1), 64)
	})
	b.Run("half-bitfields", func(b *testing.B) {
		benchPick(b, benchPicker(4096, 0.5, -1), 64)
	})
	b.Run("seeds-reader", func(b *testing.B) {
		p := benchPicker(4096, 1, -1)
		p.SetReader(0, 1000*benchPieceLen, 64<<20) // 256 urgent pieces
		benchPick(b, p, 64)
	})
	b.Run("seeds-one-block", func(b *testing.B) {
		benchPick(b, benchPicker(4096, 1, -1), 1)
	})
}

// BenchmarkPickLarge shows the per-call cost with 2^20 pieces (256 GiB of
// 256 KiB pieces) stays flat.
func BenchmarkPickLarge(b *testing.B) {
	const n = 1 << 20
	for _, c := range []struct {
		name    string
		density float64
	}{{"seeds", 1}, {"half-bitfields", 0.5}, {"sparse-bitfields", 0.001}} {
		b.Run(c.name, func(b *testing.B) {
			p := benchPicker(n, c.density, -1)
			out := make([]Block, 0, 64)
			for id := range PeerID(8) { // warm the block-state slab
				out = p.Pick(id, 64, out[:0])
			}
			b.ReportAllocs()
			blocks, i := 0, 0
			for b.Loop() {
				out = p.Pick(PeerID(i%8), 64, out[:0])
				i++
				blocks += len(out)
				if i%4096 == 0 {
					// Keep the number of started pieces bounded, as
					// completion would.
					b.StopTimer()
					releaseAll(p)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(blocks, 1)), "ns/block")
		})
	}
}

// pickEverything requests every block, round-robin over the 8 peers, and
// returns the requests with their peers.
func pickEverything(p *Picker, reqs []Block, who []PeerID) ([]Block, []PeerID) {
	reqs, who = reqs[:0], who[:0]
	for id := 0; ; id++ {
		n := len(reqs)
		reqs = p.Pick(PeerID(id%8), 64, reqs)
		for range len(reqs) - n {
			who = append(who, PeerID(id%8))
		}
		if len(reqs) == n && id%8 == 7 {
			return reqs, who
		}
	}
}

func BenchmarkReceived(b *testing.B) {
	p := benchPicker(4096, 1, -1)
	reqs, who := pickEverything(p, nil, nil)
	b.ReportAllocs()
	j := 0
	for b.Loop() {
		if j == len(reqs) {
			b.StopTimer()
			for i := range p.NumPieces() {
				p.Failed(i)
			}
			reqs, who = pickEverything(p, reqs, who)
			j = 0
			b.StartTimer()
		}
		if ok, _, _ := p.Received(who[j], reqs[j]); !ok {
			b.Fatal("refused")
		}
		j++
	}
}

// BenchmarkCycle is the whole life of a block: picked, received, and its
// piece verified when complete; per op is per block.
func BenchmarkCycle(b *testing.B) {
	p := benchPicker(4096, 1, 0)
	out := make([]Block, 0, 64)
	b.ReportAllocs()
	var pending []Block
	id := PeerID(0)
	for b.Loop() {
		if len(pending) == 0 {
			if p.Remaining() == 0 {
				b.StopTimer()
				p = benchPicker(4096, 1, 0)
				b.StartTimer()
			}
			id = (id + 1) % 8
			out = p.Pick(id, 64, out[:0])
			pending = out
			if len(pending) == 0 {
				continue
			}
		}
		blk := pending[0]
		pending = pending[1:]
		if _, done, _ := p.Received(id, blk); done {
			p.Verified(blk.Piece)
		}
	}
}

func BenchmarkSetReader(b *testing.B) {
	p := benchPicker(4096, 1, -1)
	p.SetReader(1, 0, 16<<20)
	b.ReportAllocs()
	pos := int64(0)
	for b.Loop() {
		pos = (pos + 32<<10) % (4096 * benchPieceLen)
		p.SetReader(0, pos, 16<<20)
	}
}

func BenchmarkPeerHave(b *testing.B) {
	p := benchPicker(1<<20, 0, -1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.PeerHave(PeerID(i%8), (i*7919)%(1<<20))
		i++
		if i%(8<<20) == 0 {
			b.StopTimer()
			for id := range PeerID(8) {
				p.PeerHaveNone(id)
			}
			b.StartTimer()
		}
	}
}
