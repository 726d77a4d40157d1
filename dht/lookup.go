package dht

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/dht/internal/krpc"
	"github.com/tbproxy/tbproxy/metainfo"
)

// Lookup bounds.
const (
	alpha          = 3   // queries in flight per lookup
	maxQueries     = 96  // queries per lookup
	maxCandidates  = 128 // nodes a lookup remembers
	maxLookupPeers = 1000
)

type candState uint8

const (
	fresh candState = iota
	asked
	answered
	failed
)

// candidate is a node a lookup knows of.
type candidate struct {
	id    ID
	known bool // id is known: false for a bootstrap node until it answers
	addr  netip.AddrPort
	state candState
	token string // get_peers: the write token it gave
}

type lookupReply struct {
	c   *candidate
	r   *krpc.Return
	err error
}

// lookupResult is what an iterative lookup found.
type lookupResult struct {
	peers   []netip.AddrPort // get_peers values, deduplicated, checked
	closest []*candidate     // up to K answered nodes closest to the target
}

// lookup runs an iterative find_node or get_peers for target (BEP 5):
// alpha queries at a time to the closest nodes not yet asked, until the K
// closest known nodes have all answered or failed. seeds are extra nodes
// of unknown ID to start from (bootstrap nodes).
func (s *Server) lookup(ctx context.Context, target ID, method string, seeds []netip.AddrPort) lookupResult {
	var cands []*candidate
	seen := map[netip.AddrPort]bool{}
	s.mu.Lock()
	for _, n := range s.table.closest(target, K) {
		cands = append(cands, &candidate{id: n.id, known: true, addr: n.addr})
		seen[n.addr] = true
	}
	s.mu.Unlock()
	for _, a := range seeds {
		if !seen[a] && a.Port() != 0 {
			seen[a] = true
			cands = append(cands, &candidate{addr: a})
		}
	}
	order := func() {
		slices.SortStableFunc(cands, func(a, b *candidate) int {
			switch {
			case !a.known && !b.known:
				return 0
			case !a.known:
				return -1
			case !b.known:
				return 1
			case a.id == b.id:
				return 0
			case closer(target, a.id, b.id):
				return -1
			}
			return 1
		})
	}
	order()
	next := func() *candidate {
		live := 0
		for _, c := range cands {
			if c.state == failed {
				continue
			}
			if live++; live > K {
				return nil
			}
			if c.state == fresh {
				return c
			}
		}
		return nil
	}

	var res lookupResult
	havePeer := map[netip.AddrPort]bool{}
	results := make(chan lookupReply, alpha) // never blocks: at most alpha in flight
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight, queries := 0, 0
	for {
		for inflight < alpha && queries < maxQueries && ctx.Err() == nil {
			c := next()
			if c == nil {
				break
			}
			c.state = asked
			inflight++
			queries++
			args := &krpc.Args{}
			if method == krpc.GetPeers {
				args.InfoHash = string(target[:])
			} else {
				args.Target = string(target[:])
			}
			wg.Go(func() {
				r, err := s.query(ctx, c.addr, method, args)
				results <- lookupReply{c, r, err}
			})
		}
		if inflight == 0 {
			break
		}
		rep := <-results
		inflight--
		c := rep.c
		if rep.err != nil {
			c.state = failed
			continue
		}
		c.state = answered
		c.id, c.known = ID([]byte(rep.r.ID)), true
		c.token = rep.r.Token
		for _, n := range krpc.ParseNodes(rep.r.Nodes) {
			if seen[n.Addr] || n.ID == s.self || !addrOK(n.Addr, s.cfg.AllowLocal) {
				continue
			}
			seen[n.Addr] = true
			cands = append(cands, &candidate{id: n.ID, known: true, addr: n.Addr})
		}
		for _, v := range rep.r.Values {
			p, ok := krpc.ParsePeer(v)
			// A get_peers answer may name anyone: never hand out
			// addresses we would not dial (local services, port 0).
			if !ok || havePeer[p] || !addrOK(p, s.cfg.AllowLocal) || len(res.peers) >= maxLookupPeers {
				continue
			}
			havePeer[p] = true
			res.peers = append(res.peers, p)
		}
		order()
		if len(cands) > maxCandidates {
			// Forget the farthest nodes not yet asked; those in flight stay.
			kept := cands[:0]
			for i, c := range cands {
				if i < maxCandidates || c.state == asked {
					kept = append(kept, c)
				}
			}
			cands = kept
		}
	}
	for _, c := range cands {
		if c.state == answered && c.known {
			res.closest = append(res.closest, c)
			if len(res.closest) == K {
				break
			}
		}
	}
	return res
}

// Announce looks up the peers of ih and, when port is not 0, announces
// that we have it on that TCP port to the K closest nodes that gave us a
// token. It returns the peers found and how many nodes took the announce.
func (s *Server) Announce(ctx context.Context, ih metainfo.Hash, port uint16) (peers []netip.AddrPort, announced int) {
	res := s.lookup(ctx, ID(ih), krpc.GetPeers, nil)
	if port == 0 || ctx.Err() != nil {
		return res.peers, 0
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range res.closest {
		if c.token == "" {
			continue
		}
		wg.Go(func() {
			args := &krpc.Args{InfoHash: string(ih[:]), Port: int64(port), Token: c.token}
			if _, err := s.query(ctx, c.addr, krpc.AnnouncePeer, args); err == nil {
				mu.Lock()
				announced++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res.peers, announced
}

// Torrent is what FindPeers needs to know of a torrent. swarm.SourceView
// has these methods.
type Torrent interface {
	InfoHash() metainfo.Hash
	// Port is our peer listening port; 0 means look up only.
	Port() uint16
}

// FindPeers looks up t's peers and announces t until ctx ends: a lookup
// passes the peers it found (maybe none) to found, then waits
// RetryInterval, doubling, while none are found, and AnnounceInterval
// once some are. Its shape is that of swarm.PeerSource's Run; the caller
// must not use it for a private torrent (BEP 27).
func (s *Server) FindPeers(ctx context.Context, t Torrent, found func([]netip.AddrPort)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	wait := s.cfg.RetryInterval
	for {
		if s.Stats().Nodes == 0 && len(s.cfg.Bootstrap) > 0 {
			s.Bootstrap(ctx)
		}
		peers, announced := s.Announce(ctx, t.InfoHash(), t.Port())
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("dht lookup", "info_hash", t.InfoHash(), "peers", len(peers), "announced", announced)
		found(peers)
		next := s.cfg.AnnounceInterval
		if len(peers) == 0 {
			next = wait
			wait = min(2*wait, s.cfg.AnnounceInterval)
		} else {
			wait = s.cfg.RetryInterval
		}
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
