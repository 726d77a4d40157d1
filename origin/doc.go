// Package origin is the server side of transparent BitTorrent: the publisher.
//
// A Publisher wraps any http.Handler. A GET or HEAD whose Accept lists
// application/x-bittorrent with q > 0, for a regular file that the rules
// (minimum size, include and exclude globs) say is worth it, is answered with
// the file's metainfo: announce is the publisher's tracker, url-list is the
// resource's own URL (BEP 19), the piece length is automatic. Every other
// request goes to the wrapped handler, with Vary: Accept added for negotiable
// resources. A request carrying Authorization or Cookie never gets a torrent.
//
// Metainfo is built lazily, on a bounded pool of hashing workers, one build
// per file version (URL path, file, size and modification time), and kept in
// memory and in the data directory, so a restart does not hash again. While a
// hash is in progress a request waits at most Config.Wait and is then served
// plainly. A version that is no longer current is dropped and unseeded.
//
// Files come from a Resolver: a DirResolver maps URL paths into a directory
// (the http.FileServer mode) and an Upstream fetches each file once from an
// existing web server into a cache directory and is also the reverse proxy in
// front of it. FileStorage serves a published file's bytes to the swarm,
// read-only and straight from the file, and refuses to serve bytes that
// changed since the file was hashed.
//
// The package does not run the BitTorrent engine or the tracker: seeding goes
// through the Seeder interface, which the wiring implements with the swarm
// engine and FileStorage. It does not serve files itself either; the wrapped
// handler does.
package origin
