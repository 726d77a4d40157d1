// Package proxy is tbproxy's forward proxy: it negotiates BitTorrent with
// origins by adding application/x-bittorrent to the Accept of GET requests,
// and when an origin answers with a torrent, it answers the client with the
// file itself, streamed from the swarm through http.ServeContent. Every
// other answer passes through untouched, and when the torrent cannot be
// used the proxy refetches the URL as plain HTTP.
//
// It is the only package that imports goproxy. It decides policy (what to
// negotiate, CONNECT rules, MITM, the local endpoints) and owns the HTTP
// server; the engine (swarm), the pure negotiation rules (negotiate) and
// the CA (certs) do the rest.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/tbproxy/tbproxy/certs"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// Store gives torrents their storage: the disk cache in production, memory
// in tests.
type Store interface {
	// Open returns storage for m. Transient content (private, no-store)
	// must not outlive its release.
	Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error)
	// Pin keeps the torrent's data while a response streams it; release
	// undoes it.
	Pin(ih metainfo.Hash) (release func())
}

// Config configures a Proxy. Zero fields take the defaults given.
type Config struct {
	// Engine runs the torrents. Required.
	Engine *swarm.Client
	// Store keeps what they download; nil means memory, per torrent.
	Store Store
	// URLFile keeps, across restarts, which torrent each URL served from
	// one is in, for the answer from the cache when its origin cannot be
	// reached; empty keeps that in memory only. See urls.go.
	URLFile string
	// AllowedClients are the networks that may use a proxy listening
	// beyond loopback. Loopback clients are always allowed.
	AllowedClients []netip.Prefix
	// CA enables MITM of CONNECT tunnels when set; nil keeps tunnels blind.
	CA *certs.CA
	// MITMExclude are hosts (or *.suffix patterns) tunnelled blindly even
	// with MITM on: clients that pin certificates.
	MITMExclude []string
	// ConnectPorts are the ports CONNECT may reach; nil means 443 only.
	ConnectPorts []int
	// ExcludeHosts are never negotiated.
	ExcludeHosts []string
	// RootCAs verify upstream TLS; nil means the system's roots.
	RootCAs *x509.CertPool
	// Dial connects upstream; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Parent, when set, is the proxy all upstream HTTP traffic goes
	// through (ParseParent; parent.go): nil connects to origins directly.
	Parent *url.URL
	// AllowPrivateUpstream permits CONNECT and requests to loopback,
	// link-local and private addresses (tests, LAN origins). Off, they are
	// refused at dial time, on the resolved address.
	AllowPrivateUpstream bool
	// StallBudget and WebSeedMode are passed to each torrent: how long a
	// download may stall before web seeds (the origin first) step in, 0
	// for the engine's default, and how sparingly they are used.
	StallBudget time.Duration
	WebSeedMode swarm.WebSeedMode
	// PeerSources, when set, gives the extra peer sources (a DHT) of each
	// torrent the proxy adds; it decides, for instance, that a private
	// torrent gets none.
	PeerSources func(*metainfo.MetaInfo) []swarm.PeerSource
	// FirstByte is how long a response from the swarm may take to its
	// first byte before the proxy answers plainly instead; 0 means 20 s.
	FirstByte time.Duration
	// MagnetTimeout bounds the wait for the metadata (BEP 9) of a magnet
	// that an origin answers the negotiation with; 0 means 8 s. It is
	// capped at half of FirstByte. When it passes, the client gets the
	// file by plain HTTP.
	MagnetTimeout time.Duration
	// Logger receives one structured line per transformed request.
	Logger *slog.Logger
	// Cache is the disk cache as the status page shows it; nil means the
	// page has no cache section and nothing can be dropped.
	Cache CacheView
}

