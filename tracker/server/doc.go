// Package server is a BitTorrent tracker: an http.Handler that answers
// /announce and /scrape (BEP 3, compact peers of BEP 23, peers6 of BEP 7,
// scrape of BEP 48), and a UDP tracker loop over a net.PacketConn (BEP 15).
//
// The frontend (query parsing, policy, response encoding) is separate from
// the peer store, which is the Store interface; MemoryStore, the default,
// keeps swarms in sharded maps with O(1) announces, expires peers that stop
// announcing and caps torrents and peers so that an announce flood cannot
// grow memory without bound. How often peers are told to come back is the
// IntervalPolicy interface: Static by default, or Growing with swarm size.
//
// Every request is hostile: the query is parsed by hand with caps on its
// length and parameter count, numwant is clamped, the peer's address is the
// socket's unless Config says an ip= parameter or X-Forwarded-For is to be
// trusted, full scrapes are refused, an optional allow-list limits which
// info-hashes are tracked, and an optional per-address rate limit bounds
// floods. Refusals are bencoded failure reasons that never carry internal
// error text.
//
// The package does not listen on sockets itself (the caller owns the
// http.Server and the PacketConn), persists nothing, resolves no names and
// starts no goroutines: expiry is amortised over announces, and
// MemoryStore.Expire sweeps on demand.
package server
