package dht

import (
	"net/netip"
	"slices"
	"time"
)

// BEP 5 constants.
const (
	// K is the size of a bucket, and how many nodes a lookup converges on.
	K = 8
	// goodFor is how long a node stays good after it last answered us (or,
	// if it ever answered, after it last queried us).
	goodFor = 15 * time.Minute
	// badAfter is how many queries in a row a node may leave unanswered
	// before it is bad and may be replaced.
	badAfter = 2
	// maxBuckets is one bucket per bit of the ID space.
	maxBuckets = 160
)

// node is one entry of the routing table.
type node struct {
	id        ID
	addr      netip.AddrPort
	lastReply time.Time // last response from it; zero if it never answered
	lastQuery time.Time // last query from it
	fails     int       // queries in a row it left unanswered
	verified  bool      // its ID obeys BEP 42 for its address
}

func (n *node) good(now time.Time) bool {
	if n.fails > 0 || n.lastReply.IsZero() {
		return false
	}
	return now.Sub(n.lastReply) < goodFor || now.Sub(n.lastQuery) < goodFor
}

func (n *node) bad() bool { return n.fails >= badAfter }

// bucket holds up to K nodes, and up to K replacements heard while it
// was full.
type bucket struct {
	nodes        []*node
	replacements []*node   // newest last; all have answered us once
	changed      time.Time // a node was added to it, or answered
}

// table is the BEP 5 routing table: buckets[i] holds the nodes whose ID
// shares exactly i leading bits with self, except the last, which holds
// every node sharing at least len(buckets)-1 bits: the range our own ID
// is in, the only one that splits. It is a plain synchronous type: it does
// no I/O and asks its caller to ping nodes instead.
type table struct {
	self       ID
	allowLocal bool                 // accept loopback and private addresses, several per IP
	buckets    []*bucket            // never empty
	byIP       map[netip.Addr]*node // restricts the table to one node per IP unless allowLocal
	byAddr     map[netip.AddrPort]*node
	created    time.Time
}

func newTable(self ID, allowLocal bool, now time.Time) *table {
	return &table{
		self:       self,
		allowLocal: allowLocal,
		buckets:    []*bucket{{changed: now}},
		byIP:       map[netip.Addr]*node{},
		byAddr:     map[netip.AddrPort]*node{},
		created:    now,
	}
}

func (t *table) index(id ID) int {
	return min(commonPrefix(t.self, id), len(t.buckets)-1)
}

func (t *table) len() int { return len(t.byAddr) }

// heardQuery notes that the node id at addr queried us. Only a node
// already in the table is updated: an unverified query could come from a
// spoofed address, so a newcomer enters only once it answers a ping.
// wanted reports whether the caller should ping it.
func (t *table) heardQuery(id ID, addr netip.AddrPort, now time.Time) (wanted bool) {
	if n := t.byAddr[addr]; n != nil {
		if n.id == id {
			n.lastQuery = now
		}
		return false
	}
	return t.wouldAdd(id, addr, now)
}

// wouldAdd reports whether a node id at addr would find a place now.
func (t *table) wouldAdd(id ID, addr netip.AddrPort, now time.Time) bool {
	if !t.acceptable(id, addr) {
		return false
	}
	i := t.index(id)
	b := t.buckets[i]
	if len(b.nodes) < K || i == len(t.buckets)-1 && len(t.buckets) < maxBuckets {
		return true
	}
	return slices.ContainsFunc(b.nodes, func(n *node) bool { return n.bad() })
}

func (t *table) acceptable(id ID, addr netip.AddrPort) bool {
	if id == t.self || !addrOK(addr, t.allowLocal) {
		return false
	}
	if !t.allowLocal {
		if n := t.byIP[addr.Addr()]; n != nil && n.addr != addr {
			return false // one node per IP: a node-ID flood from one host takes one slot
		}
	}
	return true
}

// heardReply notes that the node id at addr answered a query we sent to
// addr. It returns the questionable nodes the caller should ping because
// the newcomer waits for their place.
func (t *table) heardReply(id ID, addr netip.AddrPort, now time.Time) (ping []netip.AddrPort) {
	if n := t.byAddr[addr]; n != nil {
		if n.id != id {
			// The address now answers with another ID: a restart. Drop the
			// old entry and treat this one as new.
			t.remove(n)
		} else {
			n.lastReply, n.fails = now, 0
			t.buckets[t.index(id)].changed = now
			return nil
		}
	}
	if !t.acceptable(id, addr) {
		return nil
	}
	n := &node{id: id, addr: addr, lastReply: now, verified: bep42Valid(addr.Addr(), id)}
	for {
		i := t.index(id)
		b := t.buckets[i]
		if slices.ContainsFunc(b.nodes, func(o *node) bool { return o.id == id }) {
			return nil // the same ID at another address: keep the one we had
		}
		if len(b.nodes) < K {
			t.add(b, n, now)
			return nil
		}
		if j := slices.IndexFunc(b.nodes, func(o *node) bool { return o.bad() }); j >= 0 {
			t.remove(b.nodes[j])
			t.add(b, n, now)
			return nil
		}
		if i == len(t.buckets)-1 && len(t.buckets) < maxBuckets {
			t.split()
			continue
		}
		// BEP 42: prefer nodes whose ID matches their address.
		if n.verified {
			if j := slices.IndexFunc(b.nodes, func(o *node) bool { return !o.verified && !o.good(now) }); j >= 0 {
				t.remove(b.nodes[j])
				t.add(b, n, now)
				return nil
			}
		}
		t.addReplacement(b, n)
		for _, o := range b.nodes {
			if !o.good(now) {
				ping = append(ping, o.addr)
			}
		}
		return ping
	}
}

