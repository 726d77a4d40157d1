// Package choker decides, once per choking round, which peers we upload to:
// a tit-for-tat choker in the manner of BEP 3 and libtorrent.
//
// A Choker is a plain synchronous algorithm. The torrent's loop feeds it a
// snapshot of its peers every Interval and applies the answer (the IDs to
// have unchoked; every other peer is choked). It keeps a little memory
// between rounds: the optimistic unchoke and each peer's seeding turn. It
// takes no locks, starts no goroutines, reads no clock and does no I/O, so
// it is not safe for concurrent use and is tested alone.
//
// It does not measure rates, detect snubbing, send choke or unchoke
// messages, or limit bandwidth: those belong to the engine.
package choker

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultSlots           = 4
	DefaultInterval        = 10 * time.Second
	DefaultOptimisticEvery = 3
)

// Newcomer weighting for the optimistic unchoke: a peer connected for less
// than NewcomerAge is NewcomerWeight times as likely to be picked as an
// older one, because it has no pieces yet to trade and nothing else would
// give it its first ones.
const (
	NewcomerAge    = time.Minute
	NewcomerWeight = 3
)

// Peer is one connected peer as the engine sees it at the start of a round.
type Peer struct {
	// ID identifies the peer to the engine; it must be unique within a
	// round and stable across rounds while the connection lasts.
	ID int
	// Interested is whether the peer wants data from us.
	Interested bool
	// DownloadRate is what the peer sends us, in bytes per second.
	DownloadRate float64
	// UploadRate is what we send the peer, in bytes per second.
	UploadRate float64
	// Snubbed is whether the peer has stopped sending us data it owes us;
	// snubbed peers get no slot while we are leeching.
	Snubbed bool
	// Choked is our current state toward the peer.
	Choked bool
	// ConnectedAt is when the connection was established.
	ConnectedAt time.Time
}

// Config tunes a Choker. The zero value is ready to use: every zero (or
// negative) field takes its default.
type Config struct {
	// Slots is the number of regular unchoke slots; 0 means 4. While
	// leeching one optimistic unchoke comes on top; while seeding all
	// Slots+1 go round-robin, so the upload is shared as widely in both
	// modes.
	Slots int
	// Interval is how often the engine should call Round; 0 means 10 s.
	// The Choker only reports it (see Choker.Interval): it counts rounds,
	// not time, so an extra Round call advances every rotation.
	Interval time.Duration
	// OptimisticEvery is the rotation period, in rounds; 0 means 3. While
	// leeching, the optimistic unchoke moves on after this many rounds;
	// while seeding, it is the length of each peer's turn.
	OptimisticEvery int
	// Rand picks optimistic unchokes. Nil means a generator seeded at
	// random; set it for reproducible tests.
	Rand *rand.Rand
	// Unlimited unchokes every interested peer, snubbed or not, and ignores
	// Slots. Use it when upload slots cost nothing: loopback peers, or a
	// seed with spare bandwidth and no one to trade with. Uninterested
	// peers stay choked.
	Unlimited bool
}

// Choker holds the choking state of one torrent. Make it with New; it is
// owned by the torrent's loop.
type Choker struct {
	cfg Config     // defaults applied; never changes after New
	rng *rand.Rand // cfg.Rand or a private generator

	round int // index of the next Round call, from 0

	// The optimistic unchoke while leeching: optimistic is its ID and
	// optimisticAt the round it was picked, both meaningful only while
	// hasOptimistic. Cleared in rounds that are not leeching rounds.
	hasOptimistic bool
	optimistic    int
	optimisticAt  int

	// peers holds per-peer memory, keyed by Peer.ID. A peer missing from a
	// round is forgotten, so this never outgrows the connection set.
	peers map[int]*peerState
}

// peerState is what the Choker remembers of one peer between rounds.
type peerState struct {
	firstSeen    int // round the peer first appeared
	lastUnchoked int // last round we unchoked it; -1 if never
	turnStart    int // round its current unchoke began; -1 while choked
}

