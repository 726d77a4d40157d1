// Package picker decides which blocks of a torrent to request from which
// peer.
//
// A Picker is a plain synchronous value owned by one torrent's run loop. It
// is fed events (pieces we verified, what peers announce, blocks that arrive
// or are refused, where readers are) and asked for decisions (Pick). It does
// no I/O, starts no goroutines and takes no locks. It does not hash, store or
// buffer data, time requests out, size peers' request queues or choose whom
// to unchoke: the engine does those and reports the outcome here.
//
// Pick serves, in order: the pieces readers need next (nearest byte first,
// across all readers); pieces already started; the rarest remaining wanted
// pieces; and, once every missing wanted block is in flight, endgame
// duplicates. All per-call work is incremental: no operation on the request
// path scans every piece.
//
// Misuse that can only be a bug in the caller (a piece index out of range,
// a PeerID that was never added) panics. Input that comes from the network
// (blocks in Received and Rejected) is checked and refused quietly instead.
package picker

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
)

// Defaults for the zero fields of Config.
const (
	// DefaultBlockSize is the request size every client uses (16 KiB).
	DefaultBlockSize = 16 << 10
	// DefaultEndgameDup is how many peers besides the first a block may be
	// requested from in endgame.
	DefaultEndgameDup = 2
)

// Bounds on the search for fresh pieces a non-seed peer has (pickFresh).
const (
	// scanBudget is how many fresh pieces the peer lacks pickFresh steps
	// over in the rarity buckets before it switches to sampling.
	scanBudget = 64
	// sampleSize is how many candidates pickFreshSample compares by
	// availability for each piece it starts.
	sampleSize = 32
	// sparseRatio: a peer holding fewer than 1/sparseRatio of the pieces
	// we need is sampled at once, without a bucket walk.
	sparseRatio = 16
)

// noPeer marks a block or piece that no peer is assigned to.
const noPeer int32 = -1

// PeerID is the small non-negative handle the engine assigns to a
// connection. IDs should be reused once freed, as file descriptors are: the
// Picker indexes a slice by them, so memory grows with the largest ID.
type PeerID int

// Block is one request: Length bytes at Begin within Piece.
type Block struct {
	Piece  int // piece index
	Begin  int // byte offset within the piece, a multiple of the block size
	Length int // the block size, or less for the last block of the last piece
}

// Config describes the torrent's geometry and the Picker's policies. The zero
// value of each optional field selects its documented default.
type Config struct {
	// NumPieces is the number of pieces. 0 derives it from TotalLength and
	// PieceLength; otherwise it must equal ⌈TotalLength/PieceLength⌉.
	NumPieces int
	// PieceLength is the length of every piece but the last. Required.
	PieceLength int64
	// TotalLength is the sum of the files' lengths. Required.
	TotalLength int64
	// BlockSize is the length of one request. 0 selects DefaultBlockSize.
	BlockSize int
	// EndgameDup caps how many additional peers a block may be requested
	// from in endgame. 0 selects DefaultEndgameDup; negative disables
	// endgame.
	EndgameDup int
	// Rand breaks ties between equally rare pieces, and picks where
	// sampling starts for peers that hold few pieces we need. nil makes
	// every choice a deterministic function of the events fed in: ties
	// then go in the order pieces reached their availability, which is
	// index order for a fresh Picker, except that when a piece leaves the
	// middle of its group the group's last piece takes its place.
	Rand *rand.Rand
}

// Picker tracks piece and block state for one torrent and picks requests.
// Create one with New. It is not safe for concurrent use.
type Picker struct {
	// Geometry and policy, fixed by New.
	numPieces   int        // ≥ 1
	pieceLength int64      // length of every piece but the last
	lastLength  int64      // length of the last piece, in (0, pieceLength]
	blockSize   int        // request size, > 0
	blocksPer   int        // blocks in a piece of pieceLength
	words       int        // uint64 words in a partial's block bitsets
	endgameDup  int        // ≥ 0; 0 means endgame is off
	rng         *rand.Rand // tie-breaks; nil for determinism

	have   bitfield.Bitfield // pieces verified (or declared so by SetHave)
	wanted bitfield.Bitfield // pieces set by SetWanted
	need   bitfield.Bitfield // wanted ∧ ¬have, kept in step with both

	avail []int32 // per piece: live non-seed peers that announced it
	seeds int     // live peers that have every piece; counted here, not in avail

	fresh    bitfield.Bitfield // need ∧ no block state: the rarest-first candidates
	slot     []int32           // per fresh piece: its index in buckets[avail[piece]].entries; -1 otherwise
	buckets  []bucket          // buckets[a] holds the fresh pieces with avail a
	scanFrom int               // where the next sample starts, rotated for fairness
	bulk     bool              // fresh is changing wholesale: peers' fresh counts are recounted after

	partialOf []int32    // per piece: index in parts of its block state, or -1
	parts     []*partial // every block state ever allocated; free ones have piece -1
	free      []int32    // indices in parts of free entries, reused before allocating
	open      []*partial // partials with a block neither requested nor received

	peers []peer // indexed by PeerID; live marks the added ones

	readers        []reader // by insertion; few
	urgent         []int32  // pieces in readers' windows, nearest first, distinct; may include pieces since acquired
	urgentDone     int      // urgent[:urgentDone] are ours or fully requested; reset when blocks are released
	urgentUnwanted []int32  // the urgent pieces outside wanted, for Interesting
}

