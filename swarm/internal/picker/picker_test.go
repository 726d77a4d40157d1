package picker

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
)

const bs = DefaultBlockSize

// newTest returns a Picker over pieces pieces of perPiece full blocks each,
// everything wanted unless wantNone.
func newTest(t testing.TB, pieces, perPiece int) *Picker {
	t.Helper()
	p := New(Config{PieceLength: int64(perPiece * bs), TotalLength: int64(pieces * perPiece * bs)})
	p.SetWantedAll()
	return p
}

func ok(t testing.TB, p *Picker) {
	t.Helper()
	if err := p.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func bf(n int, set ...int) bitfield.Bitfield {
	b := bitfield.New(n)
	for _, i := range set {
		b.Set(i)
	}
	return b
}

func span(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// order returns the distinct pieces of bs in order of first appearance.
func order(bs []Block) []int {
	var out []int
	for _, b := range bs {
		if !slices.Contains(out, b.Piece) {
			out = append(out, b.Piece)
		}
	}
	return out
}

func blk(piece, k int) Block { return Block{Piece: piece, Begin: k * bs, Length: bs} }

const all = 1 << 30 // a Pick max that takes everything available

func TestReaderUrgency(t *testing.T) {
	const L = 4 * bs // piece length in bytes
	type rd struct {
		id         int
		pos, ahead int64
	}
	tests := []struct {
		name    string
		wanted  [2]int // SetWanted range
		readers []rd
		common  []int // pieces a non-seed peer announces, to steer rarest-first elsewhere
		want    []int // expected piece order picked by a seed
	}{
		{
			name:    "reader at 0 gets its window first",
			wanted:  [2]int{0, 16},
			readers: []rd{{1, 0, 4 * L}},
			common:  span(0, 8),
			want:    []int{0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 4, 5, 6, 7},
		},
		{
			name:   "without readers rarest first",
			wanted: [2]int{0, 16},
			common: span(0, 8),
			want:   []int{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7},
		},
		{
			name:    "two readers interleave",
			wanted:  [2]int{0, 16},
			readers: []rd{{1, 0, 3 * L}, {2, 10 * L, 3 * L}},
			want:    []int{0, 10, 1, 11, 2, 12, 3, 4},
		},
		{
			name:    "nearest byte first across readers",
			wanted:  [2]int{0, 16},
			readers: []rd{{1, 3 * L / 4, 3 * L}, {2, 10 * L, 2 * L}},
			want:    []int{0, 10, 1, 11, 2, 3},
		},
		{
			name:    "overlapping windows counted once",
			wanted:  [2]int{0, 16},
			readers: []rd{{1, 0, 4 * L}, {2, 2 * L, 4 * L}},
			want:    []int{0, 2, 1, 3, 4, 5},
		},
		{
			name:    "urgent pieces outside the wanted range",
			wanted:  [2]int{0, 0},
			readers: []rd{{1, 5 * L, 2 * L}},
			want:    []int{5, 6},
		},
		{
			name:    "zero readahead still needs the current piece",
			wanted:  [2]int{0, 0},
			readers: []rd{{1, 6*L + 5, 0}},
			want:    []int{6},
		},
		{
			name:    "reader at the end makes nothing urgent",
			wanted:  [2]int{0, 4},
			readers: []rd{{1, 16 * L, L}},
			want:    []int{0, 1, 2, 3},
		},
		{
			name:    "readahead past the end is clipped",
			wanted:  [2]int{0, 0},
			readers: []rd{{1, 14 * L, 100 * L}},
			want:    []int{14, 15},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{PieceLength: L, TotalLength: 16 * L})
			p.SetWanted(tt.wanted[0], tt.wanted[1])
			p.AddPeer(0)
			p.PeerHaveAll(0)
			if tt.common != nil {
				p.AddPeer(1)
				p.PeerBitfield(1, bf(16, tt.common...))
			}
			for _, r := range tt.readers {
				p.SetReader(r.id, r.pos, r.ahead)
			}
			got := order(p.Pick(0, all, nil))
			if len(got) > len(tt.want) {
				got = got[:len(tt.want)]
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
			ok(t, p)
		})
	}
}

func TestReaderMoves(t *testing.T) {
	p := newTest(t, 16, 4)
	p.AddPeer(0)
	p.PeerHaveAll(0)
	const L = 4 * bs
	steps := []struct {
		name string
		act  func()
		want []int
	}{
		{"initial window", func() { p.SetReader(7, 0, 2*L) }, []int{0, 1}},
		{"seek forward", func() { p.SetReader(7, 8*L, 2*L) }, []int{8, 9}},
		{"move within a piece keeps the window", func() { p.SetReader(7, 8*L+100, 2*L-100) }, []int{2, 3}},
		{"second reader", func() { p.SetReader(9, 12*L, L) }, []int{12, 4}},
		{"reader removed", func() { p.RemoveReader(9); p.RemoveReader(7) }, []int{5, 6}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.act()
			got := order(p.Pick(0, 2*4, nil))
			if !slices.Equal(got, s.want) {
				t.Fatalf("order %v, want %v", got, s.want)
			}
			ok(t, p)
		})
	}
}