// New returns a Choker for cfg.
func New(cfg Config) *Choker {
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultSlots
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.OptimisticEvery <= 0 {
		cfg.OptimisticEvery = DefaultOptimisticEvery
	}
	rng := cfg.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Choker{cfg: cfg, rng: rng, peers: map[int]*peerState{}}
}

// Interval returns how often the engine should call Round: Config.Interval
// or its default.
func (c *Choker) Interval() time.Duration { return c.cfg.Interval }

// Round runs one choking round over peers and returns, in ascending order,
// the IDs of the peers to have unchoked afterwards; every other peer should
// be choked. Peers with a repeated ID after the first are ignored. now is
// used only to tell newcomers (see NewcomerAge).
//
// Uninterested peers are never unchoked. Otherwise:
//
// Unlimited: every interested peer.
//
// Leeching (seeding false): the Slots interested, unsnubbed peers with the
// highest DownloadRate (ties go to peers already unchoked, then to the
// lower ID), plus one optimistic unchoke. The optimistic peer is drawn at
// random among the interested, unsnubbed peers that are choked and not in
// a regular slot, a newcomer weighing NewcomerWeight times an older peer.
// It keeps its slot for OptimisticEvery rounds, and is replaced earlier if
// it leaves, loses interest, is snubbed or earns a regular slot. When no
// one else is eligible, the current one stays on.
//
// Seeding (seeding true): Slots+1 slots shared round-robin by turns of
// OptimisticEvery rounds. Interested peers are ranked in three groups, and
// the first Slots+1 unchoked:
//
//  1. peers in their turn: unchoked, turn begun fewer than
//     OptimisticEvery rounds ago; fastest UploadRate first;
//  2. choked peers, longest waiting first: waiting since the round after
//     we last unchoked them or, if we never did, since the round we first
//     saw them; ties by faster UploadRate, then lower ID;
//  3. peers whose turn is over, fastest UploadRate first, so they keep
//     uploading while no one is waiting.
//
// A peer unchoked by us starts its turn in that round; a peer the engine
// reports as unchoked without our say starts one now. Given a stable set
// of N interested peers, each is unchoked at least once in any
// ceil(N/(Slots+1))*OptimisticEvery consecutive rounds. Snubbed is
// ignored: a seed wants nothing from anyone.
func (c *Choker) Round(peers []Peer, seeding bool, now time.Time) (unchoke []int) {
	r := c.round
	c.round++
	peers = c.track(peers, r)

	switch {
	case c.cfg.Unlimited:
		c.hasOptimistic = false
		for _, p := range peers {
			if p.Interested {
				unchoke = append(unchoke, p.ID)
			}
		}
	case seeding:
		c.hasOptimistic = false
		unchoke = c.seed(peers, r)
	default:
		unchoke = c.leech(peers, r, now)
	}

	chosen := make(map[int]bool, len(unchoke))
	for _, id := range unchoke {
		chosen[id] = true
	}
	for _, p := range peers {
		st := c.peers[p.ID]
		if !chosen[p.ID] {
			st.turnStart = -1
			continue
		}
		if st.turnStart < 0 {
			st.turnStart = r
		}
		st.lastUnchoked = r
	}
	slices.Sort(unchoke)
	return unchoke
}

// track reconciles per-peer memory with this round's peers: it forgets the
// absent, remembers the new, and believes the engine about who is choked.
// It returns peers without repeated IDs.
func (c *Choker) track(peers []Peer, r int) []Peer {
	present := make(map[int]bool, len(peers))
	uniq := peers[:0:0]
	for _, p := range peers {
		if present[p.ID] {
			continue
		}
		present[p.ID] = true
		uniq = append(uniq, p)
		st, ok := c.peers[p.ID]
		if !ok {
			st = &peerState{firstSeen: r, lastUnchoked: -1, turnStart: -1}
			c.peers[p.ID] = st
		}
		switch {
		case p.Choked:
			st.turnStart = -1
		case st.turnStart < 0:
			st.turnStart = r
		}
	}
	for id := range c.peers {
		if !present[id] {
			delete(c.peers, id)
		}
	}
	return uniq
}