func (t *table) add(b *bucket, n *node, now time.Time) {
	b.nodes = append(b.nodes, n)
	b.changed = now
	t.byAddr[n.addr] = n
	t.byIP[n.addr.Addr()] = n
	b.replacements = slices.DeleteFunc(b.replacements, func(o *node) bool { return o.addr == n.addr })
}

func (t *table) addReplacement(b *bucket, n *node) {
	b.replacements = slices.DeleteFunc(b.replacements, func(o *node) bool { return o.addr == n.addr || o.id == n.id })
	if len(b.replacements) >= K {
		b.replacements = slices.Delete(b.replacements, 0, 1)
	}
	b.replacements = append(b.replacements, n)
}

func (t *table) remove(n *node) {
	b := t.buckets[t.index(n.id)]
	b.nodes = slices.DeleteFunc(b.nodes, func(o *node) bool { return o == n })
	delete(t.byAddr, n.addr)
	if t.byIP[n.addr.Addr()] == n {
		delete(t.byIP, n.addr.Addr())
	}
}

// split divides the last bucket: the nodes sharing one more bit with
// self move to a new last bucket.
func (t *table) split() {
	last := t.buckets[len(t.buckets)-1]
	depth := len(t.buckets)
	next := &bucket{changed: last.changed}
	keep := func(ns []*node) (stay, move []*node) {
		for _, n := range ns {
			if commonPrefix(t.self, n.id) >= depth {
				move = append(move, n)
			} else {
				stay = append(stay, n)
			}
		}
		return stay, move
	}
	last.nodes, next.nodes = keep(last.nodes)
	last.replacements, next.replacements = keep(last.replacements)
	t.buckets = append(t.buckets, next)
}

// failed notes that addr left a query unanswered. A node that turns bad
// gives its place to the newest replacement of its bucket.
func (t *table) failed(addr netip.AddrPort, now time.Time) {
	n := t.byAddr[addr]
	if n == nil {
		return
	}
	n.fails++
	if !n.bad() {
		return
	}
	b := t.buckets[t.index(n.id)]
	t.remove(n)
	for len(b.replacements) > 0 {
		r := b.replacements[len(b.replacements)-1]
		b.replacements = b.replacements[:len(b.replacements)-1]
		if t.byAddr[r.addr] == nil && t.acceptable(r.id, r.addr) {
			t.add(b, r, now)
			return
		}
	}
	// No replacement: keep the bad node, which lookups skip, until one comes.
	b.nodes = append(b.nodes, n)
	t.byAddr[n.addr] = n
	t.byIP[n.addr.Addr()] = n
}

// closest returns up to n nodes that are not bad, closest to target first.
func (t *table) closest(target ID, n int) []*node {
	var all []*node
	for _, b := range t.buckets {
		for _, x := range b.nodes {
			if !x.bad() {
				all = append(all, x)
			}
		}
	}
	slices.SortFunc(all, func(a, b *node) int {
		if closer(target, a.id, b.id) {
			return -1
		}
		if a.id == b.id {
			return 0
		}
		return 1
	})
	return all[:min(n, len(all))]
}

// questionable returns the nodes that are neither good nor bad, to ping.
func (t *table) questionable(now time.Time) []netip.AddrPort {
	var out []netip.AddrPort
	for _, b := range t.buckets {
		for _, n := range b.nodes {
			if !n.good(now) && !n.bad() {
				out = append(out, n.addr)
			}
		}
	}
	return out
}

// stale returns a random target in the bucket that has gone unchanged
// longest, if that is goodFor or more, and marks that bucket changed: the
// caller refreshes it. One bucket a call: the others stay stale for the
// calls that follow, so that every bucket gets its refresh (BEP 5).
func (t *table) stale(now time.Time) (ID, bool) {
	oldest := -1
	for i, b := range t.buckets {
		if now.Sub(b.changed) >= goodFor && (oldest < 0 || b.changed.Before(t.buckets[oldest].changed)) {
			oldest = i
		}
	}
	if oldest < 0 {
		return ID{}, false
	}
	t.buckets[oldest].changed = now
	if oldest == len(t.buckets)-1 {
		return randomIDWithPrefix(t.self, min(oldest, maxBuckets-1)), true
	}
	return randomIDWithPrefix(t.self, oldest), true
}

// addrOK reports whether a is an address this DHT talks to or hands out:
// IPv4 with a port, not unspecified, multicast or broadcast; and unless
// allowLocal, a global unicast address outside private networks.
func addrOK(a netip.AddrPort, allowLocal bool) bool {
	ip := a.Addr().Unmap()
	if a.Port() == 0 || !ip.Is4() || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if allowLocal {
		return true
	}
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !ip.IsLoopback()
}