// bucket holds the fresh pieces of one availability: entries[head:] is
// exactly that set, and slot[piece] is the piece's index in entries. Removal
// at the head advances head, so a seed taking pieces from the front keeps
// the insertion order; removal elsewhere moves the last entry into the gap.
type bucket struct {
	entries []int32 // entries before head are dead
	head    int     // first live entry
}

// live returns the number of pieces in bk.
func (bk *bucket) live() int { return len(bk.entries) - bk.head }

// partial is the block state of a piece that has been started: some block
// requested or received. Block k is bit k%64 of word k/64.
type partial struct {
	index      int32    // own position in Picker.parts, fixed
	piece      int32    // the piece tracked; -1 while on the free list
	nblocks    int32    // blocks in this piece
	nReceived  int32    // set bits in received
	nRequested int32    // set bits in requested
	owner      int32    // peer that last took blocks of it as a whole-piece pick; noPeer after it left
	openPos    int32    // index in Picker.open, or -1 when every block is requested or received
	received   []uint64 // blocks accepted by Received
	requested  []uint64 // blocks in flight to at least one peer; disjoint from received
	peer       []int32  // per block: first peer it is in flight to, or its sender once received; noPeer otherwise
	dups       []dup    // endgame: further peers a requested block is in flight to
	solo       bool     // claimed with ClaimSolo: no endgame duplicates until a release
}

// dup records that block is also in flight to peer (endgame).
type dup struct{ block, peer int32 }

// peer is what the Picker knows of one connection.
type peer struct {
	live     bool              // added and not removed
	seed     bool              // has every piece: counted in Picker.seeds, has unused
	has      bitfield.Bitfield // pieces it announced while !seed; zero-length until the first announcement
	interest int               // |has ∧ need| while !seed
	fresh    int               // |has ∧ Picker.fresh| while !seed
	inflight int               // blocks in flight to it, endgame duplicates included
}

// reader is one streaming position and its window of urgent pieces.
type reader struct {
	id          int   // the caller's rid, unique in Picker.readers
	pos         int64 // byte position, as last set
	first, last int   // window of pieces; empty when first > last
	cur         int   // cursor while merging windows in computeUrgent
}

// New returns a Picker for the torrent cfg describes, with nothing wanted
// and nothing held. It panics if the geometry is invalid.
func New(cfg Config) *Picker {
	if cfg.PieceLength <= 0 || cfg.TotalLength <= 0 {
		panic(fmt.Sprintf("picker: invalid lengths: piece %d, total %d", cfg.PieceLength, cfg.TotalLength))
	}
	n64 := (cfg.TotalLength-1)/cfg.PieceLength + 1
	if n64 > math.MaxInt32 {
		panic(fmt.Sprintf("picker: %d pieces is too many", n64))
	}
	n := int(n64)
	if cfg.NumPieces == 0 {
		cfg.NumPieces = n
	} else if cfg.NumPieces != n {
		panic(fmt.Sprintf("picker: NumPieces %d, but lengths give %d", cfg.NumPieces, n))
	}
	bs := cfg.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < 0 {
		panic(fmt.Sprintf("picker: invalid block size %d", bs))
	}
	blocksPer64 := (cfg.PieceLength-1)/int64(bs) + 1
	if blocksPer64 > math.MaxInt32 {
		panic(fmt.Sprintf("picker: %d blocks per piece is too many", blocksPer64))
	}
	dupN := cfg.EndgameDup
	switch {
	case dupN == 0:
		dupN = DefaultEndgameDup
	case dupN < 0:
		dupN = 0
	}
	p := &Picker{
		numPieces:   n,
		pieceLength: cfg.PieceLength,
		lastLength:  cfg.TotalLength - int64(n-1)*cfg.PieceLength,
		blockSize:   bs,
		blocksPer:   int(blocksPer64),
		words:       (int(blocksPer64) + 63) / 64,
		endgameDup:  dupN,
		rng:         cfg.Rand,
		have:        bitfield.New(n),
		wanted:      bitfield.New(n),
		need:        bitfield.New(n),
		fresh:       bitfield.New(n),
		avail:       make([]int32, n),
		slot:        make([]int32, n),
		partialOf:   make([]int32, n),
	}
	for i := range n {
		p.slot[i] = -1
		p.partialOf[i] = -1
	}
	return p
}