// Proxy is the forward proxy.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	gp       *goproxy.ProxyHttpServer
	upstream *http.Transport
	guarded  func(ctx context.Context, network, addr string) (net.Conn, error) // dial under the outbound policy
	// parentDial connects to Config.Parent (dialParent).
	parentDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// peerDialer dials the engine's peers under the peer policy (DialPeer).
	peerDialer *net.Dialer
	store      Store
	self       selfAddrs // our own listening addresses, against loops

	addMu sync.Mutex // serialises get-or-add of torrents
	// openFailing is set while the last torrent to open failed: responses
	// then wait for their torrent before their headers go out.
	openFailing atomic.Bool
	// spliced counts the bytes passed through with splice (splice.go).
	spliced atomic.Int64

	conns sync.Map // remote address → *trackedConn, of the connections Serve accepted
	// tunnelHeader and tunnelIdle bound the waits for requests in an
	// intercepted tunnel (tunnel.go); fixed at New, shortened by tests.
	tunnelHeader, tunnelIdle time.Duration
	mu                       sync.Mutex
	transfers                map[int64]*transfer // active synthesised responses; guarded by mu
	nextID                   int64               // guarded by mu
	totals                   totals              // guarded by mu
	sources                  map[string]bool     // trackers' and web seeds' host:port; guarded by mu
	proxyAddr                netip.AddrPort      // the first proxy listener, named by the PAC file; guarded by mu
	// recentMagnets are torrents fetched for magnets, newest last,
	// bounded by rememberMagnet; guarded by mu.
	recentMagnets []*metainfo.MetaInfo

	servers []*http.Server // guarded by mu
	wg      sync.WaitGroup // streaming goroutines

	// magnets lets concurrent requests for one magnet share its metadata
	// fetch. Each waiter's goroutine is counted in flights, which is
	// only added to under mu while base is live (goFlight), so that
	// Close's Wait follows every Add.
	magnets singleflight.Group
	flights sync.WaitGroup

	ui ui // the status page, /metrics and the totals sampler

	// confirmed remembers when an origin last confirmed that it serves a
	// torrent's file (see confirmOrigin), so that the requests that follow,
	// such as a player's seeks, need not ask again.
	confirmed  *lru.Cache[string, confirmedFile]
	rememberMu sync.Mutex // makes remember's look and write one step against originBytesDiffer
	// urlsChanged is set when confirmed changes, until Config.URLFile
	// is written (saveURLs).
	urlsChanged atomic.Bool
	// asking are the confirmations under way, by URL, which the requests
	// for the URL that follow join; guarded by mu.
	asking map[string]*confirmation
	// kinds are the kinds of URL (kindOf) lately seen, and whether they
	// were metainfo that needed the origin's confirmation: the next URL
	// of such a kind is asked about early (predict.go).
	kinds *lru.Cache[string, kindSeen]

	// base is cancelled by Close: every stream's context derives from it
	// as well as from its request's, since goproxy's MITM loop gives
	// requests contexts that never end.
	base   context.Context
	cancel context.CancelFunc
}

// New builds a Proxy; Serve runs it on a listener.
func New(cfg Config) (*Proxy, error) {
	if cfg.Engine == nil {
		return nil, errors.New("proxy: no engine")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectPorts == nil {
		cfg.ConnectPorts = []int{443}
	}
	// Load the system's MIME table now: the first synthesised response
	// would otherwise pay for reading it before its first byte.
	mime.TypeByExtension(".bin")
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		store:     cfg.Store,
		transfers: map[int64]*transfer{},
	}
	if p.store == nil {
		p.store = newMemoryStore()
	}
	p.store = trackingStore{p.store, p}
	p.confirmed, _ = lru.New[string, confirmedFile](maxConfirmed)
	p.kinds, _ = lru.New[string, kindSeen](maxKinds)
	p.tunnelHeader, p.tunnelIdle = tunnelHeaderTimeout, tunnelIdleTimeout
	p.base, p.cancel = context.WithCancel(context.Background())
	if cfg.URLFile != "" {
		n, err := p.loadURLs(cfg.URLFile)
		if err != nil {
			p.log.Warn("ignoring the file of URLs served from torrents", "file", cfg.URLFile, "err", err)
		} else if n > 0 {
			p.log.Info("URLs served from torrents before", "file", cfg.URLFile, "urls", n)
		}
		p.wg.Go(p.keepURLs)
	}
	dial := cfg.Dial
	if dial == nil {
		// The address is checked before the connection is made too, so
		// that a refused one never sees a SYN; guardDial checks it again
		// for dialers given in Config.
		d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second, Control: p.controlUpstream}
		dial = d.DialContext
	}
	p.peerDialer = &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: p.controlPeer}
	guarded := p.guardDial(dial)
	p.guarded = guarded
	p.parentDial = dial
	if cfg.Dial == nil {
		// The parent may be on a private network: only a loop is refused.
		d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
		p.parentDial = d.DialContext
	}
	p.upstream = &http.Transport{
		// Through the parent when there is one (ParentFor is nil without
		// one); never through a proxy named by the environment, which may
		// well be this one.
		Proxy:                 p.ParentFor,
		DialContext:           spliceDial(p.DialUpstream),
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		DisableCompression:    true, // pass encodings through untouched
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Far above what servers send (nginx's own proxy buffer for them
		// is 4-8 KiB), far below Go's 10 MB default.
		MaxResponseHeaderBytes: 256 << 10,
	}
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = slogPrintf{p.log}
	gp.Tr = p.upstream
	gp.KeepAcceptEncoding = true
	gp.ConnectDial = func(network, addr string) (net.Conn, error) {
		if cfg.Parent != nil {
			return p.tunnelVia(context.Background(), addr)
		}
		return guarded(context.Background(), network, addr)
	}
	gp.ConnectionErrHandler = p.connectFailed
	gp.NonproxyHandler = http.HandlerFunc(p.serveLocal)
	gp.OnRequest().HandleConnectFunc(p.handleConnect)
	gp.OnRequest().DoFunc(p.onRequest)
	p.gp = gp
	return p, nil
}

