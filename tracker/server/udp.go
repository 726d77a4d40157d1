package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// BEP 15 constants.
const (
	udpProtocolID = 0x41727101980

	udpActionConnect  = 0
	udpActionAnnounce = 1
	udpActionScrape   = 2
	udpActionError    = 3

	udpAnnounceLen = 98
	// udpEpoch is the period of connection IDs: an ID is accepted in the
	// epoch it was issued and the next, so for one to two minutes.
	udpEpoch = time.Minute
	// maxUDPRequest is the read buffer: a scrape of 74 hashes is 1496
	// bytes; longer datagrams are truncated and then refused.
	maxUDPRequest = 2048
)

var be = binary.BigEndian

// ServeUDP answers BEP 15 connect, announce and scrape requests arriving
// on conn, one at a time, until conn is closed; then it returns nil.
// Another read error is returned. It may run on several conns at once;
// each call allocates its buffers once.
//
// Connection IDs are an HMAC of the client's IP address and the current
// minute under a key drawn at New, so the tracker keeps no state
// per connection and a spoofed source never gets past connect, whose
// reply is no larger than its request. Errors answering a request with a
// bad connection ID are sent only when no larger than the request.
func (h *Handler) ServeUDP(conn net.PacketConn) error {
	u := h.newUDPSession()
	in := make([]byte, maxUDPRequest)
	uc, _ := conn.(*net.UDPConn)
	for {
		var (
			n    int
			from netip.AddrPort
			addr net.Addr
			err  error
		)
		if uc != nil {
			n, from, err = uc.ReadFromUDPAddrPort(in)
		} else {
			n, addr, err = conn.ReadFrom(in)
			if err == nil {
				from = addrPortOf(addr)
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp tracker: read: %w", err)
		}
		from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
		if !from.IsValid() || from.Port() == 0 || n == len(in) {
			continue
		}
		out := u.handle(in[:n], from, h.now())
		if out == nil {
			continue
		}
		if uc != nil {
			_, err = uc.WriteToUDPAddrPort(out, from)
		} else {
			_, err = conn.WriteTo(out, addr)
		}
		if err != nil {
			h.log.Debug("udp tracker: write", "to", from, "err", err)
		}
	}
}

// addrPortOf converts a net.Addr from a PacketConn.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// udpSession is one ServeUDP loop's reusable state; not for concurrent
// use.
type udpSession struct {
	h     *Handler
	mac   hash.Hash // HMAC-SHA256 under h.udpKey
	msg   [24]byte  // the MAC's input: epoch and address; here so it does not escape per call
	sum   []byte    // the MAC's output
	peers []Peer    // the store's reply, reused
	out   []byte    // the datagram being built; replies alias it
}

func (h *Handler) newUDPSession() *udpSession {
	return &udpSession{
		h:     h,
		mac:   hmac.New(sha256.New, h.udpKey[:]),
		sum:   make([]byte, 0, sha256.Size),
		peers: make([]Peer, 0, MaxNumWant),
		out:   make([]byte, 0, 20+18*MaxNumWant),
	}
}

// handle returns the reply to one datagram from from, or nil for none.
// The reply aliases the session's buffer.
func (u *udpSession) handle(pkt []byte, from netip.AddrPort, now time.Time) []byte {
	if len(pkt) < 16 {
		return nil
	}
	action, tid := be.Uint32(pkt[8:]), be.Uint32(pkt[12:])
	epoch := now.Unix() / int64(udpEpoch/time.Second)
	if action == udpActionConnect {
		if be.Uint64(pkt) != udpProtocolID {
			return nil
		}
		b := be.AppendUint32(u.out[:0], udpActionConnect)
		b = be.AppendUint32(b, tid)
		return be.AppendUint64(b, u.connID(from, epoch))
	}
	if id := be.Uint64(pkt); id != u.connID(from, epoch) && id != u.connID(from, epoch-1) {
		if r := u.fail(tid, "invalid connection id"); len(r) <= len(pkt) {
			return r
		}
		return nil
	}
	h := u.h
	if h.limit != nil && !h.limit.allow(from.Addr(), now) {
		return u.fail(tid, reasonRateLimited)
	}
	switch action {
	case udpActionAnnounce:
		return u.announce(pkt, tid, from, now)
	case udpActionScrape:
		return u.scrape(pkt, tid, now)
	}
	return u.fail(tid, "invalid action")
}

func (u *udpSession) announce(pkt []byte, tid uint32, from netip.AddrPort, now time.Time) []byte {
	h := u.h
	if len(pkt) < udpAnnounceLen {
		return u.fail(tid, "invalid announce")
	}
	var ih metainfo.Hash
	var id [20]byte
	copy(ih[:], pkt[16:36])
	copy(id[:], pkt[36:56])
	left := be.Uint64(pkt[64:])
	var ev tracker.Event
	switch be.Uint32(pkt[80:]) {
	case 0:
		ev = tracker.None
	case 1:
		ev = tracker.Completed
	case 2:
		ev = tracker.Started
	case 3:
		ev = tracker.Stopped
	default:
		return u.fail(tid, "invalid event")
	}
	port := be.Uint16(pkt[96:])
	switch {
	case port == 0:
		return u.fail(tid, "invalid port")
	case left > math.MaxInt64:
		return u.fail(tid, "invalid left")
	case h.allow != nil && !h.allow(ih):
		return u.fail(tid, reasonNotTracked)
	}
	addr, fam := from.Addr(), FamilyIPv6
	if addr.Is4() {
		fam = FamilyIPv4
		if ip := netip.AddrFrom4([4]byte(pkt[84:88])); h.trustIP && ip != netip.IPv4Unspecified() {
			if !usable(ip) {
				return u.fail(tid, "invalid ip")
			}
			addr = ip
		}
	}
	want := int(int32(be.Uint32(pkt[92:])))
	if want < 0 {
		want = h.defWant
	}
	peers, c, err := h.store.Announce(Announce{
		InfoHash: ih,
		Peer:     Peer{ID: id, Addr: netip.AddrPortFrom(addr, port), Seed: left == 0},
		Event:    ev,
		NumWant:  min(want, h.maxWant),
		Family:   fam,
	}, now, u.peers[:0])
	if err != nil {
		return u.fail(tid, h.storeReason(err))
	}
	u.peers = peers[:0]
	h.announces.Add(1)
	iv, _ := h.intervals.Interval(c.Complete + c.Incomplete)
	b := be.AppendUint32(u.out[:0], udpActionAnnounce)
	b = be.AppendUint32(b, tid)
	b = be.AppendUint32(b, uint32(seconds(iv)))
	b = be.AppendUint32(b, clampU32(c.Incomplete))
	b = be.AppendUint32(b, clampU32(c.Complete))
	for _, p := range peers {
		if fam == FamilyIPv4 {
			ip := p.Addr.Addr().As4()
			b = append(b, ip[:]...)
		} else {
			ip := p.Addr.Addr().As16()
			b = append(b, ip[:]...)
		}
		b = be.AppendUint16(b, p.Addr.Port())
	}
	u.out = b[:0]
	return b
}

func (u *udpSession) scrape(pkt []byte, tid uint32, now time.Time) []byte {
	h := u.h
	n := (len(pkt) - 16) / 20
	switch {
	case n == 0:
		return u.fail(tid, ErrFullScrape.Error())
	case n > h.maxScrape:
		return u.fail(tid, ErrTooManyHashes.Error())
	}
	b := be.AppendUint32(u.out[:0], udpActionScrape)
	b = be.AppendUint32(b, tid)
	for i := range n {
		ih := metainfo.Hash(pkt[16+20*i : 36+20*i])
		var c tracker.ScrapeResponse
		if h.allow == nil || h.allow(ih) {
			c, _ = h.store.Scrape(ih, now)
		}
		b = be.AppendUint32(b, clampU32(c.Complete))
		b = be.AppendUint32(b, clampU32(c.Downloaded))
		b = be.AppendUint32(b, clampU32(c.Incomplete))
	}
	h.scrapes.Add(1)
	u.out = b[:0]
	return b
}

// fail returns an error reply.
func (u *udpSession) fail(tid uint32, reason string) []byte {
	u.h.failures.Add(1)
	b := be.AppendUint32(u.out[:0], udpActionError)
	b = be.AppendUint32(b, tid)
	return append(b, reason...)
}

// connID is the connection ID of from's address in epoch. The port is
// left out, as opentracker does: clients (this module's among them) may
// send from a new socket with a cached ID, and the ID need only prove that
// the address receives what is sent to it.
func (u *udpSession) connID(from netip.AddrPort, epoch int64) uint64 {
	msg := u.msg[:]
	be.PutUint64(msg, uint64(epoch))
	a := from.Addr().As16()
	copy(msg[8:], a[:])
	u.mac.Reset()
	u.mac.Write(msg)
	u.sum = u.mac.Sum(u.sum[:0])
	return be.Uint64(u.sum)
}

func clampU32(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }
