package swarm

import (
	"net/netip"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Stats is a snapshot of one torrent.
type Stats struct {
	InfoHash       metainfo.Hash
	Pieces         int    // pieces in the torrent
	PiecesVerified int    // pieces verified and stored
	Bitfield       []byte // verified pieces in BEP 3 layout: piece 0 is the high bit of byte 0
	BytesVerified  int64  // bytes of the verified pieces
	Complete       bool

	Downloaded    int64   // block bytes accepted from peers
	FromWebSeeds  int64   // block bytes accepted from web seeds
	WebSeedRate   float64 // bytes per second accepted from web seeds, smoothed over seconds
	Uploaded      int64   // payload bytes sent to peers
	Wasted        int64   // bytes received but discarded: unrequested, duplicate
	HashFailures  int     // pieces that failed their hash
	Bans          int     // peers banned for bad data
	StorageErrors int     // verified pieces that storage failed to keep
	LostPieces    int     // verified pieces storage later could not read back

	PEXSent     int // ut_pex messages sent (BEP 11)
	PEXReceived int // ut_pex messages taken
	PEXIgnored  int // ut_pex messages ignored: too frequent or malformed
	PEXPeers    int // new addresses learned through ut_pex
	LSDPeers    int // new addresses learned through local service discovery (BEP 14)

	Peers []PeerStats
}

// PeerStats describes one connected peer.
type PeerStats struct {
	Addr         netip.AddrPort
	Client       string // from the BEP 10 handshake, if sent
	Outgoing     bool   // we dialled it
	Origin       Origin // how we learned of it
	DownloadRate float64
	UploadRate   float64
	Downloaded   int64 // block bytes received from it
	Uploaded     int64 // block bytes sent to it
	InFlight     int   // our requests waiting on it
	Choked       bool  // it is choking us
	Choking      bool  // we are choking it
	Interested   bool  // it wants something we have
	// Encryption is "rc4" for an RC4-encrypted MSE connection,
	// "plaintext" for MSE whose stream after the handshake is plain, and
	// "" for a plain BitTorrent connection.
	Encryption string
}

// Stats returns a snapshot of the torrent.
func (t *Torrent) Stats() Stats {
	var s Stats
	ok := t.do(func() {
		s.Peers = make([]PeerStats, 0, len(t.s.peers))
		for _, p := range t.s.peers {
			s.Peers = append(s.Peers, PeerStats{
				Addr:         p.addr,
				Client:       p.client,
				Outgoing:     p.conn.Outgoing,
				Origin:       p.origin,
				DownloadRate: p.rateDown,
				UploadRate:   p.rateUp,
				Downloaded:   p.conn.Downloaded.Load(),
				Uploaded:     p.conn.Uploaded.Load(),
				InFlight:     len(p.inflight),
				Choked:       p.peerChoking,
				Choking:      p.amChoking,
				Interested:   p.peerInterested,
				Encryption:   p.encryption,
			})
		}
		s.Wasted = t.s.stats.wasted
		s.WebSeedRate = t.s.webRate
		s.Bans = t.s.stats.bans
		s.StorageErrors = t.s.stats.storageErrs
		s.LostPieces = t.s.stats.lost
		s.PEXSent = t.s.stats.pexSent
		s.PEXReceived = t.s.stats.pexTaken
		s.PEXIgnored = t.s.stats.pexIgnored
		s.PEXPeers = t.s.stats.pexPeers
		s.LSDPeers = t.s.stats.lsdPeers
	})
	_ = ok // a closed torrent still reports its counters below
	s.InfoHash = t.meta.InfoHash
	s.Pieces = t.info.NumPieces()
	s.Bitfield = t.ourWire()
	for i := range s.Pieces {
		if t.verified.has(i) {
			s.PiecesVerified++
			s.BytesVerified += t.info.PieceLen(i)
		}
	}
	s.Complete = s.PiecesVerified == s.Pieces
	s.Downloaded = t.downloaded.Load()
	s.Uploaded = t.uploaded.Load()
	s.FromWebSeeds = t.fromWeb.Load()
	s.HashFailures = int(t.hashFailures.Load())
	return s
}
