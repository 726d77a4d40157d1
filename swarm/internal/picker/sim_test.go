package picker

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
)

// sim drives a Picker with random events and keeps the engine's view of it:
// which requests are out to whom, and who delivered which piece's blocks.
type sim struct {
	t         *testing.T
	r         *rand.Rand
	p         *Picker
	n         int                       // pieces
	peers     []PeerID                  // live peers
	out       map[PeerID]map[Block]bool // requests in flight, as the engine sees them
	delivered map[int]map[PeerID]bool   // accepted senders per piece since it was last reset
	hashing   []int                     // pieces complete and awaiting Verified or Failed
	nextID    PeerID                    // next ID to hand out on churn
	dupSeen   bool                      // some Pick returned an endgame duplicate
	refused   int                       // blocks refused on purpose, for the log
}

func newSim(t *testing.T, seed uint64) *sim {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	blockSize := 16
	pieceLen := int64(blockSize * (1 + r.IntN(5)))
	if r.IntN(3) == 0 {
		pieceLen += int64(r.IntN(blockSize)) // pieces that are not whole blocks
	}
	n := 20 + r.IntN(40)
	total := pieceLen*int64(n-1) + 1 + r.Int64N(pieceLen)
	cfg := Config{PieceLength: pieceLen, TotalLength: total, BlockSize: blockSize, EndgameDup: []int{-1, 0, 1, 3}[r.IntN(4)]}
	if seed%2 == 1 {
		cfg.Rand = rand.New(rand.NewPCG(seed, 1))
	}
	s := &sim{t: t, r: r, p: New(cfg), n: n, out: map[PeerID]map[Block]bool{}, delivered: map[int]map[PeerID]bool{}}
	if r.IntN(2) == 0 {
		s.p.SetWantedAll()
	} else {
		s.p.SetWanted(r.IntN(n/2), n/2+r.IntN(n/2+1))
	}
	for range 5 {
		s.addPeer()
	}
	return s
}

func (s *sim) addPeer() {
	id := s.nextID
	s.nextID++
	s.p.AddPeer(id)
	s.peers = append(s.peers, id)
	s.out[id] = map[Block]bool{}
	switch s.r.IntN(5) {
	case 0:
		s.p.PeerHaveAll(id)
	case 1:
		// announcements arrive later, by have messages
	default:
		b := bitfield.New(s.n)
		density := s.r.Float64()
		for i := range s.n {
			if s.r.Float64() < density {
				b.Set(i)
			}
		}
		s.p.PeerBitfield(id, b)
	}
}

func (s *sim) randPeer() PeerID { return s.peers[s.r.IntN(len(s.peers))] }

// randOut returns a random request in flight, if any.
func (s *sim) randOut() (PeerID, Block, bool) {
	var ids []PeerID
	for _, id := range s.peers {
		if len(s.out[id]) > 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, Block{}, false
	}
	id := ids[s.r.IntN(len(ids))]
	bs := slices.SortedFunc(maps.Keys(s.out[id]), func(a, b Block) int {
		if a.Piece != b.Piece {
			return a.Piece - b.Piece
		}
		return a.Begin - b.Begin
	})
	return id, bs[s.r.IntN(len(bs))], true
}

func (s *sim) pick(id PeerID, max int) {
	t := s.t
	got := s.p.Pick(id, max, nil)
	if len(got) > max {
		t.Fatalf("Pick(%d, %d) returned %d blocks", id, max, len(got))
	}
	dup := false
	for _, b := range got {
		if s.out[id][b] {
			t.Fatalf("block %v requested twice from peer %d", b, id)
		}
		if !s.p.PeerHas(id, b.Piece) || s.p.Have(b.Piece) {
			t.Fatalf("block %v picked for peer %d, which lacks it, or we have it", b, id)
		}
		for _, o := range s.peers {
			if s.out[o][b] {
				dup = true
			}
		}
		s.out[id][b] = true
	}
	if dup {
		s.dupSeen = true
		if s.p.endgameDup == 0 || !s.p.endgame() {
			t.Fatalf("duplicate request outside endgame (cap %d)", s.p.endgameDup)
		}
	}
}

func (s *sim) receive(id PeerID, b Block) {
	t := s.t
	accepted, done, cancel := s.p.Received(id, b)
	if !s.out[id][b] {
		if accepted {
			t.Fatalf("block %v from %d accepted without a request", b, id)
		}
		s.refused++
		return
	}
	if !accepted {
		t.Fatalf("requested block %v from %d refused", b, id)
	}
	delete(s.out[id], b)
	for _, c := range cancel {
		if c == id || !s.out[c][b] {
			t.Fatalf("cancel for peer %d, which did not have %v in flight", c, b)
		}
		delete(s.out[c], b)
	}
	for _, o := range s.peers {
		if s.out[o][b] {
			t.Fatalf("peer %d still has received block %v in flight, not cancelled", o, b)
		}
	}
	if s.delivered[b.Piece] == nil {
		s.delivered[b.Piece] = map[PeerID]bool{}
	}
	s.delivered[b.Piece][id] = true
	if done {
		s.hashing = append(s.hashing, b.Piece)
	}
}

func (s *sim) hash(fail bool) {
	t := s.t
	j := s.r.IntN(len(s.hashing))
	i := s.hashing[j]
	s.hashing = slices.Delete(s.hashing, j, j+1)
	var senders []PeerID
	if fail {
		senders = s.p.Failed(i)
	} else {
		senders = s.p.Verified(i)
	}
	want := slices.Sorted(maps.Keys(s.delivered[i]))
	slices.Sort(senders)
	if !slices.Equal(senders, want) {
		t.Fatalf("piece %d senders %v, want %v", i, senders, want)
	}
	delete(s.delivered, i)
	if fail == s.p.Have(i) {
		t.Fatalf("piece %d: Have = %v after fail=%v", i, s.p.Have(i), fail)
	}
}