// NumPieces returns the number of pieces.
func (p *Picker) NumPieces() int { return p.numPieces }

// PieceLength returns the length of piece i. It panics if i is out of range.
func (p *Picker) PieceLength(i int) int64 {
	p.checkPiece(i)
	return p.pieceLen(i)
}

func (p *Picker) pieceLen(i int) int64 {
	if i == p.numPieces-1 {
		return p.lastLength
	}
	return p.pieceLength
}

// nblocks returns the number of blocks in piece i.
func (p *Picker) nblocks(i int) int {
	if i == p.numPieces-1 {
		return int((p.lastLength-1)/int64(p.blockSize)) + 1
	}
	return p.blocksPer
}

// blockLen returns the length of block k of piece i.
func (p *Picker) blockLen(i, k int) int {
	return int(min(int64(p.blockSize), p.pieceLen(i)-int64(k)*int64(p.blockSize)))
}

// blockIndex validates b against the geometry and returns its block number
// within the piece.
func (p *Picker) blockIndex(b Block) (int, bool) {
	if uint(b.Piece) >= uint(p.numPieces) || b.Begin < 0 || b.Begin%p.blockSize != 0 {
		return 0, false
	}
	k := b.Begin / p.blockSize
	if k >= p.nblocks(b.Piece) || b.Length != p.blockLen(b.Piece, k) {
		return 0, false
	}
	return k, true
}

func (p *Picker) checkPiece(i int) {
	if uint(i) >= uint(p.numPieces) {
		panic(fmt.Sprintf("picker: piece %d out of range [0, %d)", i, p.numPieces))
	}
}

// SetHave records that piece i is ours: resumed from storage, or verified
// by other means. Any block state it had is dropped, requests for it in
// flight included; the engine may cancel those. It panics if i is out of
// range.
func (p *Picker) SetHave(i int) {
	p.checkPiece(i)
	if pi := p.partialOf[i]; pi >= 0 {
		pp := p.parts[pi]
		p.dropRequests(pp)
		p.freePartial(pp)
	}
	p.markHave(i)
}

// Have reports whether piece i is ours. It panics if i is out of range.
func (p *Picker) Have(i int) bool {
	p.checkPiece(i)
	return p.have.Has(i)
}

// markHave sets piece i as ours once its block state is gone.
func (p *Picker) markHave(i int) {
	if p.have.Has(i) {
		return
	}
	p.have.Set(i)
	if !p.need.Has(i) {
		return
	}
	p.need.Clear(i)
	if p.fresh.Has(i) {
		p.removeFresh(i)
	}
	for j := range p.peers {
		pr := &p.peers[j]
		if pr.live && !pr.seed && pr.has.Len() > 0 && pr.has.Has(i) {
			pr.interest--
		}
	}
}

// SetWanted replaces the wanted set by the half-open piece range
// [from, to). Pieces outside it are still fetched while a reader needs
// them, and requests in flight for them are kept. It costs O(changed pieces
// + peers × pieces/64). It panics unless 0 ≤ from ≤ to ≤ NumPieces.
func (p *Picker) SetWanted(from, to int) {
	if from < 0 || from > to || to > p.numPieces {
		panic(fmt.Sprintf("picker: wanted range [%d, %d) invalid for %d pieces", from, to, p.numPieces))
	}
	p.bulk = true
	for i := p.wanted.NextSet(0); i >= 0; i = p.wanted.NextSet(i + 1) {
		if i < from || i >= to {
			p.unwant(i)
		}
	}
	for i := from; i < to; i++ {
		if !p.wanted.Has(i) {
			p.want(i)
		}
	}
	p.bulk = false
	for j := range p.peers {
		pr := &p.peers[j]
		if pr.live && !pr.seed && pr.has.Len() > 0 {
			pr.interest = pr.has.CountAnd(&p.need)
			pr.fresh = pr.has.CountAnd(&p.fresh)
		}
	}
	p.filterUrgentUnwanted()
}