// maxHeaderBytes caps a client request's headers, in tunnels too.
const maxHeaderBytes = 64 << 10

// Serve answers proxy clients on ln until Close. After Close it closes ln
// and returns nil at once.
func (p *Proxy) Serve(ln net.Listener) error {
	p.AddListener(ln.Addr().String())
	ln = trackedListener{Listener: ln, conns: &p.conns} // for tunnels (tunnel.go)
	srv := &http.Server{
		Handler:           p.checkClient(p.gp),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.mu.Lock()
	if p.base.Err() != nil { // closed before it could serve
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.servers = append(p.servers, srv)
	p.mu.Unlock()
	p.startSampler()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the servers and waits for every response stream to end.
func (p *Proxy) Close() error {
	p.mu.Lock() // Serve and goFlight check base under mu
	p.cancel()
	servers := p.servers
	p.servers = nil
	p.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	p.stopSampler()
	p.wg.Wait()
	p.flights.Wait()
	p.upstream.CloseIdleConnections()
	if p.cfg.URLFile != "" {
		if err := p.saveURLs(p.cfg.URLFile); err != nil {
			p.log.Warn("cannot save the URLs served from torrents", "file", p.cfg.URLFile, "err", err)
		}
	}
	return nil
}

// checkClient refuses clients outside loopback and the allow-list.
func (p *Proxy) checkClient(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !p.clientAllowed(ap.Addr().Unmap()) {
			http.Error(w, "tbproxy: client not allowed", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (p *Proxy) clientAllowed(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	for _, pfx := range p.cfg.AllowedClients {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// selfAddrs are the addresses the proxy listens on.
type selfAddrs struct{ addrs []netip.AddrPort }

func (s *selfAddrs) add(a netip.AddrPort) {
	if !slices.Contains(s.addrs, a) {
		s.addrs = append(s.addrs, a)
	}
}

// AddListener records addr (host:port) as a listener of the proxy's own,
// as Serve does: no proxied request may reach it, and the first one is
// the proxy the PAC file names. Calling it before Serve's goroutine runs
// lets a status page that starts first name the proxy at once. An addr
// that is no host:port is ignored.
func (p *Proxy) AddListener(addr string) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.self.add(ap)
	if !p.proxyAddr.IsValid() {
		p.proxyAddr = ap
	}
}

// AddSelf adds addr (host:port), such as the status page's listener, to
// the addresses the proxy refuses to forward to, so that no proxied
// request ever reaches them.
func (p *Proxy) AddSelf(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("proxy: own address %q: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.self.add(ap)
	return nil
}

// isSelf reports whether a host:port names one of our listeners. A
// listener on an unspecified address (0.0.0.0:P) is reached at P on any
// of the machine's own addresses, and at no other.
func (p *Proxy) isSelf(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if host == "localhost" {
		ip, err = netip.MustParseAddr("127.0.0.1"), nil
	}
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	p.mu.Lock()
	var wild bool
	for _, a := range p.self.addrs {
		if int(a.Port()) != n {
			continue
		}
		if a.Addr().Unmap() == ip || ip.IsLoopback() && a.Addr().IsLoopback() {
			p.mu.Unlock()
			return true
		}
		wild = wild || a.Addr().IsUnspecified()
	}
	p.mu.Unlock()
	return wild && localAddr(ip)
}

// localAddr reports whether ip is one of this machine's own addresses:
// loopback, unspecified (which connects to the machine itself), or an
// address of one of its interfaces.
func localAddr(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: the safe answer for a loop check
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// DialUpstream dials addr under the proxy's outbound policy: never the
// proxy's own listeners, and no loopback, private or link-local address
// unless Config.AllowPrivateUpstream, checked on the address actually
// connected to (so DNS rebinding is caught). The engine's web seed and
// tracker traffic goes through it too, so that a torrent's url-list or
// announce URL cannot reach what a proxied request could not. With a
// parent proxy, HTTP goes to the parent (ParentFor), which is dialled
// whatever its address (dialParent).
func (p *Proxy) DialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	if pa := p.parentAddr(); pa != "" && addr == pa && strings.HasPrefix(network, "tcp") {
		return p.dialParent(ctx, network)
	}
	return p.guarded(ctx, network, addr)
}

// errForbiddenTarget is a dial refused by policy.
var errForbiddenTarget = errors.New("proxy: destination not allowed")

// controlUpstream is the default upstream dialer's check of the address
// it is about to connect to, after name resolution: not one of the
// proxy's listeners, and public unless Config.AllowPrivateUpstream.
func (p *Proxy) controlUpstream(_, address string, _ syscall.RawConn) error {
	if p.isSelf(address) {
		return fmt.Errorf("%w: %s is this proxy", errForbiddenTarget, address)
	}
	if ap, err := netip.ParseAddrPort(address); err == nil && !p.cfg.AllowPrivateUpstream && !publicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address", errForbiddenTarget, address)
	}
	return nil
}

// DialPeer dials a BitTorrent peer for the engine under the peer policy:
// never one of the proxy's own listeners, and no loopback or unspecified
// address unless Config.AllowPrivateUpstream, so that a tracker, PEX or
// the DHT cannot point the engine at services on this machine. Peers on
// the LAN are ordinary peers (local peer discovery finds them) and are
// dialled. The address is checked as resolved, before the connection.
func (p *Proxy) DialPeer(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.peerDialer.DialContext(ctx, network, addr)
}

// controlPeer is DialPeer's check of the address it is about to connect to.
func (p *Proxy) controlPeer(_, address string, _ syscall.RawConn) error {
	if p.isSelf(address) {
		return fmt.Errorf("%w: peer %s is this proxy", errForbiddenTarget, address)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: peer %q", errForbiddenTarget, address)
	}
	if a := ap.Addr().Unmap(); !p.cfg.AllowPrivateUpstream && (a.IsLoopback() || a.IsUnspecified()) {
		return fmt.Errorf("%w: peer %s is on this machine", errForbiddenTarget, address)
	}
	return nil
}

// guardDial checks the address actually dialled, after resolution, so a
// name that resolves to a private address (DNS rebinding) is refused too.
func (p *Proxy) guardDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p.isSelf(addr) {
			return nil, fmt.Errorf("%w: %s is this proxy", errForbiddenTarget, addr)
		}
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The default dialer checked the address before connecting; a
		// dialer given in Config is checked on what it connected to.
		if err := p.controlUpstream(network, conn.RemoteAddr().String(), nil); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dialling %s: %w", addr, err)
		}
		return conn, nil
	}
}

// publicAddr reports an address outside loopback, link-local, private,
// unspecified, multicast and the other special-purpose blocks a proxy
// must not be steered into (nonPublic). An IPv6 address that carries an
// IPv4 one for a translator or tunnel (NAT64, 6to4, IPv4-compatible) is
// judged by the IPv4 address it reaches.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is6() {
		if v4, ok := embeddedV4(a); ok {
			return publicAddr(v4)
		}
	}
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// nonPublic are special-purpose blocks (RFC 6890 and its updates) that
// netip's predicates leave out.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space (carrier-grade NAT)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the limited broadcast
	netip.MustParsePrefix("fec0::/10"),      // site-local, deprecated
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
}

// Blocks whose IPv6 addresses carry an IPv4 address.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64 prefix
	sixToFour = netip.MustParsePrefix("2002::/16")    // 6to4: the IPv4 address in bits 16-47
	v4Compat  = netip.MustParsePrefix("::/96")        // IPv4-compatible, deprecated
)

// embeddedV4 returns the IPv4 address that an IPv6 address of a
// translator or tunnel block reaches.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case nat64.Contains(a), v4Compat.Contains(a) && !a.IsUnspecified() && !a.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// slogPrintf adapts goproxy's Printf logger to slog, at debug level.
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "goproxy")
}
