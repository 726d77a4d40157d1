package tracker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// BEP 15 constants.
const (
	udpProtocolID = 0x41727101980

	actionConnect  = 0
	actionAnnounce = 1
	actionScrape   = 2
	actionError    = 3

	// connIDLifetime is how long a connection ID may be used, counted
	// from before the connect request was sent.
	connIDLifetime = time.Minute

	defaultRetries     = 8
	defaultBaseTimeout = 15 * time.Second
	maxTimeout         = time.Hour // caps BaseTimeout<<n for large Retries

	udpAnnounceLen = 98
	maxDatagram    = 65536
)

// errNoReply marks one attempt that timed out; it never leaves the package.
var errNoReply = errors.New("tracker: no reply")

// UDPClient announces to and scrapes UDP trackers (BEP 15, with the BEP
// 41 URL option). It caches connection IDs per tracker address, so keep
// one UDPClient (by pointer) for the life of the engine. The zero value
// is ready to use; it must not be copied after first use.
//
// With the BEP 15 defaults a silent tracker is retried for about two
// hours (15 s·(2⁹−1)); callers bound an announce with ctx.
type UDPClient struct {
	// Dial opens the socket to a tracker; nil means a net.Dialer. The
	// engine injects one that enforces its address policy.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Limits bounds replies; zero fields take their defaults. MaxBody is
	// not used: a datagram is at most 64 KiB.
	Limits Limits
	// Retries is how many times a request is retransmitted after a
	// timeout; 0 means 8 (BEP 15), negative means none.
	Retries int
	// BaseTimeout is the wait before the first retransmission; the n-th
	// waits BaseTimeout*2^n. 0 means 15 s (BEP 15).
	BaseTimeout time.Duration
	// Now is the clock for connection-ID expiry; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	// conns maps a tracker's "host:port" to its last connection ID.
	// Expired entries are pruned whenever one is stored.
	conns map[string]connID
}

// connID is a BEP 15 connection ID and when it stops being usable.
type connID struct {
	id      uint64
	expires time.Time
}

// Announce sends req to the UDP tracker at rawURL
// ("udp://host:port[/path]"). A path or query travels as a BEP 41 URLData
// option.
func (c *UDPClient) Announce(ctx context.Context, rawURL string, req AnnounceRequest) (AnnounceResponse, error) {
	lim := c.Limits.withDefaults()
	hostport, urlData, err := parseUDPURL(rawURL)
	if err != nil {
		return AnnounceResponse{}, err
	}
	conn, err := c.dial(ctx, hostport)
	if err != nil {
		return AnnounceResponse{}, err
	}
	defer conn.Close()
	ipv6 := remoteIsIPv6(conn)
	build := func(id uint64, tid uint32) []byte { return announcePacket(id, tid, req, lim, urlData) }
	reply, err := c.roundTrip(ctx, conn, hostport, actionAnnounce, build)
	if err != nil {
		return AnnounceResponse{}, err
	}
	return ParseUDPAnnounceResponse(reply, ipv6, lim)
}

// Scrape asks the UDP tracker at rawURL for the counts of up to
// MaxScrapeHashes info-hashes. A short reply yields the hashes it covers.
func (c *UDPClient) Scrape(ctx context.Context, rawURL string, hashes []metainfo.Hash) (map[metainfo.Hash]ScrapeResponse, error) {
	if err := checkScrapeHashes(hashes); err != nil {
		return nil, err
	}
	hostport, _, err := parseUDPURL(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := c.dial(ctx, hostport)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	build := func(id uint64, tid uint32) []byte {
		b := make([]byte, 16, 16+20*len(hashes))
		binary.BigEndian.PutUint64(b, id)
		binary.BigEndian.PutUint32(b[8:], actionScrape)
		binary.BigEndian.PutUint32(b[12:], tid)
		for _, h := range hashes {
			b = append(b, h[:]...)
		}
		return b
	}
	reply, err := c.roundTrip(ctx, conn, hostport, actionScrape, build)
	if err != nil {
		return nil, err
	}
	return parseUDPScrapeResponse(reply, hashes)
}

// ParseUDPAnnounceResponse parses a BEP 15 announce reply datagram,
// header included. The transaction ID is not checked here (the client
// does). An error action yields a *FailureError, and so does a bare
// 8-byte announce header, which is how opentracker refuses a hash that
// is not on its whitelist; another short datagram or another action
// yields an error wrapping ErrBadResponse. Peers are 6-byte
// entries from an IPv4 tracker and 18-byte ones when ipv6 is set; a
// trailing partial entry is ignored. UDP carries no min interval, so
// MinInterval is lim.MinInterval.
func ParseUDPAnnounceResponse(b []byte, ipv6 bool, lim Limits) (AnnounceResponse, error) {
	lim = lim.withDefaults()
	if len(b) == 8 && binary.BigEndian.Uint32(b) == actionAnnounce {
		// opentracker's refusal (a hash not on its whitelist): the header
		// and nothing else.
		return AnnounceResponse{}, &FailureError{Reason: "announce refused (empty udp reply)"}
	}
	if err := checkUDPHeader(b, actionAnnounce, 20); err != nil {
		return AnnounceResponse{}, err
	}
	resp := AnnounceResponse{
		Interval:    clampSeconds(int64(binary.BigEndian.Uint32(b[8:])), lim.MinInterval, lim.MaxInterval),
		MinInterval: lim.MinInterval,
		Incomplete:  clampCount(int64(binary.BigEndian.Uint32(b[12:]))),
		Complete:    clampCount(int64(binary.BigEndian.Uint32(b[16:]))),
	}
	ipLen := 4
	if ipv6 {
		ipLen = 16
	}
	ps := newPeerSet(lim.MaxPeers)
	ps.addCompact(b[20:], ipLen)
	resp.Peers = ps.list
	return resp, nil
}

// parseUDPConnectResponse returns the connection ID of a connect reply.
func parseUDPConnectResponse(b []byte) (uint64, error) {
	if err := checkUDPHeader(b, actionConnect, 16); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[8:]), nil
}