func TestUrgentSplitAcrossPeers(t *testing.T) {
	p := newTest(t, 8, 4)
	for id := range PeerID(2) {
		p.AddPeer(id)
		p.PeerHaveAll(id)
	}
	p.SetReader(1, 0, 1)
	a := p.Pick(0, 2, nil)
	b := p.Pick(1, 4, nil)
	if want := []Block{blk(0, 0), blk(0, 1)}; !slices.Equal(a, want) {
		t.Fatalf("first peer got %v, want %v", a, want)
	}
	// The urgent piece is finished by the second peer before anything else.
	if want := []Block{blk(0, 2), blk(0, 3), blk(1, 0), blk(1, 1)}; !slices.Equal(b, want) {
		t.Fatalf("second peer got %v, want %v", b, want)
	}
	ok(t, p)
}

func TestRarestFirst(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		peers  [][]int // non-seed peers' pieces; nil entry means a seed
		picker int     // index into peers of the one picking
		want   []int
	}{
		{
			name:   "lowest availability first",
			n:      8,
			peers:  [][]int{nil, span(0, 7), {0, 1, 2, 3}, {0, 1}},
			picker: 0,
			want:   []int{7, 4, 5, 6, 2, 3, 0, 1},
		},
		{
			name:   "pieces only seeds have are rarest",
			n:      8,
			peers:  [][]int{nil, {0, 1, 2, 3}},
			picker: 0,
			want:   []int{4, 5, 6, 7, 0, 1, 2, 3},
		},
		{
			name:   "non-seed takes the rarest of its own pieces",
			n:      8,
			peers:  [][]int{span(0, 7), {5, 6}, {6}, {1}},
			picker: 0,
			// Availability 1: 0, 2, 3, 4; 2: 5 and 1; 3: 6. Within a
			// bucket the order is insertion order, except that removing
			// piece 1 moved the last entry, 4, into its place.
			want: []int{0, 4, 2, 3, 5, 1, 6},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{PieceLength: bs, TotalLength: int64(tt.n * bs)})
			p.SetWantedAll()
			for id, has := range tt.peers {
				p.AddPeer(PeerID(id))
				if has == nil {
					p.PeerHaveAll(PeerID(id))
				} else {
					p.PeerBitfield(PeerID(id), bf(tt.n, has...))
				}
			}
			got := order(p.Pick(PeerID(tt.picker), all, nil))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
			ok(t, p)
		})
	}
}

func TestAvailability(t *testing.T) {
	p := newTest(t, 8, 1)
	p.AddPeer(0)
	p.AddPeer(1)
	p.AddPeer(2)
	p.PeerHaveAll(0)
	p.PeerBitfield(1, bf(8, 1, 2))
	p.PeerHave(2, 2)
	p.PeerHave(2, 2)
	steps := []struct {
		name string
		act  func()
		want []int
	}{
		{"counts seeds and announcements", func() {}, []int{1, 2, 3, 1, 1, 1, 1, 1}},
		{"have raises it", func() { p.PeerHave(1, 5) }, []int{1, 2, 3, 1, 1, 2, 1, 1}},
		{"bitfield replaces announcements", func() { p.PeerBitfield(1, bf(8, 7)) }, []int{1, 1, 2, 1, 1, 1, 1, 2}},
		{"have none withdraws them", func() { p.PeerHaveNone(2) }, []int{1, 1, 1, 1, 1, 1, 1, 2}},
		{"removing a seed", func() { p.RemovePeer(0) }, []int{0, 0, 0, 0, 0, 0, 0, 1}},
		{"have all after announcements", func() { p.PeerHaveAll(1) }, []int{1, 1, 1, 1, 1, 1, 1, 1}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.act()
			for i, w := range s.want {
				if got := p.Availability(i); got != w {
					t.Fatalf("Availability(%d) = %d, want %d", i, got, w)
				}
			}
			ok(t, p)
		})
	}
}

