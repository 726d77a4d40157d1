package server

import (
	"errors"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// ErrFull is returned by a Store that refuses a new torrent or peer
// because a cap is reached. Its text is sent to the client; any other
// Store error is reported as an internal error.
var ErrFull = errors.New("tracker is full")

// Peer is one member of a swarm.
type Peer struct {
	ID   [20]byte
	Addr netip.AddrPort // IPv4 unmapped, no zone
	Seed bool           // left was 0
}

// Family selects which address families a reply can carry.
type Family uint8

// The families. HTTP replies carry both (peers and peers6); a BEP 15 reply
// carries only the requester's own.
const (
	FamilyAny Family = iota
	FamilyIPv4
	FamilyIPv6
)

// Announce is one announce as a Store sees it, after the Handler applied
// its policy: the address is the one to hand out and NumWant is clamped.
type Announce struct {
	InfoHash metainfo.Hash
	Peer     Peer
	Event    tracker.Event
	// NumWant is how many other peers to return, at most.
	NumWant int
	// Family restricts the returned peers.
	Family Family
}

// Store keeps swarms. Implementations are safe for concurrent use, bound
// their memory, and forget peers that stop announcing. The Handler passes
// the time of each request, so stores need no clock of their own.
type Store interface {
	// Announce records a's peer in its swarm (a Stopped event removes it)
	// and appends to dst up to a.NumWant other peers of the swarm, chosen
	// at random when there are more, never the announcing peer itself
	// (same address or same peer id). It returns the swarm's counts after
	// the announce. It returns ErrFull when a cap forbids recording the
	// peer.
	Announce(a Announce, now time.Time, dst []Peer) ([]Peer, tracker.ScrapeResponse, error)
	// Scrape returns a swarm's counts, and false when the store has no
	// live peer for ih.
	Scrape(ih metainfo.Hash, now time.Time) (tracker.ScrapeResponse, bool)
}