func (c *Choker) leech(peers []Peer, r int, now time.Time) []int {
	var cands []Peer
	for _, p := range peers {
		if p.Interested && !p.Snubbed {
			cands = append(cands, p)
		}
	}
	slices.SortFunc(cands, func(a, b Peer) int {
		if c := cmp.Compare(b.DownloadRate, a.DownloadRate); c != 0 {
			return c
		}
		if a.Choked != b.Choked {
			if a.Choked {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	n := min(c.cfg.Slots, len(cands))
	unchoke := make([]int, 0, n+1)
	regular := make(map[int]bool, n)
	for _, p := range cands[:n] {
		unchoke = append(unchoke, p.ID)
		regular[p.ID] = true
	}
	rest := cands[n:] // interested, unsnubbed, not regular

	current := -1 // index in rest of the optimistic peer, if still eligible
	if c.hasOptimistic {
		for i, p := range rest {
			if p.ID == c.optimistic {
				current = i
				break
			}
		}
	}
	if current >= 0 && r-c.optimisticAt < c.cfg.OptimisticEvery {
		return append(unchoke, c.optimistic)
	}

	var pool []Peer
	for _, p := range rest {
		if p.Choked {
			pool = append(pool, p)
		}
	}
	switch {
	case len(pool) > 0:
		c.optimistic = c.pick(pool, now).ID
	case current >= 0:
		// No one else to try: the current peer starts another period.
	default:
		c.hasOptimistic = false
		return unchoke
	}
	c.hasOptimistic = true
	c.optimisticAt = r
	return append(unchoke, c.optimistic)
}

// pick draws one peer of pool at random, newcomers weighted. The pool is
// ordered by ID first so that a seeded Rand gives the same answer whatever
// order the engine listed its peers in.
func (c *Choker) pick(pool []Peer, now time.Time) Peer {
	slices.SortFunc(pool, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	weight := func(p Peer) int {
		if now.Sub(p.ConnectedAt) < NewcomerAge {
			return NewcomerWeight
		}
		return 1
	}
	total := 0
	for _, p := range pool {
		total += weight(p)
	}
	x := c.rng.IntN(total)
	for _, p := range pool {
		x -= weight(p)
		if x < 0 {
			return p
		}
	}
	return pool[len(pool)-1] // unreachable: the weights sum to total
}

func (c *Choker) seed(peers []Peer, r int) []int {
	type ranked struct {
		p     Peer
		group int // 1, 2 or 3 as documented on Round
		key   int // group 2: the round its wait began
	}
	var cands []ranked
	for _, p := range peers {
		if !p.Interested {
			continue
		}
		st := c.peers[p.ID]
		switch {
		case p.Choked:
			cands = append(cands, ranked{p, 2, max(st.lastUnchoked+1, st.firstSeen)})
		case r-st.turnStart < c.cfg.OptimisticEvery:
			cands = append(cands, ranked{p, 1, 0})
		default:
			cands = append(cands, ranked{p, 3, 0})
		}
	}
	slices.SortFunc(cands, func(a, b ranked) int {
		if c := cmp.Compare(a.group, b.group); c != 0 {
			return c
		}
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		if c := cmp.Compare(b.p.UploadRate, a.p.UploadRate); c != 0 {
			return c
		}
		return cmp.Compare(a.p.ID, b.p.ID)
	})
	n := min(c.cfg.Slots+1, len(cands))
	unchoke := make([]int, 0, n)
	for _, rk := range cands[:n] {
		unchoke = append(unchoke, rk.p.ID)
	}
	return unchoke
}