func TestRandomTieBreak(t *testing.T) {
	orders := map[string]bool{}
	for seed := range uint64(20) {
		p := New(Config{PieceLength: bs, TotalLength: 64 * bs, Rand: rand.New(rand.NewPCG(seed, 0))})
		p.SetWantedAll()
		p.AddPeer(0)
		p.PeerHaveAll(0)
		p.AddPeer(1)
		p.PeerBitfield(1, bf(64, span(32, 63)...))
		got := order(p.Pick(0, all, nil))
		// Rarity still rules: the 33 pieces only the seed has come first.
		for j, i := range got {
			if rare := i < 32 || i == 63; rare != (j < 33) {
				t.Fatalf("seed %d: piece %d at position %d breaks rarity: %v", seed, i, j, got)
			}
		}
		orders[string(rune(got[0]))+string(rune(got[1]))+string(rune(got[2]))] = true
		ok(t, p)
	}
	if len(orders) < 5 {
		t.Fatalf("only %d distinct orders from 20 seeds", len(orders))
	}
}

func TestStartedPiecesFirst(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, p *Picker) (got, want []Block)
	}{
		{"own started piece continues", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.Pick(0, 6, nil) // piece 0 and half of piece 1
			return p.Pick(0, 3, nil), []Block{blk(1, 2), blk(1, 3), blk(2, 0)}
		}},
		{"another peer does not split it while fresh pieces remain", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.Pick(0, 6, nil)
			return p.Pick(1, 4, nil), []Block{blk(2, 0), blk(2, 1), blk(2, 2), blk(2, 3)}
		}},
		{"abandoned piece is taken before fresh ones", func(t *testing.T, p *Picker) ([]Block, []Block) {
			got := p.Pick(0, 4, nil)
			p.Received(0, got[0])
			p.Received(0, got[1])
			p.Release(0)
			return p.Pick(1, 3, nil), []Block{blk(0, 2), blk(0, 3), blk(1, 0)}
		}},
		{"rejected block goes back to its piece's peer", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.Pick(0, 4, nil)
			p.Rejected(0, blk(0, 1))
			return p.Pick(0, 2, nil), []Block{blk(0, 1), blk(1, 0)}
		}},
		{"PickStarted finishes started pieces and starts none", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.Pick(0, 6, nil) // piece 0 and half of piece 1
			if n := p.Started(); n != 2 {
				t.Fatalf("Started() = %d after starting two pieces", n)
			}
			return p.PickStarted(0, all, nil), []Block{blk(1, 2), blk(1, 3)}
		}},
		{"PickStarted starts the piece a reader is in, not its readahead", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.SetReader(1, int64(5*4*bs), int64(3*4*bs)) // in piece 5, window 5–7
			return p.PickStarted(0, all, nil), []Block{blk(5, 0), blk(5, 1), blk(5, 2), blk(5, 3)}
		}},
		{"Started counts down as pieces verify", func(t *testing.T, p *Picker) ([]Block, []Block) {
			for _, b := range p.Pick(0, 4, nil) {
				p.Received(0, b)
			}
			if n := p.Started(); n != 1 {
				t.Fatalf("Started() = %d with one piece waiting for its hash", n)
			}
			p.Verified(0)
			if n := p.Started(); n != 0 {
				t.Fatalf("Started() = %d after the piece verified", n)
			}
			return p.PickStarted(0, all, nil), nil
		}},
		{"split when nothing fresh remains", func(t *testing.T, p *Picker) ([]Block, []Block) {
			p.SetWanted(0, 1)
			p.Pick(0, 2, nil)
			// Two more would be endgame duplicates of peer 0's blocks.
			return p.Pick(1, 2, nil), []Block{blk(0, 2), blk(0, 3)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTest(t, 8, 4)
			p.AddPeer(0)
			p.AddPeer(1)
			p.PeerHaveAll(0)
			p.PeerHaveAll(1)
			got, want := tt.run(t, p)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			ok(t, p)
		})
	}
}

func TestWantedRange(t *testing.T) {
	tests := []struct {
		name string
		set  func(p *Picker)
		want []int
	}{
		{"nothing wanted by default", func(p *Picker) {}, nil},
		{"range respected", func(p *Picker) { p.SetWanted(2, 5) }, []int{2, 3, 4}},
		{"narrowed range", func(p *Picker) { p.SetWanted(0, 8); p.SetWanted(4, 6) }, []int{4, 5}},
		{"moved range", func(p *Picker) { p.SetWanted(0, 2); p.SetWanted(6, 8) }, []int{6, 7}},
		{"all", func(p *Picker) { p.SetWantedAll() }, span(0, 8)},
		{"empty range", func(p *Picker) { p.SetWantedAll(); p.SetWanted(3, 3) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{PieceLength: 2 * bs, TotalLength: 16 * bs})
			p.AddPeer(0)
			p.PeerHaveAll(0)
			tt.set(p)
			got := order(p.Pick(0, all, nil))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
			if p.Remaining() != len(tt.want) {
				t.Fatalf("Remaining = %d, want %d", p.Remaining(), len(tt.want))
			}
			ok(t, p)
		})
	}
}

