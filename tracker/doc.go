// Package tracker speaks the client side of the BitTorrent tracker
// protocols: the announce and scrape wire types, a parser for HTTP tracker
// responses (BEP 3, 23, 7, 48), an HTTP(S) client, a UDP client (BEP 15,
// 41), the BEP 12 tier order with backoff, and a Client that picks the
// right protocol from a URL's scheme.
//
// Every tracker reply is treated as hostile: bodies and peer lists are
// capped by Limits, intervals are clamped, malformed peer entries are
// skipped rather than trusted, and text meant for humans is sanitised
// before it reaches an error or a log. Peers named by a DNS name are
// skipped: the package never resolves a name a tracker supplied.
//
// The package does not contain the tracker server (see tracker/server),
// does not decide which addresses may be dialled (loopback and private
// peers are returned as given; the engine's dial policy filters them, and
// the engine injects an SSRF-safe dialer or http.Client), and holds no
// package-level state.
package tracker
