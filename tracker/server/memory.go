package server

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// Defaults for the zero fields of MemoryConfig.
const (
	DefaultMaxTorrents        = 100_000
	DefaultMaxPeersPerTorrent = 10_000
	DefaultMaxPeers           = 1_000_000
	DefaultTTL                = time.Hour // 2 × the default interval
)

// numShards splits the store's lock; a power of two.
const numShards = 32

// MemoryConfig configures a MemoryStore. Zero fields take their defaults.
type MemoryConfig struct {
	// MaxTorrents caps the swarms held; an announce that would start
	// another gets ErrFull. Default 100,000.
	MaxTorrents int
	// MaxPeersPerTorrent caps one swarm; a new peer beyond it evicts the
	// peer that announced least recently. Default 10,000.
	MaxPeersPerTorrent int
	// MaxPeers caps the peers of all swarms; a new peer beyond it gets
	// ErrFull. Default 1,000,000 (about 100 MB).
	MaxPeers int
	// TTL is how long a peer that stops announcing is kept: twice the
	// longest announce interval the IntervalPolicy gives. Default 1 hour.
	TTL time.Duration
	// Rand seeds the per-shard generators that sample peers; nil uses
	// random seeds. Tests pass a fixed source.
	Rand rand.Source
}

// MemoryStore is the default Store: swarms in sharded maps, each swarm a
// dense slice of peers (for O(1) random sampling) with an index by address
// and a list by last announce (for O(1) expiry and eviction). Expiry is
// amortised: every announce or scrape first drops the expired peers of its
// swarm and the expired swarms of its shard, oldest first; Expire sweeps
// everything on demand. It starts no goroutines and holds no pointers per
// peer, so a million peers cost the garbage collector little.
type MemoryStore struct {
	cfg   MemoryConfig // defaults applied; read-only
	ttl   int64        // cfg.TTL in ticks
	epoch time.Time    // zero of the tick clock (monotonic when available); read-only

	torrents atomic.Int64 // swarms in all shards; ≤ cfg.MaxTorrents
	peers    atomic.Int64 // peers in all swarms; ≤ cfg.MaxPeers

	shards [numShards]shard
}

// shard is one lock's worth of swarms.
type shard struct {
	mu sync.Mutex
	// swarms holds every swarm of this shard, each also on the list
	// newest…oldest ordered by last announce (roughly: callers' clocks
	// may interleave).
	swarms         map[metainfo.Hash]*swarm
	newest, oldest *swarm
	rng            *rand.Rand // peer sampling; used under mu only
	_              [64]byte   // keeps hot shards off each other's cache lines
}

// swarm is one torrent's peers, owned by its shard's mu.
type swarm struct {
	ih      metainfo.Hash
	entries []entry           // dense, any order
	index   map[addrKey]int32 // entries position by address
	// newest and oldest are entries indices of the announce-order list;
	// -1 when empty.
	newest, oldest int32
	seeders        int   // entries with seed set
	downloaded     int   // completed events counted while the swarm lived
	last           int64 // tick of the last announce
	newer, older   *swarm
}

// addrKey is an address in 16-byte form followed by the port, big-endian;
// for IPv4, bytes 12-17 are the BEP 23 compact form.
type addrKey [18]byte