// SetWantedAll wants every piece.
func (p *Picker) SetWantedAll() { p.SetWanted(0, p.numPieces) }

// Remaining returns the number of wanted pieces that are not ours yet.
func (p *Picker) Remaining() int { return p.need.Count() }

func (p *Picker) want(i int) {
	p.wanted.Set(i)
	if p.have.Has(i) {
		return
	}
	p.need.Set(i)
	if p.partialOf[i] < 0 {
		p.addFresh(i)
	}
}

func (p *Picker) unwant(i int) {
	p.wanted.Clear(i)
	if !p.need.Has(i) {
		return
	}
	p.need.Clear(i)
	if p.fresh.Has(i) {
		p.removeFresh(i)
	}
}

// Availability returns how many connected peers have announced piece i.
// It panics if i is out of range.
func (p *Picker) Availability(i int) int {
	p.checkPiece(i)
	return int(p.avail[i]) + p.seeds
}

// --- rarity buckets ---

// addFresh makes piece i a rarest-first candidate.
func (p *Picker) addFresh(i int) {
	p.fresh.Set(i)
	p.bucketInsert(i)
	p.countFresh(i, 1)
}

// removeFresh withdraws piece i from the candidates.
func (p *Picker) removeFresh(i int) {
	p.fresh.Clear(i)
	p.bucketRemove(i)
	p.countFresh(i, -1)
}

// countFresh adjusts the fresh counts of the peers that have piece i. O(peers).
func (p *Picker) countFresh(i, delta int) {
	if p.bulk {
		return
	}
	for j := range p.peers {
		pr := &p.peers[j]
		if pr.live && !pr.seed && pr.has.Len() > 0 && pr.has.Has(i) {
			pr.fresh += delta
		}
	}
}

// bucketInsert adds fresh piece i to the bucket of its availability: at the
// end, or at a random position when the Picker has a Rand.
func (p *Picker) bucketInsert(i int) {
	a := int(p.avail[i])
	for len(p.buckets) <= a {
		p.buckets = append(p.buckets, bucket{})
	}
	bk := &p.buckets[a]
	if bk.head > 64 && bk.head > bk.live() {
		// Reclaim the dead prefix.
		n := copy(bk.entries, bk.entries[bk.head:])
		bk.entries = bk.entries[:n]
		bk.head = 0
		for idx, j := range bk.entries {
			p.slot[j] = int32(idx)
		}
	}
	idx := len(bk.entries)
	bk.entries = append(bk.entries, int32(i))
	if p.rng != nil && idx > bk.head {
		if j := bk.head + p.rng.IntN(idx-bk.head+1); j != idx {
			o := bk.entries[j]
			bk.entries[idx] = o
			p.slot[o] = int32(idx)
			bk.entries[j] = int32(i)
			idx = j
		}
	}
	p.slot[i] = int32(idx)
}

// bucketRemove takes fresh piece i out of its bucket.
func (p *Picker) bucketRemove(i int) {
	bk := &p.buckets[p.avail[i]]
	s := int(p.slot[i])
	if s == bk.head {
		bk.head++
	} else {
		last := len(bk.entries) - 1
		o := bk.entries[last]
		bk.entries[s] = o
		p.slot[o] = int32(s)
		bk.entries = bk.entries[:last]
	}
	p.slot[i] = -1
	if bk.head == len(bk.entries) {
		bk.entries = bk.entries[:0]
		bk.head = 0
	}
}

// bumpAvail changes the availability of piece i by delta, moving it between
// buckets when it is fresh.
func (p *Picker) bumpAvail(i int, delta int32) {
	if !p.fresh.Has(i) {
		p.avail[i] += delta
		return
	}
	p.bucketRemove(i)
	p.avail[i] += delta
	p.bucketInsert(i)
}

// --- block state ---

// full reports whether every block is requested or received.
func (pp *partial) full() bool { return pp.nReceived+pp.nRequested == pp.nblocks }

func bitSet(ws []uint64, k int) bool { return ws[k>>6]&(1<<(uint(k)&63)) != 0 }

