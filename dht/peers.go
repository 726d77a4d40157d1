package dht

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// Bounds of the peer store: what announce_peer may make us remember.
const (
	peerTTL            = 30 * time.Minute
	maxStoredTorrents  = 2000
	maxPeersPerTorrent = 200
	maxPeersPerIP      = 4  // per torrent: one host cannot fill a torrent's list with ports
	maxValuesPerReply  = 50 // fits a UDP datagram with nodes and token
)

// peerStore remembers announced peers per info-hash, each until peerTTL
// after its last announce. It is a plain type; the clock is passed in.
type peerStore struct {
	torrents map[ID]map[netip.AddrPort]time.Time // expiry per peer
}

func newPeerStore() *peerStore { return &peerStore{torrents: map[ID]map[netip.AddrPort]time.Time{}} }

// add records that peer announced ih. It reports false when a bound
// refused it.
func (s *peerStore) add(ih ID, peer netip.AddrPort, now time.Time) bool {
	ps := s.torrents[ih]
	if ps == nil {
		if len(s.torrents) >= maxStoredTorrents {
			s.sweep(now)
			if len(s.torrents) >= maxStoredTorrents {
				return false
			}
		}
		ps = map[netip.AddrPort]time.Time{}
		s.torrents[ih] = ps
	}
	if _, ok := ps[peer]; !ok {
		sameIP := 0
		for p, exp := range ps {
			if !now.Before(exp) {
				delete(ps, p)
			} else if p.Addr() == peer.Addr() {
				sameIP++
			}
		}
		if sameIP >= maxPeersPerIP || len(ps) >= maxPeersPerTorrent {
			return false
		}
	}
	ps[peer] = now.Add(peerTTL)
	return true
}

// get returns up to n live peers of ih, chosen at random.
func (s *peerStore) get(ih ID, n int, now time.Time, rnd *rand.Rand) []netip.AddrPort {
	var out []netip.AddrPort
	for p, exp := range s.torrents[ih] {
		if now.Before(exp) {
			out = append(out, p)
		}
	}
	rnd.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(n, len(out))]
}

// sweep forgets expired peers and empty torrents.
func (s *peerStore) sweep(now time.Time) {
	for ih, ps := range s.torrents {
		for p, exp := range ps {
			if !now.Before(exp) {
				delete(ps, p)
			}
		}
		if len(ps) == 0 {
			delete(s.torrents, ih)
		}
	}
}
