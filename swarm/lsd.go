package swarm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/lsd"
)

// LSDConfig configures local service discovery (BEP 14): the client
// multicasts which torrents it has on the local network, and connects to
// the peers it hears doing the same. It needs a peer listener (the port is
// what it announces), and never serves private torrents.
type LSDConfig struct {
	// Enabled turns it on.
	Enabled bool
	// Group is the IPv4 multicast group and port; the zero value means
	// BEP 14's 239.192.152.143:6771.
	Group netip.AddrPort
	// Interface is the name of the network interface to announce and
	// listen on; "" lets the system choose by its routes.
	Interface string
	// Interval is how often each torrent is announced again; 0 means
	// 5 minutes, and anything under BEP 14's minute is raised to one.
	Interval time.Duration
}

const (
	// lsdMinInterval is BEP 14's limit: one announce per torrent per
	// minute, besides the first.
	lsdMinInterval = time.Minute
	// lsdAcceptEvery is the least time between two announces taken from
	// one address for one torrent; faster ones are ignored.
	lsdAcceptEvery = 10 * time.Second
	// lsdMaxSenders bounds the announces remembered for that limit.
	lsdMaxSenders = 4096
)

// lsdService is a Client's LSD: one socket that listens to the group, one
// that sends, and a goroutine for each. Both goroutines belong to the
// Client's wait group and stop when it closes the sockets.
type lsdService struct {
	client   *Client
	group    *net.UDPAddr
	host     string // the Host header: the group as text
	cookie   string // ours, to ignore our own announces
	interval time.Duration
	recv     *net.UDPConn
	send     *net.UDPConn
	wake     chan struct{} // a torrent was added; buffered

	mu   sync.Mutex
	next map[metainfo.Hash]time.Time // torrents to announce, and when next; guarded by mu

	heard map[senderKey]time.Time // when each sender's announce was last taken; receive goroutine only
}

type senderKey struct {
	from netip.AddrPort
	ih   metainfo.Hash
}

// startLSD opens the sockets and starts the goroutines.
func (c *Client) startLSD(cfg LSDConfig) (*lsdService, error) {
	if c.port() == 0 {
		return nil, errors.New("swarm: LSD needs a peer listener")
	}
	group := cfg.Group
	if !group.IsValid() {
		group = netip.MustParseAddrPort(lsd.Group)
	}
	if !group.Addr().Is4() || !group.Addr().IsMulticast() {
		return nil, fmt.Errorf("swarm: LSD group %v is not an IPv4 multicast address", group)
	}
	var ifi *net.Interface
	var local *net.UDPAddr // sending from the interface's address picks it
	if cfg.Interface != "" {
		var err error
		if ifi, err = net.InterfaceByName(cfg.Interface); err != nil {
			return nil, fmt.Errorf("swarm: LSD interface: %w", err)
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("swarm: LSD interface %s: %w", cfg.Interface, err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				local = &net.UDPAddr{IP: p.Addr().AsSlice()}
				break
			}
		}
		if local == nil {
			return nil, fmt.Errorf("swarm: LSD interface %s has no IPv4 address", cfg.Interface)
		}
	}
	gaddr := net.UDPAddrFromAddrPort(group)
	recv, err := net.ListenMulticastUDP("udp4", ifi, gaddr)
	if err != nil {
		return nil, fmt.Errorf("swarm: LSD listening on %v: %w", group, err)
	}
	send, err := net.ListenUDP("udp4", local)
	if err != nil {
		recv.Close()
		return nil, fmt.Errorf("swarm: LSD socket: %w", err)
	}
	var ck [8]byte
	rand.Read(ck[:])
	s := &lsdService{
		client:   c,
		group:    gaddr,
		host:     group.String(),
		cookie:   hex.EncodeToString(ck[:]),
		interval: cfg.Interval,
		recv:     recv,
		send:     send,
		wake:     make(chan struct{}, 1),
		next:     map[metainfo.Hash]time.Time{},
		heard:    map[senderKey]time.Time{},
	}
	if s.interval <= 0 {
		s.interval = 5 * time.Minute
	}
	s.interval = max(s.interval, lsdMinInterval)
	c.wg.Go(s.receiveLoop)
	c.wg.Go(s.announceLoop)
	return s, nil
}

