package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// Numwant bounds.
const (
	DefaultNumWant = 50
	// MaxNumWant is the ceiling of Config.MaxNumWant.
	MaxNumWant = 200
)

// Failure reasons of the Handler's own refusals (parse errors have their
// own text). They are sent to clients as they are.
const (
	reasonNotTracked  = "torrent not tracked"
	reasonRateLimited = "rate limited"
	reasonBadAddress  = "invalid peer address"
	reasonInternal    = "internal error"
)

// DefaultRateLimit and DefaultRateBurst are what a tracker facing the
// network should use: a BitTorrent client announces every few minutes, so
// one request per second from an address, after a burst of 10, refuses
// floods only (HARDENING 90).
const (
	DefaultRateLimit = 1.0
	DefaultRateBurst = 10
)

// Config configures a Handler. The zero value is a working open tracker
// with an in-memory store.
type Config struct {
	// Store keeps the swarms. nil means a MemoryStore with default caps
	// and a TTL of twice the longest interval of Intervals.
	Store Store
	// Intervals decides the announce interval. nil means Static{}:
	// 30 min, min interval 5 min.
	Intervals IntervalPolicy
	// AllowList, when not nil, reports whether an info-hash is tracked.
	// Announces for other hashes get "torrent not tracked"; scrapes omit
	// them. nil tracks every hash. It must be safe for concurrent use.
	AllowList func(metainfo.Hash) bool
	// TrustIP honours an ip= parameter holding an IP literal. Off by
	// default: anyone could otherwise point a swarm at a victim.
	TrustIP bool
	// TrustForwardedFor takes the source address from the last
	// X-Forwarded-For entry, for a tracker behind a reverse proxy that
	// appends it. Off by default: the header is the client's to forge.
	TrustForwardedFor bool
	// MaxNumWant caps the peers in one reply. Default 50; at most 200.
	MaxNumWant int
	// DefaultNumWant is the peers returned when numwant is absent.
	// Default 50; at most MaxNumWant.
	DefaultNumWant int
	// MaxScrapeHashes caps the info-hashes of one scrape. Default 74
	// (what fits one UDP datagram); at most 1000. A scrape without
	// info_hash (a full scrape) is always refused.
	MaxScrapeHashes int
	// RateLimit is the sustained announces and scrapes per second allowed
	// from one source address (an IPv6 /64 counts as one); loopback, which
	// every local peer shares, is never limited. 0 disables the limit
	// (the default here; tbproxy's publish and tracker commands turn it
	// on, see DefaultRateLimit).
	RateLimit float64
	// RateBurst is the requests allowed at once before RateLimit applies.
	// Default 10 (DefaultRateBurst).
	RateBurst int
	// RateTable caps the addresses the rate limiter remembers. Default
	// 65,536.
	RateTable int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives refusals at debug level and store failures at warn
	// level; nil discards.
	Logger *slog.Logger
}

// Handler is the tracker: an http.Handler for announce and scrape, routed
// by the last path segment ("…/announce", "…/scrape") so that it can be
// mounted under any prefix, and the BEP 15 loop ServeUDP. Create it with
// New; it is safe for concurrent use.
type Handler struct {
	// Read-only after New.
	store     Store
	intervals IntervalPolicy
	allow     func(metainfo.Hash) bool
	trustIP   bool
	trustXFF  bool
	maxWant   int
	defWant   int
	maxScrape int
	limit     *limiter // nil: no rate limit
	now       func() time.Time
	log       *slog.Logger
	udpKey    [32]byte // HMAC key of UDP connection IDs
	textPlain []string // shared Content-Type header value; never modified

	pool sync.Pool // of *scratch

	announces atomic.Uint64
	scrapes   atomic.Uint64
	failures  atomic.Uint64
}

// scratch holds one request's reusable buffers.
type scratch struct {
	peers  []Peer
	hashes []metainfo.Hash
	buf    []byte
}

// maxPooledBuf is the largest response buffer kept for reuse.
const maxPooledBuf = 64 << 10