// dupCount returns how many endgame duplicates block k has, and whether one
// of them goes to peer pid.
func (pp *partial) dupCount(k, pid int32) (n int, mine bool) {
	for _, d := range pp.dups {
		if d.block == k {
			n++
			mine = mine || d.peer == pid
		}
	}
	return n, mine
}

func (pp *partial) removeDup(j int) {
	last := len(pp.dups) - 1
	pp.dups[j] = pp.dups[last]
	pp.dups = pp.dups[:last]
}

// allocPartial creates block state for piece i, which has none.
func (p *Picker) allocPartial(i int) *partial {
	var pp *partial
	if n := len(p.free); n > 0 {
		pp = p.parts[p.free[n-1]]
		p.free = p.free[:n-1]
		clear(pp.received)
		clear(pp.requested)
		pp.dups = pp.dups[:0]
	} else {
		pp = &partial{
			index:     int32(len(p.parts)),
			received:  make([]uint64, p.words),
			requested: make([]uint64, p.words),
			peer:      make([]int32, p.blocksPer),
		}
		p.parts = append(p.parts, pp)
	}
	nb := p.nblocks(i)
	pp.piece = int32(i)
	pp.nblocks = int32(nb)
	pp.nReceived, pp.nRequested = 0, 0
	pp.owner = noPeer
	pp.solo = false
	pp.openPos = -1
	for k := range nb {
		pp.peer[k] = noPeer
	}
	p.partialOf[i] = pp.index
	return pp
}

// partialFor returns the block state of piece i, creating it (and taking the
// piece out of the fresh candidates) if needed.
func (p *Picker) partialFor(i int) *partial {
	if pi := p.partialOf[i]; pi >= 0 {
		return p.parts[pi]
	}
	if p.fresh.Has(i) {
		p.removeFresh(i)
	}
	return p.allocPartial(i)
}

// freePartial returns pp to the free list. Nothing may be in flight for it.
func (p *Picker) freePartial(pp *partial) {
	p.setOpen(pp, false)
	p.partialOf[pp.piece] = -1
	pp.piece = -1
	p.free = append(p.free, pp.index)
}

// setOpen adds pp to or removes it from the open set.
func (p *Picker) setOpen(pp *partial, open bool) {
	switch {
	case open && pp.openPos < 0:
		pp.openPos = int32(len(p.open))
		p.open = append(p.open, pp)
	case !open && pp.openPos >= 0:
		last := p.open[len(p.open)-1]
		p.open[pp.openPos] = last
		last.openPos = pp.openPos
		p.open = p.open[:len(p.open)-1]
		pp.openPos = -1
	}
}

// afterRelease restores the invariants of pp after requests were dropped:
// block state with nothing requested and nothing received is discarded, and
// the piece becomes a fresh candidate again.
func (p *Picker) afterRelease(pp *partial) {
	p.urgentDone = 0
	pp.solo = false
	if pp.nRequested == 0 && pp.nReceived == 0 {
		i := int(pp.piece)
		p.freePartial(pp)
		if p.need.Has(i) {
			p.addFresh(i)
		}
		return
	}
	p.setOpen(pp, !pp.full())
}

// dropRequest removes peer pid from the peers block k is in flight to,
// promoting an endgame duplicate if pid was the first. It reports whether
// pid had the block in flight.
func (p *Picker) dropRequest(pp *partial, k int, pid int32) bool {
	if !bitSet(pp.requested, k) {
		return false
	}
	found := -1
	if pp.peer[k] == pid {
		for j, d := range pp.dups {
			if int(d.block) == k {
				found = j
				break
			}
		}
		if found >= 0 {
			pp.peer[k] = pp.dups[found].peer
			pp.removeDup(found)
		} else {
			pp.requested[k>>6] &^= 1 << (uint(k) & 63)
			pp.peer[k] = noPeer
			pp.nRequested--
		}
	} else {
		for j, d := range pp.dups {
			if int(d.block) == k && d.peer == pid {
				found = j
				break
			}
		}
		if found < 0 {
			return false
		}
		pp.removeDup(found)
	}
	p.peers[pid].inflight--
	return true
}

// dropRequests forgets every request in flight for pp, keeping received
// blocks.
func (p *Picker) dropRequests(pp *partial) {
	for w, word := range pp.requested {
		for word != 0 {
			k := w<<6 + bits.TrailingZeros64(word)
			word &= word - 1
			p.peers[pp.peer[k]].inflight--
			pp.peer[k] = noPeer
		}
		pp.requested[w] = 0
	}
	for _, d := range pp.dups {
		p.peers[d.peer].inflight--
	}
	pp.dups = pp.dups[:0]
	pp.nRequested = 0
}

