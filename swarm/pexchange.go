package swarm

import (
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/pex"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// Peer exchange (BEP 11): every peer that offers ut_pex is told, at most
// once a minute, which peers we are connected to (the listening addresses
// of those we dialled, or that told us their port), as a diff of what it
// was told before. What peers tell us is rate-limited, capped, checked for
// plausibility and added to the candidates like any other source's peers.

// maxPEXTake bounds the addresses taken from one ut_pex message: BEP 11's
// 50 added per message.
const maxPEXTake = pex.MaxSend

// sendPEX sends each peer that is due its ut_pex message. It runs on the
// loop's tick.
func (t *Torrent) sendPEX(now time.Time) {
	if !t.pexEnabled() {
		return
	}
	var connected []pex.Peer // gathered once, when the first peer is due
	gathered := false
	for _, p := range t.s.peers {
		id, ok := p.ext.ID(pex.Name)
		if !ok || !p.pexOut.Due(now) {
			continue
		}
		if !gathered {
			connected = t.pexPeers()
			gathered = true
		}
		others := make([]pex.Peer, 0, len(connected))
		for _, q := range connected {
			if q.Addr != p.listenAddr() {
				others = append(others, q)
			}
		}
		m, ok := p.pexOut.Next(now, others)
		if !ok {
			continue
		}
		p.conn.Send(wire.Message{ID: wire.Extended, ExtendedID: id, Payload: pex.Append(nil, m)})
		t.s.stats.pexSent++
		t.log.Debug("sent ut_pex", "addr", p.addr, "added", len(m.Added), "dropped", len(m.Dropped))
	}
}

// pexPeers lists the connected peers that may be passed on: those whose
// listening address we know.
func (t *Torrent) pexPeers() []pex.Peer {
	out := make([]pex.Peer, 0, len(t.s.peers))
	n := t.info.NumPieces()
	for _, q := range t.s.peers {
		a := q.listenAddr()
		if !a.IsValid() {
			continue
		}
		var flags byte
		if q.pieces == n {
			flags |= pex.FlagSeed
		}
		if q.conn.Outgoing {
			flags |= pex.FlagReachable
		}
		out = append(out, pex.Peer{Addr: a, Flags: flags})
	}
	return out
}

// listenAddr is where p accepts connections: the address we dialled, or
// its address with the port it announced; invalid when neither is known.
func (p *peer) listenAddr() netip.AddrPort {
	if p.conn.Outgoing {
		return netip.AddrPortFrom(p.addr.Addr().Unmap(), p.addr.Port())
	}
	if p.listenPort == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(p.addr.Addr().Unmap(), p.listenPort)
}

// onPEX takes a ut_pex message from p. Messages faster than BEP 11 allows
// and malformed ones are ignored, not fatal: PEX is a hint.
func (t *Torrent) onPEX(p *peer, payload []byte) {
	if !t.pexEnabled() {
		return // we never offered it for this torrent
	}
	if !p.pexIn.Allow(t.client.now()) {
		t.s.stats.pexIgnored++
		t.log.Debug("ignoring a too frequent ut_pex message", "addr", p.addr)
		return
	}
	m, err := pex.Parse(payload, pex.Limits{})
	if err != nil {
		t.s.stats.pexIgnored++
		t.log.Debug("ignoring a ut_pex message", "addr", p.addr, "err", err)
		return
	}
	t.s.stats.pexTaken++
	addrs := make([]netip.AddrPort, 0, min(len(m.Added), maxPEXTake))
	for _, a := range m.Added {
		if len(addrs) == maxPEXTake {
			break
		}
		if pex.Plausible(p.addr.Addr(), a.Addr) {
			addrs = append(addrs, a.Addr)
		}
	}
	t.log.Debug("got ut_pex", "addr", p.addr, "added", len(m.Added), "taken", len(addrs), "dropped", len(m.Dropped))
	// Dropped entries are not acted on: another peer may still know the
	// address, and a failed dial costs little.
	t.addCandidates(addrs, FromPEX)
}