// parseUDPScrapeResponse maps the 12-byte entries of a scrape reply to
// the requested hashes, in order.
func parseUDPScrapeResponse(b []byte, hashes []metainfo.Hash) (map[metainfo.Hash]ScrapeResponse, error) {
	if err := checkUDPHeader(b, actionScrape, 8); err != nil {
		return nil, err
	}
	b = b[8:]
	out := make(map[metainfo.Hash]ScrapeResponse, min(len(hashes), len(b)/12))
	for _, h := range hashes {
		if len(b) < 12 {
			break
		}
		out[h] = ScrapeResponse{
			Complete:   clampCount(int64(binary.BigEndian.Uint32(b))),
			Downloaded: clampCount(int64(binary.BigEndian.Uint32(b[4:]))),
			Incomplete: clampCount(int64(binary.BigEndian.Uint32(b[8:]))),
		}
		b = b[12:]
	}
	return out, nil
}

// checkUDPHeader checks a reply's action and minimum length.
func checkUDPHeader(b []byte, action uint32, minLen int) error {
	if len(b) < 8 {
		return fmt.Errorf("%w: udp datagram of %d bytes", ErrBadResponse, len(b))
	}
	switch got := binary.BigEndian.Uint32(b); got {
	case actionError:
		return newFailure(string(b[8:]))
	case action:
	default:
		return fmt.Errorf("%w: udp action %d, want %d", ErrBadResponse, got, action)
	}
	if len(b) < minLen {
		return fmt.Errorf("%w: udp reply of %d bytes, want at least %d", ErrBadResponse, len(b), minLen)
	}
	return nil
}

// parseUDPURL splits "udp://host:port[/path][?query]" into the address to
// dial and the BEP 41 URLData (path and query; empty for "" or "/").
func parseUDPURL(s string) (hostport, urlData string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("tracker: bad url: %w", errors.Unwrap(err))
	}
	if u.Scheme != "udp" {
		return "", "", fmt.Errorf("%w: %q", ErrUnsupportedScheme, sanitize(u.Scheme))
	}
	host, port := u.Hostname(), u.Port()
	if host == "" || port == "" {
		return "", "", errors.New("tracker: udp url needs host and port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", "", errors.New("tracker: udp url has a bad port")
	}
	urlData = u.EscapedPath()
	if urlData == "/" {
		urlData = ""
	}
	if u.RawQuery != "" {
		urlData += "?" + u.RawQuery
	}
	return u.Host, urlData, nil
}

// announcePacket builds a BEP 15 announce request.
func announcePacket(id uint64, tid uint32, req AnnounceRequest, lim Limits, urlData string) []byte {
	b := make([]byte, udpAnnounceLen, udpAnnounceLen+len(urlData)+2*(len(urlData)/255+1))
	be := binary.BigEndian
	be.PutUint64(b[0:], id)
	be.PutUint32(b[8:], actionAnnounce)
	be.PutUint32(b[12:], tid)
	copy(b[16:36], req.InfoHash[:])
	copy(b[36:56], req.PeerID[:])
	be.PutUint64(b[56:], uint64(max(req.Downloaded, 0)))
	be.PutUint64(b[64:], uint64(max(req.Left, 0)))
	be.PutUint64(b[72:], uint64(max(req.Uploaded, 0)))
	var ev uint32 // BEP 15 numbers events differently from the Event type
	switch req.Event {
	case Completed:
		ev = 1
	case Started:
		ev = 2
	case Stopped:
		ev = 3
	}
	be.PutUint32(b[80:], ev)
	// b[84:88], the IP address, stays 0: the tracker uses the source.
	be.PutUint32(b[88:], req.Key)
	numWant := int32(-1)
	if req.NumWant > 0 {
		numWant = int32(min(req.NumWant, lim.MaxPeers, 1<<31-1))
	}
	be.PutUint32(b[92:], uint32(numWant))
	be.PutUint16(b[96:], req.Port)
	for d := urlData; d != ""; {
		n := min(len(d), 255)
		b = append(b, 2, byte(n))
		b = append(b, d[:n]...)
		d = d[n:]
	}
	return b
}