func TestPeerLackingPieces(t *testing.T) {
	tests := []struct {
		name     string
		announce func(p *Picker)
		want     []int
	}{
		{"no announcements", func(p *Picker) {}, nil},
		{"have none", func(p *Picker) { p.PeerHaveNone(0) }, nil},
		{"empty bitfield", func(p *Picker) { p.PeerBitfield(0, bitfield.New(8)) }, nil},
		{"one piece", func(p *Picker) { p.PeerHave(0, 3) }, []int{3}},
		{"only pieces we have", func(p *Picker) { p.PeerHave(0, 1); p.SetHave(1) }, nil},
		{"urgent piece it lacks", func(p *Picker) { p.PeerHave(0, 2); p.SetReader(1, 0, 4*bs) }, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTest(t, 8, 2)
			p.AddPeer(0)
			tt.announce(p)
			got := order(p.Pick(0, all, nil))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
			ok(t, p)
		})
	}
}

func TestNoDuplicatesOutsideEndgame(t *testing.T) {
	p := New(Config{PieceLength: 4 * bs, TotalLength: 40 * bs, EndgameDup: -1})
	p.SetWantedAll()
	for id := range PeerID(3) {
		p.AddPeer(id)
		p.PeerHaveAll(id)
	}
	p.SetReader(1, 5*bs, 8*bs)
	seen := map[Block]PeerID{}
	for round := 0; ; round++ {
		n := 0
		for id := range PeerID(3) {
			for _, b := range p.Pick(id, 3, nil) {
				if prev, dup := seen[b]; dup {
					t.Fatalf("%v requested from %d and %d", b, prev, id)
				}
				seen[b] = id
				n++
			}
		}
		ok(t, p)
		if n == 0 {
			break
		}
	}
	if len(seen) != 40 {
		t.Fatalf("%d blocks requested, want 40", len(seen))
	}
	total := 0
	for id := range PeerID(3) {
		total += p.InFlight(id)
	}
	if total != 40 {
		t.Fatalf("in flight %d, want 40", total)
	}
}