// senders returns the distinct peers that delivered pp's received blocks.
func (p *Picker) senders(pp *partial) []PeerID {
	var out []PeerID
	for w, word := range pp.received {
		for word != 0 {
			k := w<<6 + bits.TrailingZeros64(word)
			word &= word - 1
			s := PeerID(pp.peer[k])
			seen := false
			for j := len(out) - 1; j >= 0; j-- {
				if out[j] == s {
					seen = true
					break
				}
			}
			if !seen {
				out = append(out, s)
			}
		}
	}
	return out
}

// --- block events ---

// Received records that peer id delivered block b. accepted is false, and
// nothing changes, when b was not in flight to id: never requested, already
// received (a duplicate), requested from someone else, released since,
// or not a block of this torrent's geometry (such as one that overruns its
// piece); the engine discards such data. pieceDone is true when b completes
// its piece; the engine then hashes it and reports Verified or Failed.
// cancel lists the other peers b was in flight to (endgame); their
// requests are forgotten here and the engine should send them cancels. It
// panics if id was not added.
func (p *Picker) Received(id PeerID, b Block) (accepted, pieceDone bool, cancel []PeerID) {
	pr := p.peer(id)
	k, ok := p.blockIndex(b)
	if !ok {
		return false, false, nil
	}
	pi := p.partialOf[b.Piece]
	if pi < 0 {
		return false, false, nil
	}
	pp := p.parts[pi]
	if !bitSet(pp.requested, k) {
		return false, false, nil
	}
	pid := int32(id)
	k32 := int32(k)
	if pp.peer[k] != pid {
		if _, mine := pp.dupCount(k32, pid); !mine {
			return false, false, nil
		}
		cancel = append(cancel, PeerID(pp.peer[k]))
		p.peers[pp.peer[k]].inflight--
	}
	for j := 0; j < len(pp.dups); {
		d := pp.dups[j]
		if d.block != k32 {
			j++
			continue
		}
		if d.peer != pid {
			cancel = append(cancel, PeerID(d.peer))
			p.peers[d.peer].inflight--
		}
		pp.removeDup(j)
	}
	pr.inflight--
	w, bit := k>>6, uint64(1)<<(uint(k)&63)
	pp.requested[w] &^= bit
	pp.received[w] |= bit
	pp.peer[k] = pid
	pp.nRequested--
	pp.nReceived++
	return true, pp.nReceived == pp.nblocks, cancel
}

// Rejected returns block b, in flight to peer id, to the missing blocks: a
// BEP 6 reject, a choke, or a timeout. It does nothing if b was not in
// flight to id. It panics if id was not added.
func (p *Picker) Rejected(id PeerID, b Block) {
	p.peer(id)
	k, ok := p.blockIndex(b)
	if !ok {
		return
	}
	pi := p.partialOf[b.Piece]
	if pi < 0 {
		return
	}
	pp := p.parts[pi]
	if p.dropRequest(pp, k, int32(id)) {
		p.afterRelease(pp)
	}
}

// Verified records that piece i passed its hash check and is ours, and
// returns the distinct peers that sent its blocks. The slice is the
// caller's. It panics if i is out of range.
func (p *Picker) Verified(i int) (senders []PeerID) {
	p.checkPiece(i)
	if pi := p.partialOf[i]; pi >= 0 {
		pp := p.parts[pi]
		senders = p.senders(pp)
		p.dropRequests(pp)
		p.freePartial(pp)
	}
	p.markHave(i)
	return senders
}

// Failed records that piece i failed its hash check: all its blocks are
// missing again and it is picked anew. It returns the distinct peers that
// sent its blocks, for ban accounting; the slice is the caller's. It does
// nothing for a piece that is already ours. It panics if i is out of range.
func (p *Picker) Failed(i int) (senders []PeerID) {
	p.checkPiece(i)
	if p.have.Has(i) {
		return nil
	}
	p.urgentDone = 0
	if pi := p.partialOf[i]; pi >= 0 {
		pp := p.parts[pi]
		senders = p.senders(pp)
		p.dropRequests(pp)
		p.freePartial(pp)
	}
	if p.need.Has(i) && !p.fresh.Has(i) {
		p.addFresh(i)
	}
	return senders
}