// close stops both goroutines; the Client waits for them.
func (s *lsdService) close() {
	s.recv.Close()
	s.send.Close()
}

// add starts announcing ih, the first time at once.
func (s *lsdService) add(ih metainfo.Hash) {
	s.mu.Lock()
	s.next[ih] = time.Time{}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// remove stops announcing ih.
func (s *lsdService) remove(ih metainfo.Hash) {
	s.mu.Lock()
	delete(s.next, ih)
	s.mu.Unlock()
}

func (s *lsdService) announceLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-s.client.done:
			return
		case <-s.wake:
		case <-timer.C:
		}
		now := s.client.now()
		var due []metainfo.Hash
		var soonest time.Time
		s.mu.Lock()
		for ih, at := range s.next {
			if !at.After(now) {
				due = append(due, ih)
				s.next[ih] = now.Add(s.interval)
				at = now.Add(s.interval)
			}
			if soonest.IsZero() || at.Before(soonest) {
				soonest = at
			}
		}
		s.mu.Unlock()
		for len(due) > 0 {
			n := min(len(due), lsd.MaxSendHashes)
			a := lsd.Announce{Host: s.host, Port: s.client.port(), Cookie: s.cookie}
			for _, ih := range due[:n] {
				a.InfoHashes = append(a.InfoHashes, ih)
			}
			due = due[n:]
			if _, err := s.send.WriteToUDP(lsd.Append(nil, a), s.group); err != nil {
				select {
				case <-s.client.done:
					return
				default:
				}
				s.client.log.Debug("LSD announce", "err", err)
			}
		}
		wait := time.Hour
		if !soonest.IsZero() {
			wait = max(soonest.Sub(now), time.Second)
		}
		timer.Reset(wait)
	}
}

func (s *lsdService) receiveLoop() {
	buf := make([]byte, lsd.DefaultMaxSize+1)
	for {
		n, from, err := s.recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-s.client.done:
				return
			default:
			}
			s.client.log.Debug("LSD receive", "err", err)
			if !sleepOrDone(s.client.done, 100*time.Millisecond) {
				return
			}
			continue
		}
		a, err := lsd.Parse(buf[:n], lsd.Limits{})
		if err != nil {
			s.client.log.Debug("ignoring an LSD datagram", "from", from, "err", err)
			continue
		}
		if a.Cookie == s.cookie {
			continue // our own, looped back
		}
		peer := netip.AddrPortFrom(from.Addr().Unmap(), a.Port)
		now := s.client.now()
		for _, ih := range a.InfoHashes {
			if !s.take(senderKey{peer, ih}, now) {
				continue
			}
			t, ok := s.client.Torrent(ih)
			if !ok || !t.lsdEnabled() {
				continue
			}
			s.client.log.Debug("LSD peer", "torrent", metainfo.Hash(ih).String()[:8], "addr", peer)
			t.offer([]netip.AddrPort{peer}, FromLSD)
		}
	}
}

// take rate-limits announces per sender and torrent, within a bounded
// memory.
func (s *lsdService) take(k senderKey, now time.Time) bool {
	if last, ok := s.heard[k]; ok && now.Sub(last) < lsdAcceptEvery {
		return false
	}
	if len(s.heard) >= lsdMaxSenders {
		for key, at := range s.heard {
			if now.Sub(at) >= lsdAcceptEvery {
				delete(s.heard, key)
			}
		}
		if len(s.heard) >= lsdMaxSenders {
			return false
		}
	}
	s.heard[k] = now
	return true
}

// offer hands addresses to the torrent's loop from another goroutine.
func (t *Torrent) offer(addrs []netip.AddrPort, origin Origin) {
	select {
	case t.cmds <- func() { t.addCandidates(addrs, origin) }:
	case <-t.done:
	case <-t.client.done:
	}
}