func TestEndgame(t *testing.T) {
	setup := func(dup int) *Picker {
		p := New(Config{PieceLength: 4 * bs, TotalLength: 8 * bs, EndgameDup: dup})
		p.SetWantedAll()
		for id := range PeerID(4) {
			p.AddPeer(id)
			p.PeerHaveAll(id)
		}
		return p
	}
	t.Run("duplicates capped and never twice to a peer", func(t *testing.T) {
		p := setup(0)
		if n := len(p.Pick(0, all, nil)); n != 8 {
			t.Fatalf("first peer got %d blocks, want 8", n)
		}
		for _, c := range []struct {
			id   PeerID
			want int
		}{{1, 8}, {2, 8}, {3, 0}, {0, 0}, {1, 0}} {
			if n := len(p.Pick(c.id, all, nil)); n != c.want {
				t.Fatalf("peer %d got %d duplicates, want %d", c.id, n, c.want)
			}
			ok(t, p)
		}
	})
	t.Run("receipt cancels the others", func(t *testing.T) {
		p := setup(0)
		p.Pick(0, all, nil)
		p.Pick(1, all, nil)
		p.Pick(2, all, nil)
		accepted, done, cancel := p.Received(1, blk(0, 0))
		slices.Sort(cancel)
		if !accepted || done || !slices.Equal(cancel, []PeerID{0, 2}) {
			t.Fatalf("Received = %v, %v, %v; want true, false, [0 2]", accepted, done, cancel)
		}
		for id, want := range []int{7, 7, 7, 0} {
			if got := p.InFlight(PeerID(id)); got != want {
				t.Fatalf("InFlight(%d) = %d, want %d", id, got, want)
			}
		}
		if accepted, _, _ := p.Received(0, blk(0, 0)); accepted {
			t.Fatal("cancelled copy accepted")
		}
		// A freed duplicate slot is not reused for a received block.
		if got := p.Pick(3, 1, nil); slices.Contains(got, blk(0, 0)) {
			t.Fatal("received block requested again")
		}
		ok(t, p)
	})
	t.Run("rejecting the first copy keeps the block in flight", func(t *testing.T) {
		p := setup(0)
		p.Pick(0, all, nil)
		p.Pick(1, all, nil)
		p.Rejected(0, blk(1, 3))
		if got := p.Pick(2, all, nil); !slices.Contains(got, blk(1, 3)) || len(got) != 8 {
			t.Fatalf("third peer got %v", got)
		}
		if accepted, done, cancel := p.Received(1, blk(1, 3)); !accepted || done || !slices.Equal(cancel, []PeerID{2}) {
			t.Fatalf("Received = %v, %v, %v", accepted, done, cancel)
		}
		ok(t, p)
	})
	t.Run("off when disabled", func(t *testing.T) {
		p := setup(-1)
		p.Pick(0, all, nil)
		if got := p.Pick(1, all, nil); len(got) != 0 {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("not while a wanted piece is unrequested", func(t *testing.T) {
		p := New(Config{PieceLength: 4 * bs, TotalLength: 12 * bs})
		p.SetWantedAll()
		for id := range PeerID(3) {
			p.AddPeer(id)
		}
		p.PeerHaveAll(0)
		p.PeerBitfield(1, bf(3, 0, 1))
		p.PeerBitfield(2, bf(3, 0, 1))
		p.Pick(1, 4, nil) // piece 0
		// Piece 2 is still unrequested (only peer 0 has it): no endgame.
		got := p.Pick(2, all, nil)
		if want := []Block{blk(1, 0), blk(1, 1), blk(1, 2), blk(1, 3)}; !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		if got := p.Pick(1, all, nil); len(got) != 0 {
			t.Fatalf("duplicates %v before endgame", got)
		}
		p.Pick(0, 4, nil) // piece 2: now everything is in flight
		if got := p.Pick(1, all, nil); len(got) != 4 {
			t.Fatalf("endgame gave %v, want piece 1's 4 blocks", got)
		}
		ok(t, p)
	})
}

func TestRemovePeerReleases(t *testing.T) {
	p := newTest(t, 4, 4)
	p.AddPeer(0)
	p.AddPeer(1)
	p.PeerHaveAll(0)
	p.PeerBitfield(1, bf(4, 0, 1, 2))
	picked := p.Pick(0, 6, nil)
	p.Received(0, picked[0])
	released := p.RemovePeer(0)
	if want := picked[1:]; !slices.Equal(released, want) {
		t.Fatalf("released %v, want %v", released, want)
	}
	if p.Availability(3) != 0 || p.Availability(0) != 1 {
		t.Fatalf("availability %d, %d after removal", p.Availability(3), p.Availability(0))
	}
	ok(t, p)
	got := p.Pick(1, all, nil)
	for _, b := range released {
		if p.PeerHas(1, b.Piece) && !slices.Contains(got, b) {
			t.Fatalf("released %v not picked again: %v", b, got)
		}
	}
	ok(t, p)
	// The ID can be reused.
	p.AddPeer(0)
	if p.InFlight(0) != 0 || p.Interesting(0) {
		t.Fatal("reused ID kept state")
	}
}

func TestRejected(t *testing.T) {
	tests := []struct {
		name      string
		reject    []Block
		inflight  int
		nextPiece []Block // what another peer picks next (only piece 0 wanted)
	}{
		{"one block back", []Block{blk(0, 2)}, 3, []Block{blk(0, 2)}},
		{"unknown block ignored", []Block{blk(1, 0)}, 4, nil},
		{"twice counts once", []Block{blk(0, 2), blk(0, 2)}, 3, []Block{blk(0, 2)}},
		{"malformed ignored", []Block{{Piece: 0, Begin: 1, Length: bs}}, 4, nil},
		{"everything back", []Block{blk(0, 0), blk(0, 1), blk(0, 2), blk(0, 3)}, 0, []Block{blk(0, 0), blk(0, 1), blk(0, 2), blk(0, 3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{PieceLength: 4 * bs, TotalLength: 16 * bs, EndgameDup: -1})
			p.SetWanted(0, 1)
			p.AddPeer(0)
			p.AddPeer(1)
			p.PeerHaveAll(0)
			p.PeerHaveAll(1)
			p.Pick(0, all, nil)
			for _, b := range tt.reject {
				p.Rejected(0, b)
				ok(t, p)
			}
			if got := p.InFlight(0); got != tt.inflight {
				t.Fatalf("InFlight = %d, want %d", got, tt.inflight)
			}
			if got := p.Pick(1, all, nil); !slices.Equal(got, tt.nextPiece) {
				t.Fatalf("next pick %v, want %v", got, tt.nextPiece)
			}
			ok(t, p)
		})
	}
}

func TestReceivedRefused(t *testing.T) {
	tests := []struct {
		name string
		b    func(p *Picker) Block
	}{
		{"unrequested", func(p *Picker) Block { return blk(2, 0) }},
		{"requested from another peer", func(p *Picker) Block { p.Pick(1, 4, nil); return blk(1, 0) }},
		{"duplicate", func(p *Picker) Block { p.Received(0, blk(0, 1)); return blk(0, 1) }},
		{"rejected since", func(p *Picker) Block { p.Rejected(0, blk(0, 1)); return blk(0, 1) }},
		{"overrunning length", func(p *Picker) Block { return Block{Piece: 0, Begin: 3 * bs, Length: bs + 1} }},
		{"begin past the piece", func(p *Picker) Block { return Block{Piece: 0, Begin: 4 * bs, Length: bs} }},
		{"misaligned begin", func(p *Picker) Block { return Block{Piece: 0, Begin: 100, Length: bs} }},
		{"negative begin", func(p *Picker) Block { return Block{Piece: 0, Begin: -bs, Length: bs} }},
		{"short length", func(p *Picker) Block { return Block{Piece: 0, Begin: 0, Length: bs - 1} }},
		{"piece out of range", func(p *Picker) Block { return blk(4, 0) }},
		{"negative piece", func(p *Picker) Block { return blk(-1, 0) }},
		{"piece already verified", func(p *Picker) Block {
			for k := range 4 {
				p.Received(0, blk(0, k))
			}
			p.Verified(0)
			return blk(0, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTest(t, 4, 4)
			p.AddPeer(0)
			p.AddPeer(1)
			p.PeerHaveAll(0)
			p.PeerHaveAll(1)
			p.Pick(0, 4, nil) // piece 0
			b := tt.b(p)
			before := p.InFlight(0)
			if accepted, done, cancel := p.Received(0, b); accepted || done || cancel != nil {
				t.Fatalf("Received(%v) = %v, %v, %v", b, accepted, done, cancel)
			}
			if p.InFlight(0) != before {
				t.Fatal("refused block changed the in-flight count")
			}
			ok(t, p)
		})
	}
}

func TestGeometry(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		pieces      int
		lastLengths []int // block lengths of the last piece
		firstBlocks []int // block lengths of piece 0
	}{
		{
			name:        "short last piece and short last block",
			cfg:         Config{PieceLength: 4 * bs, TotalLength: 3*4*bs + 40000},
			pieces:      4,
			lastLengths: []int{bs, bs, 40000 - 2*bs},
			firstBlocks: []int{bs, bs, bs, bs},
		},
		{
			name:        "single short piece",
			cfg:         Config{PieceLength: 4 * bs, TotalLength: 1000},
			pieces:      1,
			lastLengths: []int{1000},
			firstBlocks: []int{1000},
		},
		{
			name:        "block size not dividing the piece",
			cfg:         Config{PieceLength: 25000, TotalLength: 60000, BlockSize: 10000},
			pieces:      3,
			lastLengths: []int{10000},
			firstBlocks: []int{10000, 10000, 5000},
		},
		{
			name:        "piece smaller than a block",
			cfg:         Config{PieceLength: 4096, TotalLength: 3 * 4096, NumPieces: 3},
			pieces:      3,
			lastLengths: []int{4096},
			firstBlocks: []int{4096},
		},
		{
			name:        "many blocks per piece",
			cfg:         Config{PieceLength: 100 * bs, TotalLength: 150 * bs},
			pieces:      2,
			lastLengths: slices.Repeat([]int{bs}, 50),
			firstBlocks: slices.Repeat([]int{bs}, 100),
		},
	}
	lengths := func(bs []Block, piece int) []int {
		var out []int
		for _, b := range bs {
			if b.Piece == piece {
				out = append(out, b.Length)
			}
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.cfg)
			if p.NumPieces() != tt.pieces {
				t.Fatalf("NumPieces = %d, want %d", p.NumPieces(), tt.pieces)
			}
			p.SetWantedAll()
			p.AddPeer(0)
			p.PeerHaveAll(0)
			got := p.Pick(0, all, nil)
			last := tt.pieces - 1
			if l := lengths(got, last); !slices.Equal(l, tt.lastLengths) {
				t.Fatalf("last piece blocks %v, want %v", l, tt.lastLengths)
			}
			if l := lengths(got, 0); !slices.Equal(l, tt.firstBlocks) {
				t.Fatalf("first piece blocks %v, want %v", l, tt.firstBlocks)
			}
			var sum int64
			for _, b := range got {
				sum += int64(b.Length)
			}
			if sum != tt.cfg.TotalLength {
				t.Fatalf("blocks cover %d bytes, want %d", sum, tt.cfg.TotalLength)
			}
			// A full-size copy of the short last block is refused.
			lb := got[len(got)-1]
			if lb.Length < p.blockSize {
				if acc, _, _ := p.Received(0, Block{Piece: lb.Piece, Begin: lb.Begin, Length: p.blockSize}); acc {
					t.Fatal("overlong last block accepted")
				}
			}
			done := 0
			for _, b := range got {
				acc, d, _ := p.Received(0, b)
				if !acc {
					t.Fatalf("block %v refused", b)
				}
				if d {
					done++
				}
			}
			if done != tt.pieces {
				t.Fatalf("%d pieces completed, want %d", done, tt.pieces)
			}
			ok(t, p)
		})
	}
}

func TestVerifiedAndFailed(t *testing.T) {
	// Piece 0 is split between peers 0 and 1 (only it is wanted).
	setup := func(t *testing.T) *Picker {
		p := New(Config{PieceLength: 4 * bs, TotalLength: 16 * bs, EndgameDup: -1})
		p.SetWanted(0, 2)
		for id := range PeerID(3) {
			p.AddPeer(id)
			p.PeerHaveAll(id)
		}
		a := p.Pick(0, 2, nil)
		p.Pick(1, 4, nil) // piece 1
		b := p.Pick(2, 2, nil)
		if len(a) != 2 || len(b) != 2 || a[0].Piece != 0 || b[0].Piece != 0 {
			t.Fatalf("setup picks %v %v", a, b)
		}
		for i, bl := range append(a, b...) {
			_, done, _ := p.Received(PeerID(i/2*2), bl)
			if done != (i == 3) {
				t.Fatalf("pieceDone = %v after %d blocks", done, i+1)
			}
		}
		return p
	}
	t.Run("failed returns distinct senders and re-picks", func(t *testing.T) {
		p := setup(t)
		senders := p.Failed(0)
		slices.Sort(senders)
		if !slices.Equal(senders, []PeerID{0, 2}) {
			t.Fatalf("senders %v, want [0 2]", senders)
		}
		if p.Have(0) || p.Remaining() != 2 {
			t.Fatal("failed piece counted as ours")
		}
		ok(t, p)
		if got := order(p.Pick(0, all, nil)); !slices.Equal(got, []int{0}) {
			t.Fatalf("re-pick %v, want [0]", got)
		}
		ok(t, p)
	})
	t.Run("verified stops picking it", func(t *testing.T) {
		p := setup(t)
		senders := p.Verified(0)
		slices.Sort(senders)
		if !slices.Equal(senders, []PeerID{0, 2}) {
			t.Fatalf("senders %v, want [0 2]", senders)
		}
		if !p.Have(0) || p.Remaining() != 1 {
			t.Fatal("verified piece not ours")
		}
		if got := p.Pick(0, all, nil); len(got) != 0 {
			t.Fatalf("picked %v after verification", got)
		}
		if s := p.Failed(0); s != nil {
			t.Fatalf("Failed on a verified piece returned %v", s)
		}
		ok(t, p)
	})
	t.Run("one sender", func(t *testing.T) {
		p := newTest(t, 2, 4)
		p.AddPeer(5)
		p.PeerHaveAll(5)
		for _, b := range p.Pick(5, 4, nil) {
			p.Received(5, b)
		}
		if s := p.Verified(0); !slices.Equal(s, []PeerID{5}) {
			t.Fatalf("senders %v", s)
		}
		ok(t, p)
	})
	t.Run("set have drops requests in flight", func(t *testing.T) {
		p := newTest(t, 2, 4)
		p.AddPeer(0)
		p.PeerHaveAll(0)
		p.Pick(0, all, nil)
		p.SetHave(1)
		if p.InFlight(0) != 4 || p.Remaining() != 1 {
			t.Fatalf("InFlight %d, Remaining %d", p.InFlight(0), p.Remaining())
		}
		ok(t, p)
	})
}

func TestInteresting(t *testing.T) {
	p := New(Config{PieceLength: bs, TotalLength: 8 * bs})
	p.AddPeer(0)
	p.AddPeer(1)
	p.AddPeer(2)
	p.PeerHave(0, 3)
	p.PeerHaveAll(1)
	steps := []struct {
		name string
		act  func()
		want [3]bool
	}{
		{"nothing wanted", func() {}, [3]bool{false, false, false}},
		{"all wanted", p.SetWantedAll, [3]bool{true, true, false}},
		{"its only piece arrives", func() { p.SetHave(3) }, [3]bool{false, true, false}},
		{"it announces another", func() { p.PeerHave(0, 5) }, [3]bool{true, true, false}},
		{"that piece unwanted", func() { p.SetWanted(0, 5) }, [3]bool{false, true, false}},
		{"a reader needs it", func() { p.SetReader(1, 5*bs, 1) }, [3]bool{true, true, false}},
		{"reader gone", func() { p.RemoveReader(1) }, [3]bool{false, true, false}},
		{"bitfield", func() { p.PeerBitfield(2, bf(8, 1, 6)) }, [3]bool{false, true, true}},
		{"everything wanted is ours", func() {
			for i := range 5 {
				p.SetHave(i)
			}
		}, [3]bool{false, false, false}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.act()
			for id, want := range s.want {
				if got := p.Interesting(PeerID(id)); got != want {
					t.Fatalf("Interesting(%d) = %v, want %v", id, got, want)
				}
			}
			ok(t, p)
		})
	}
}