// dial opens the connected UDP socket for one call.
func (c *UDPClient) dial(ctx context.Context, hostport string) (net.Conn, error) {
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("tracker: udp dial: %w", err)
	}
	return conn, nil
}

// roundTrip sends the request that build makes and returns the matching
// reply, connecting first when no live connection ID is cached, and
// retransmitting with exponential timeouts.
func (c *UDPClient) roundTrip(ctx context.Context, conn net.Conn, key string, action uint32, build func(id uint64, tid uint32) []byte) ([]byte, error) {
	retries := c.Retries
	switch {
	case retries == 0:
		retries = defaultRetries
	case retries < 0:
		retries = 0
	}
	base := c.BaseTimeout
	if base <= 0 {
		base = defaultBaseTimeout
	}
	// Wake a blocked read when ctx ends. exchange re-checks ctx after
	// each deadline it sets, so this cannot be overwritten unnoticed.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, maxDatagram)
	for n := 0; n <= retries; n++ {
		timeout := maxTimeout
		if n < 32 && base < maxTimeout>>n {
			timeout = base << n
		}
		id, ok := c.cachedID(key)
		if !ok {
			tid := newTID()
			var pkt [16]byte
			binary.BigEndian.PutUint64(pkt[0:], udpProtocolID)
			binary.BigEndian.PutUint32(pkt[8:], actionConnect)
			binary.BigEndian.PutUint32(pkt[12:], tid)
			sent := c.now()
			reply, err := exchange(ctx, conn, buf, pkt[:], actionConnect, tid, timeout)
			if errors.Is(err, errNoReply) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if id, err = parseUDPConnectResponse(reply); err != nil {
				return nil, err
			}
			c.storeID(key, connID{id: id, expires: sent.Add(connIDLifetime)})
		}
		tid := newTID()
		reply, err := exchange(ctx, conn, buf, build(id, tid), action, tid, timeout)
		if errors.Is(err, errNoReply) {
			// Some trackers ignore a stale ID silently: reconnect next time.
			c.dropID(key, id)
			continue
		}
		if err != nil {
			var fe *FailureError
			if errors.As(err, &fe) {
				c.dropID(key, id) // the refusal may be about the ID
			}
			return nil, err
		}
		return append([]byte(nil), reply...), nil
	}
	return nil, fmt.Errorf("tracker: udp %s: no reply after %d attempts", key, retries+1)
}

// exchange writes pkt and waits up to timeout for a reply carrying tid
// and action (or an error action). Datagrams with another transaction ID
// or action are ignored. The reply aliases buf.
func exchange(ctx context.Context, conn net.Conn, buf, pkt []byte, action, tid uint32, timeout time.Duration) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := conn.Write(pkt); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("tracker: udp send: %w", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("tracker: udp: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errNoReply
			}
			return nil, fmt.Errorf("tracker: udp receive: %w", err)
		}
		b := buf[:n]
		if n < 8 || binary.BigEndian.Uint32(b[4:]) != tid {
			continue
		}
		switch binary.BigEndian.Uint32(b) {
		case actionError:
			return nil, newFailure(string(b[8:]))
		case action:
			return b, nil
		}
	}
}

// newTID returns a random transaction ID.
func newTID() uint32 {
	var b [4]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return binary.BigEndian.Uint32(b[:])
}

// remoteIsIPv6 reports whether conn's peer is an IPv6 (not IPv4-mapped)
// address, which decides the peer entry size of announce replies.
func remoteIsIPv6(conn net.Conn) bool {
	ra := conn.RemoteAddr()
	var ap netip.AddrPort
	switch a := ra.(type) {
	case nil:
		return false
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return ap.Addr().Unmap().Is6()
}

func (c *UDPClient) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// cachedID returns the live connection ID for a tracker, if any.
func (c *UDPClient) cachedID(key string) (uint64, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.conns[key]
	if !ok || !now.Before(e.expires) {
		return 0, false
	}
	return e.id, true
}

// storeID caches a connection ID, pruning expired ones.
func (c *UDPClient) storeID(key string, e connID) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		c.conns = map[string]connID{}
	}
	for k, old := range c.conns {
		if !now.Before(old.expires) {
			delete(c.conns, k)
		}
	}
	c.conns[key] = e
}

// dropID forgets a tracker's connection ID if it is still id.
func (c *UDPClient) dropID(key string, id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.conns[key]; ok && e.id == id {
		delete(c.conns, key)
	}
}