func (s *sim) remove(id PeerID) {
	t := s.t
	released := s.p.RemovePeer(id)
	if len(released) != len(s.out[id]) {
		t.Fatalf("RemovePeer(%d) released %d, had %d in flight", id, len(released), len(s.out[id]))
	}
	for _, b := range released {
		if !s.out[id][b] {
			t.Fatalf("released %v, which was not in flight to %d", b, id)
		}
	}
	delete(s.out, id)
	s.peers = slices.DeleteFunc(s.peers, func(o PeerID) bool { return o == id })
}

func (s *sim) release(id PeerID) {
	released := s.p.Release(id)
	if len(released) != len(s.out[id]) {
		s.t.Fatalf("Release(%d) released %d, had %d in flight", id, len(released), len(s.out[id]))
	}
	clear(s.out[id])
}

// setHave declares a random piece ours, as a resume would; the Picker forgets
// requests for it.
func (s *sim) setHave() {
	i := s.r.IntN(s.n)
	s.p.SetHave(i)
	for _, id := range s.peers {
		for b := range s.out[id] {
			if b.Piece == i {
				delete(s.out[id], b)
			}
		}
	}
	s.hashing = slices.DeleteFunc(s.hashing, func(h int) bool { return h == i })
	delete(s.delivered, i)
}

func (s *sim) check(step int, what string) {
	t := s.t
	if err := s.p.checkInvariants(); err != nil {
		t.Fatalf("step %d (%s): %v", step, what, err)
	}
	for _, id := range s.peers {
		if got := s.p.InFlight(id); got != len(s.out[id]) {
			t.Fatalf("step %d (%s): InFlight(%d) = %d, engine counts %d", step, what, id, got, len(s.out[id]))
		}
	}
}

func (s *sim) randomStep(step int) {
	r, p := s.r, s.p
	var what string
	switch x := r.IntN(100); {
	case x < 30:
		what = "pick"
		s.pick(s.randPeer(), 1+r.IntN(12))
	case x < 60:
		what = "receive"
		if id, b, ok := s.randOut(); ok {
			s.receive(id, b)
		}
	case x < 64:
		what = "receive unrequested"
		i := r.IntN(s.n)
		k := r.IntN(p.nblocks(i))
		b := Block{Piece: i, Begin: k * p.blockSize, Length: p.blockLen(i, k)}
		if r.IntN(4) == 0 {
			b.Length++
		}
		s.receive(s.randPeer(), b)
	case x < 70:
		what = "reject"
		if id, b, ok := s.randOut(); ok {
			p.Rejected(id, b)
			delete(s.out[id], b)
		}
	case x < 80:
		what = "hash"
		if len(s.hashing) > 0 {
			s.hash(r.IntN(4) == 0)
		}
	case x < 85:
		what = "have"
		p.PeerHave(s.randPeer(), r.IntN(s.n))
	case x < 87:
		what = "churn"
		s.remove(s.randPeer())
		s.addPeer()
	case x < 89:
		what = "release"
		s.release(s.randPeer())
	case x < 93:
		what = "reader"
		total := p.pieceLength*int64(s.n-1) + p.lastLength
		p.SetReader(r.IntN(3), r.Int64N(total+10), r.Int64N(4*p.pieceLength))
	case x < 95:
		what = "remove reader"
		p.RemoveReader(r.IntN(3))
	case x < 97:
		what = "wanted"
		from := r.IntN(s.n)
		p.SetWanted(from, from+r.IntN(s.n-from+1))
	case x < 98:
		what = "set have"
		s.setHave()
	default:
		what = "bitfield"
		id := s.randPeer()
		b := bitfield.New(s.n)
		for i := range s.n {
			if r.IntN(2) == 0 {
				b.Set(i)
			}
		}
		// Announcements replace old ones; requests in flight stay.
		p.PeerBitfield(id, b)
	}
	s.check(step, what)
}

// finish gives every peer every piece and runs a cooperative engine until
// all wanted pieces are ours.
func (s *sim) finish() {
	t, p := s.t, s.p
	for _, id := range s.peers {
		p.PeerHaveAll(id)
	}
	for step := 0; p.Remaining() > 0; step++ {
		if step > 20000 {
			t.Fatalf("no completion: %d pieces remain", p.Remaining())
		}
		id := s.randPeer()
		switch x := s.r.IntN(10); {
		case x < 4:
			s.pick(id, 1+s.r.IntN(16))
		case x < 8:
			if id, b, ok := s.randOut(); ok {
				s.receive(id, b)
			}
		case x < 9:
			if len(s.hashing) > 0 {
				s.hash(s.r.IntN(20) == 0)
			}
		default:
			if id, b, ok := s.randOut(); ok && s.r.IntN(3) == 0 {
				p.Rejected(id, b)
				delete(s.out[id], b)
			}
		}
		s.check(step, "finish")
	}
	for i := range s.n {
		if p.wanted.Has(i) && !p.Have(i) {
			t.Fatalf("wanted piece %d not ours", i)
		}
	}
}

func TestSimulation(t *testing.T) {
	dups := 0
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s := newSim(t, seed)
			for step := range 3000 {
				s.randomStep(step)
			}
			s.finish()
			t.Logf("%d pieces, %d block states, %d refused on purpose, endgame seen %v", s.n, len(s.p.parts), s.refused, s.dupSeen)
			if s.dupSeen {
				dups++
			}
		})
	}
	if dups == 0 {
		t.Error("no run reached endgame; the simulation does not cover it")
	}
}