func TestPanics(t *testing.T) {
	p := newTest(t, 4, 1)
	p.AddPeer(0)
	tests := []struct {
		name string
		f    func()
	}{
		{"unknown peer", func() { p.Pick(1, 1, nil) }},
		{"negative peer", func() { p.AddPeer(-1) }},
		{"added twice", func() { p.AddPeer(0) }},
		{"piece out of range", func() { p.PeerHave(0, 4) }},
		{"have out of range", func() { p.SetHave(-1) }},
		{"bad wanted range", func() { p.SetWanted(3, 2) }},
		{"bitfield length", func() { p.PeerBitfield(0, bitfield.New(5)) }},
		{"negative reader position", func() { p.SetReader(0, -1, 0) }},
		{"zero piece length", func() { New(Config{TotalLength: 1}) }},
		{"inconsistent piece count", func() { New(Config{PieceLength: 10, TotalLength: 100, NumPieces: 9}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.f()
		})
	}
}

func TestLateBitfieldReordersBuckets(t *testing.T) {
	// Many availability changes on a large bucket, then a full drain: every
	// piece is picked exactly once and compaction keeps the order sound.
	p := New(Config{PieceLength: bs, TotalLength: 5000 * bs, Rand: rand.New(rand.NewPCG(1, 2))})
	p.SetWantedAll()
	r := rand.New(rand.NewPCG(3, 4))
	for id := range PeerID(4) {
		p.AddPeer(id)
		b := bitfield.New(5000)
		for i := range 5000 {
			if r.IntN(3) > 0 {
				b.Set(i)
			}
		}
		p.PeerBitfield(id, b)
	}
	ok(t, p)
	p.RemovePeer(2)
	p.PeerHaveNone(3)
	ok(t, p)
	p.AddPeer(9)
	p.PeerHaveAll(9)
	got := p.Pick(9, all, nil)
	if len(got) != 5000 {
		t.Fatalf("picked %d pieces, want 5000", len(got))
	}
	prev := -1
	for _, b := range got {
		a := int(p.avail[b.Piece])
		if a < prev {
			t.Fatalf("piece %d with availability %d after %d", b.Piece, a, prev)
		}
		prev = a
	}
	ok(t, p)
}

func TestFallbackScan(t *testing.T) {
	// A peer whose few pieces hide behind many rarer ones it lacks still
	// gets them, through the bitfield walk.
	const n = 4096
	p := New(Config{PieceLength: bs, TotalLength: n * bs})
	p.SetWantedAll()
	p.AddPeer(0)
	p.PeerBitfield(0, bf(n, span(0, n-1)...))
	p.AddPeer(1)
	mine := []int{4000, 4001, 4095}
	p.PeerBitfield(1, bf(n, mine...))
	// mine: 4000 and 4001 have availability 2, 4095 has 1 but sits in a
	// bucket with ~4000 pieces peer 1 lacks.
	got := order(p.Pick(1, all, nil))
	slices.Sort(got)
	if !slices.Equal(got, mine) {
		t.Fatalf("got %v, want %v", got, mine)
	}
	ok(t, p)
}

func TestSparsePeerSampling(t *testing.T) {
	// A peer holding a sliver of what we need is served by sampling, which
	// still prefers the rarer of the candidates it sees.
	const n = 4096
	p := New(Config{PieceLength: bs, TotalLength: n * bs})
	p.SetWantedAll()
	p.AddPeer(0)
	p.PeerBitfield(0, bf(n, 100, 101, 102))
	p.AddPeer(1)
	p.PeerBitfield(1, bf(n, 100, 102))
	p.AddPeer(2)
	p.PeerBitfield(2, bf(n, 100))
	got := order(p.Pick(0, all, nil))
	if want := []int{101, 102, 100}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	ok(t, p)
}

func TestScanBudgetFallback(t *testing.T) {
	// The peer holds plenty of pieces, but every bucket entry before them
	// is one it lacks: the bucket walk gives up and sampling finds them.
	const n = 4096
	p := New(Config{PieceLength: bs, TotalLength: n * bs})
	p.SetWantedAll()
	p.AddPeer(0)
	p.PeerBitfield(0, bf(n, span(0, n-1)...))
	p.AddPeer(1)
	p.PeerBitfield(1, bf(n, span(3000, n-1)...))
	var even []int
	for i := 3000; i < n; i += 2 {
		even = append(even, i)
	}
	p.AddPeer(2)
	p.PeerBitfield(2, bf(n, even...))
	got := order(p.Pick(1, sampleSize/2, nil))
	if len(got) != sampleSize/2 {
		t.Fatalf("got %d pieces, want %d", len(got), sampleSize/2)
	}
	// Within a sample the rarer (odd, availability 2) pieces go first.
	for _, i := range got {
		if i%2 == 0 {
			t.Fatalf("piece %d picked before rarer ones: %v", i, got)
		}
	}
	ok(t, p)
	if got := p.Pick(1, all, nil); len(got) != n-1-3000-sampleSize/2 {
		t.Fatalf("second pick got %d blocks", len(got))
	}
	ok(t, p)
}