type entry struct {
	id           [20]byte
	key          addrKey
	v4, seed     bool
	last         int64 // tick of the last announce
	newer, older int32 // announce-order list links; -1 at the ends
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(cfg MemoryConfig) *MemoryStore {
	if cfg.MaxTorrents <= 0 {
		cfg.MaxTorrents = DefaultMaxTorrents
	}
	if cfg.MaxPeersPerTorrent <= 0 {
		cfg.MaxPeersPerTorrent = DefaultMaxPeersPerTorrent
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	s := &MemoryStore{cfg: cfg, ttl: int64(cfg.TTL), epoch: time.Now()}
	for i := range s.shards {
		var a, b uint64
		if cfg.Rand != nil {
			a, b = cfg.Rand.Uint64(), cfg.Rand.Uint64()
		} else {
			a, b = rand.Uint64(), rand.Uint64()
		}
		s.shards[i].swarms = make(map[metainfo.Hash]*swarm)
		s.shards[i].rng = rand.New(rand.NewPCG(a, b))
	}
	return s
}

// Len returns how many swarms and peers the store holds, expired ones
// not yet swept included.
func (s *MemoryStore) Len() (torrents, peers int) {
	return int(s.torrents.Load()), int(s.peers.Load())
}

// Announce implements Store.
func (s *MemoryStore) Announce(a Announce, now time.Time, dst []Peer) ([]Peer, tracker.ScrapeResponse, error) {
	t := s.tick(now)
	cutoff := t - s.ttl
	key, v4 := keyOf(a.Peer.Addr)
	sh := &s.shards[a.InfoHash[0]%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()

	s.expireSwarms(sh, cutoff)
	sw := sh.swarms[a.InfoHash]
	if sw == nil {
		if a.Event == tracker.Stopped {
			return dst, tracker.ScrapeResponse{}, nil
		}
		if s.torrents.Add(1) > int64(s.cfg.MaxTorrents) {
			s.torrents.Add(-1)
			return dst, tracker.ScrapeResponse{}, ErrFull
		}
		sw = &swarm{ih: a.InfoHash, index: make(map[addrKey]int32, 1), newest: -1, oldest: -1}
		sh.swarms[a.InfoHash] = sw
	} else {
		s.expirePeers(sw, cutoff)
		sh.unlink(sw)
	}
	sh.pushNewest(sw)
	sw.last = t

	i, known := sw.index[key]
	switch {
	case a.Event == tracker.Stopped:
		if known {
			sw.remove(i)
			s.peers.Add(-1)
		}
		c := sw.counts()
		if len(sw.entries) == 0 {
			s.drop(sh, sw)
		}
		return dst, c, nil
	case known:
		e := &sw.entries[i]
		e.id = a.Peer.ID
		e.last = t
		if a.Peer.Seed != e.seed {
			if a.Peer.Seed {
				sw.seeders++
				if a.Event == tracker.Completed {
					sw.downloaded++
				}
			} else {
				sw.seeders--
			}
			e.seed = a.Peer.Seed
		}
		sw.unlink(i)
		sw.pushNewest(i)
	default:
		if len(sw.entries) >= s.cfg.MaxPeersPerTorrent {
			sw.remove(sw.oldest) // frees a place; the global count is unchanged
		} else if s.peers.Add(1) > int64(s.cfg.MaxPeers) {
			s.peers.Add(-1)
			if len(sw.entries) == 0 {
				s.drop(sh, sw)
			}
			return dst, tracker.ScrapeResponse{}, ErrFull
		}
		i = int32(len(sw.entries))
		sw.entries = append(sw.entries, entry{id: a.Peer.ID, key: key, v4: v4, seed: a.Peer.Seed, last: t})
		sw.index[key] = i
		sw.pushNewest(i)
		if a.Peer.Seed {
			sw.seeders++
			if a.Event == tracker.Completed {
				sw.downloaded++
			}
		}
	}
	dst = sw.sample(sh.rng, i, &a.Peer.ID, a.NumWant, a.Family, dst)
	return dst, sw.counts(), nil
}

// Scrape implements Store.
func (s *MemoryStore) Scrape(ih metainfo.Hash, now time.Time) (tracker.ScrapeResponse, bool) {
	cutoff := s.tick(now) - s.ttl
	sh := &s.shards[ih[0]%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.swarms[ih]
	if sw == nil {
		return tracker.ScrapeResponse{}, false
	}
	s.expirePeers(sw, cutoff)
	if len(sw.entries) == 0 {
		s.drop(sh, sw)
		return tracker.ScrapeResponse{}, false
	}
	return sw.counts(), true
}

// Expire drops every peer not announced within the TTL before now, and the
// swarms left empty, and returns how many peers it dropped. Announces do
// this incrementally; Expire is for owners that want memory back after
// traffic stops. It locks one shard at a time.
func (s *MemoryStore) Expire(now time.Time) int {
	cutoff := s.tick(now) - s.ttl
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += s.expireSwarms(sh, cutoff)
		for _, sw := range sh.swarms {
			n += s.expirePeers(sw, cutoff)
			if len(sw.entries) == 0 {
				s.drop(sh, sw)
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// tick is now on the store's int64 clock.
func (s *MemoryStore) tick(now time.Time) int64 { return int64(now.Sub(s.epoch)) }

// expireSwarms drops the shard's swarms with no announce since cutoff:
// all their peers have expired. It returns the peers dropped.
func (s *MemoryStore) expireSwarms(sh *shard, cutoff int64) int {
	n := 0
	for sh.oldest != nil && sh.oldest.last < cutoff {
		n += len(sh.oldest.entries)
		s.drop(sh, sh.oldest)
	}
	return n
}

// expirePeers drops sw's peers with no announce since cutoff.
func (s *MemoryStore) expirePeers(sw *swarm, cutoff int64) int {
	n := 0
	for sw.oldest >= 0 && sw.entries[sw.oldest].last < cutoff {
		sw.remove(sw.oldest)
		n++
	}
	if n > 0 {
		s.peers.Add(int64(-n))
	}
	return n
}

// drop removes sw and its peers from the shard.
func (s *MemoryStore) drop(sh *shard, sw *swarm) {
	sh.unlink(sw)
	delete(sh.swarms, sw.ih)
	s.torrents.Add(-1)
	if n := len(sw.entries); n > 0 {
		s.peers.Add(int64(-n))
	}
}

func (sh *shard) unlink(sw *swarm) {
	if sw.newer != nil {
		sw.newer.older = sw.older
	} else if sh.newest == sw {
		sh.newest = sw.older
	}
	if sw.older != nil {
		sw.older.newer = sw.newer
	} else if sh.oldest == sw {
		sh.oldest = sw.newer
	}
	sw.newer, sw.older = nil, nil
}

func (sh *shard) pushNewest(sw *swarm) {
	sw.newer, sw.older = nil, sh.newest
	if sh.newest != nil {
		sh.newest.newer = sw
	} else {
		sh.oldest = sw
	}
	sh.newest = sw
}

func (sw *swarm) counts() tracker.ScrapeResponse {
	return tracker.ScrapeResponse{
		Complete:   sw.seeders,
		Downloaded: sw.downloaded,
		Incomplete: len(sw.entries) - sw.seeders,
	}
}

func (sw *swarm) unlink(i int32) {
	e := &sw.entries[i]
	if e.newer >= 0 {
		sw.entries[e.newer].older = e.older
	} else {
		sw.newest = e.older
	}
	if e.older >= 0 {
		sw.entries[e.older].newer = e.newer
	} else {
		sw.oldest = e.newer
	}
	e.newer, e.older = -1, -1
}

func (sw *swarm) pushNewest(i int32) {
	e := &sw.entries[i]
	e.newer, e.older = -1, sw.newest
	if sw.newest >= 0 {
		sw.entries[sw.newest].newer = i
	} else {
		sw.oldest = i
	}
	sw.newest = i
}

// remove deletes entry i, moving the last entry into its place.
func (sw *swarm) remove(i int32) {
	sw.unlink(i)
	gone := sw.entries[i]
	delete(sw.index, gone.key)
	if gone.seed {
		sw.seeders--
	}
	last := int32(len(sw.entries) - 1)
	if i != last {
		m := sw.entries[last]
		sw.entries[i] = m
		sw.index[m.key] = i
		if m.newer >= 0 {
			sw.entries[m.newer].older = i
		} else {
			sw.newest = i
		}
		if m.older >= 0 {
			sw.entries[m.older].newer = i
		} else {
			sw.oldest = i
		}
	}
	sw.entries = sw.entries[:last]
}

// sample appends up to want peers other than entry self (and other than
// any entry with selfID) of family fam. It walks the entries from a
// random start with a random odd stride modulo the next power of two,
// skipping indices past the end: that visits each entry once, takes no
// division, and touches O(want) entries.
func (sw *swarm) sample(rng *rand.Rand, self int32, selfID *[20]byte, want int, fam Family, dst []Peer) []Peer {
	n := len(sw.entries)
	if want <= 0 || n <= 1 {
		return dst
	}
	mask := 1<<bits.Len(uint(n-1)) - 1
	start, step := 0, 1
	if want < n-1 {
		r := rng.Uint64()
		start = int((r >> 32) * uint64(n) >> 32)
		step = int(r)&mask | 1
	}
	// Entries examined are bounded, so that a swarm full of one family or
	// of copies of the caller's peer id costs O(want), not O(swarm), per
	// announce; a sparse family may then get fewer peers than it could.
	got, budget := 0, 4*want+32
	for k, j := 0, start; k <= mask && budget > 0; k, j = k+1, (j+step)&mask {
		if j >= n || int32(j) == self {
			continue
		}
		budget--
		e := &sw.entries[j]
		if !fam.allows(e.v4) || sameID(&e.id, selfID) {
			continue
		}
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, min(want-got, n))
		}
		dst = dst[:len(dst)+1]
		e.fill(&dst[len(dst)-1])
		if got++; got == want {
			break
		}
	}
	return dst
}

// sameID compares peer ids with three loads each.
func sameID(a, b *[20]byte) bool {
	le := binary.LittleEndian
	return le.Uint64(a[:]) == le.Uint64(b[:]) && le.Uint64(a[8:]) == le.Uint64(b[8:]) && le.Uint32(a[16:]) == le.Uint32(b[16:])
}

func (f Family) allows(v4 bool) bool {
	switch f {
	case FamilyIPv4:
		return v4
	case FamilyIPv6:
		return !v4
	}
	return true
}

// fill sets *p to the entry's peer, in place: cheaper than appending a
// returned Peer, which holds a pointer.
func (e *entry) fill(p *Peer) {
	var a netip.Addr
	if e.v4 {
		a = netip.AddrFrom4([4]byte(e.key[12:16]))
	} else {
		a = netip.AddrFrom16([16]byte(e.key[:16]))
	}
	p.ID = e.id
	p.Addr = netip.AddrPortFrom(a, uint16(e.key[16])<<8|uint16(e.key[17]))
	p.Seed = e.seed
}

// keyOf returns ap's key (IPv4-mapped addresses unmapped, zones dropped)
// and whether it is IPv4.
func keyOf(ap netip.AddrPort) (addrKey, bool) {
	a := ap.Addr().Unmap()
	var k addrKey
	b := a.As16()
	copy(k[:16], b[:])
	k[16], k[17] = byte(ap.Port()>>8), byte(ap.Port())
	return k, a.Is4()
}