// Stats are a Handler's counters since New.
type Stats struct {
	Announces uint64 // announces answered (not refused), HTTP and UDP
	Scrapes   uint64 // scrapes answered, HTTP and UDP
	Failures  uint64 // requests answered with a failure reason
	// Torrents and Peers are the store's sizes when it reports them
	// (a Len() (torrents, peers int) method, as MemoryStore has), else 0.
	Torrents, Peers int
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{
		store:     cfg.Store,
		intervals: cfg.Intervals,
		allow:     cfg.AllowList,
		trustIP:   cfg.TrustIP,
		trustXFF:  cfg.TrustForwardedFor,
		maxWant:   cfg.MaxNumWant,
		defWant:   cfg.DefaultNumWant,
		maxScrape: cfg.MaxScrapeHashes,
		now:       cfg.Now,
		log:       cfg.Logger,
		textPlain: []string{"text/plain"},
	}
	if h.intervals == nil {
		h.intervals = Static{}
	}
	if h.store == nil {
		h.store = NewMemoryStore(MemoryConfig{TTL: 2 * longestInterval(h.intervals)})
	}
	if h.maxWant <= 0 {
		h.maxWant = DefaultNumWant
	}
	h.maxWant = min(h.maxWant, MaxNumWant)
	if h.defWant <= 0 {
		h.defWant = DefaultNumWant
	}
	h.defWant = min(h.defWant, h.maxWant)
	if h.maxScrape <= 0 {
		h.maxScrape = tracker.MaxScrapeHashes
	}
	h.maxScrape = min(h.maxScrape, 1000)
	if cfg.RateLimit > 0 {
		burst, table := cfg.RateBurst, cfg.RateTable
		if burst <= 0 {
			burst = DefaultRateBurst
		}
		if table <= 0 {
			table = 65536
		}
		h.limit = newLimiter(cfg.RateLimit, burst, table)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	rand.Read(h.udpKey[:]) // never fails (crypto/rand, Go 1.24+)
	h.pool.New = func() any {
		return &scratch{peers: make([]Peer, 0, MaxNumWant), buf: make([]byte, 0, 1024)}
	}
	return h
}

// Stats returns the counters.
func (h *Handler) Stats() Stats {
	s := Stats{Announces: h.announces.Load(), Scrapes: h.scrapes.Load(), Failures: h.failures.Load()}
	if l, ok := h.store.(interface{ Len() (int, int) }); ok {
		s.Torrents, s.Peers = l.Len()
	}
	return s
}

// ServeHTTP answers GET or HEAD on a path ending in /announce or /scrape
// with a bencoded body and 200 OK, refusals included (as BEP 3 clients
// expect a "failure reason"). Other paths are 404 and other methods 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var announce bool
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/announce"):
		announce = true
	case strings.HasSuffix(p, "/scrape"):
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	sc := h.pool.Get().(*scratch)
	var body []byte
	if announce {
		body = h.announceHTTP(r, sc)
	} else {
		body = h.scrapeHTTP(r, sc)
	}
	hdr := w.Header()
	hdr["Content-Type"] = h.textPlain
	if len(body) >= 2048 { // below that, net/http sets Content-Length itself
		hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	if cap(body) > maxPooledBuf {
		body = make([]byte, 0, 1024) // let a rare huge reply's buffer go
	}
	sc.buf = body[:0]
	h.pool.Put(sc)
}

// announceHTTP handles one announce and returns the body, built in sc.buf.
func (h *Handler) announceHTTP(r *http.Request, sc *scratch) []byte {
	src, ok := h.source(r)
	if !ok {
		return h.fail(r, sc, reasonBadAddress)
	}
	now := h.now()
	if h.limit != nil && !h.limit.allow(src, now) {
		return h.fail(r, sc, reasonRateLimited)
	}
	req, err := ParseAnnounce(r.URL.RawQuery)
	if err != nil {
		return h.fail(r, sc, err.Error())
	}
	if h.allow != nil && !h.allow(req.InfoHash) {
		return h.fail(r, sc, reasonNotTracked)
	}
	addr := src
	if h.trustIP && req.IP.IsValid() {
		if !usable(req.IP) {
			return h.fail(r, sc, "invalid ip")
		}
		addr = req.IP
	}
	want := req.NumWant
	if want < 0 {
		want = h.defWant
	}
	peers, counts, err := h.store.Announce(Announce{
		InfoHash: req.InfoHash,
		Peer:     Peer{ID: req.PeerID, Addr: netip.AddrPortFrom(addr, req.Port), Seed: req.LeftKnown && req.Left == 0},
		Event:    req.Event,
		NumWant:  min(want, h.maxWant),
		Family:   FamilyAny,
	}, now, sc.peers[:0])
	if err != nil {
		return h.fail(r, sc, h.storeReason(err))
	}
	sc.peers = peers[:0]
	h.announces.Add(1)
	iv, miv := h.intervals.Interval(counts.Complete + counts.Incomplete)
	return appendAnnounce(sc.buf[:0], counts, iv, miv, peers, req.Compact, req.NoPeerID)
}

// scrapeHTTP handles one scrape and returns the body, built in sc.buf.
func (h *Handler) scrapeHTTP(r *http.Request, sc *scratch) []byte {
	src, ok := h.source(r)
	if !ok {
		return h.fail(r, sc, reasonBadAddress)
	}
	now := h.now()
	if h.limit != nil && !h.limit.allow(src, now) {
		return h.fail(r, sc, reasonRateLimited)
	}
	hashes, err := ParseScrape(r.URL.RawQuery, h.maxScrape, sc.hashes[:0])
	sc.hashes = hashes[:0]
	if err != nil {
		return h.fail(r, sc, err.Error())
	}
	// Bencoded dictionary keys are sorted and unique.
	slices.SortFunc(hashes, func(a, b metainfo.Hash) int { return bytes.Compare(a[:], b[:]) })
	hashes = slices.Compact(hashes)
	b := append(sc.buf[:0], "d5:filesd"...)
	for _, ih := range hashes {
		if h.allow != nil && !h.allow(ih) {
			continue
		}
		c, _ := h.store.Scrape(ih, now) // an unknown hash has zero counts
		b = append(b, "20:"...)
		b = append(b, ih[:]...)
		b = append(b, 'd')
		b = appendKeyInt(b, "complete", c.Complete)
		b = appendKeyInt(b, "downloaded", c.Downloaded)
		b = appendKeyInt(b, "incomplete", c.Incomplete)
		b = append(b, 'e')
	}
	h.scrapes.Add(1)
	return append(b, "ee"...)
}

// source is the address a request came from: the socket's, or the last
// X-Forwarded-For entry when trusted and valid.
func (h *Handler) source(r *http.Request) (netip.Addr, bool) {
	if h.trustXFF {
		if v := r.Header["X-Forwarded-For"]; len(v) > 0 {
			last := v[len(v)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil && usable(a.Unmap()) {
				return a.Unmap().WithZone(""), true
			}
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// usable reports whether a client-supplied address may be handed to peers.
func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// storeReason is the failure reason for a store error: ErrFull's own text,
// never the text of another error.
func (h *Handler) storeReason(err error) string {
	if errors.Is(err, ErrFull) {
		return ErrFull.Error()
	}
	h.log.Warn("tracker: store failed", "err", err)
	return reasonInternal
}

// fail counts and logs a refusal and returns its body.
func (h *Handler) fail(r *http.Request, sc *scratch, reason string) []byte {
	h.failures.Add(1)
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("tracker: refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", reason)
	}
	return appendFailure(sc.buf[:0], reason)
}

// appendFailure appends a bencoded failure reason.
func appendFailure(b []byte, reason string) []byte {
	b = append(b, "d14:failure reason"...)
	b = appendString(b, reason)
	return append(b, 'e')
}

// appendAnnounce appends a bencoded announce reply. Keys are in the
// sorted order bencoding requires.
func appendAnnounce(b []byte, c tracker.ScrapeResponse, iv, miv time.Duration, peers []Peer, compact, noPeerID bool) []byte {
	b = append(b, 'd')
	b = appendKeyInt(b, "complete", c.Complete)
	b = appendKeyInt(b, "downloaded", c.Downloaded)
	b = appendKeyInt(b, "incomplete", c.Incomplete)
	b = appendKeyInt(b, "interval", seconds(iv))
	b = appendKeyInt(b, "min interval", seconds(miv))
	if !compact {
		b = append(b, "5:peersl"...)
		for _, p := range peers {
			var tmp [48]byte
			b = append(b, "d2:ip"...)
			b = appendString(b, p.Addr.Addr().AppendTo(tmp[:0]))
			if !noPeerID {
				b = append(b, "7:peer id20:"...)
				b = append(b, p.ID[:]...)
			}
			b = appendKeyInt(b, "port", int(p.Addr.Port()))
			b = append(b, 'e')
		}
		return append(b, "ee"...)
	}
	n6 := 0
	for _, p := range peers {
		if !p.Addr.Addr().Is4() {
			n6++
		}
	}
	b = append(b, "5:peers"...)
	b = strconv.AppendInt(b, int64(6*(len(peers)-n6)), 10)
	b = append(b, ':')
	for _, p := range peers {
		if a := p.Addr.Addr(); a.Is4() {
			ip := a.As4()
			b = append(b, ip[:]...)
			b = append(b, byte(p.Addr.Port()>>8), byte(p.Addr.Port()))
		}
	}
	if n6 > 0 {
		b = append(b, "6:peers6"...)
		b = strconv.AppendInt(b, int64(18*n6), 10)
		b = append(b, ':')
		for _, p := range peers {
			if a := p.Addr.Addr(); !a.Is4() {
				ip := a.As16()
				b = append(b, ip[:]...)
				b = append(b, byte(p.Addr.Port()>>8), byte(p.Addr.Port()))
			}
		}
	}
	return append(b, 'e')
}

// appendString appends a bencoded byte string.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// appendKeyInt appends a bencoded key and integer value.
func appendKeyInt(b []byte, key string, n int) []byte {
	b = appendString(b, key)
	b = append(b, 'i')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, 'e')
}

// seconds is d in whole seconds, at least 1.
func seconds(d time.Duration) int { return max(int(d/time.Second), 1) }
