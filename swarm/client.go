// Package swarm is tbproxy's BitTorrent engine: it downloads torrents from
// peers, verifies every piece, streams verified bytes to Readers in the
// order they need them, and seeds.
//
// A Client owns the listener, the hashing workers and the torrents; each
// Torrent is one run-loop goroutine that owns its peers, requests and piece
// state, fed by peer connections, hash workers and peer sources. The dialer
// and listener are pluggable, so a whole swarm can run over in-memory
// connections. Storage is an interface: MemoryStorage ships here, the disk
// cache in package cache. The engine speaks no HTTP and knows nothing of
// proxies; only verified bytes ever reach a Reader or a peer.
package swarm

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/metadata"
	"github.com/tbproxy/tbproxy/swarm/internal/mse"
	"github.com/tbproxy/tbproxy/swarm/internal/pex"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
	"github.com/tbproxy/tbproxy/tracker"
)

// Config configures a Client. Every zero field takes the default its
// comment gives.
type Config struct {
	// PeerID is this client's peer-id; zero means "-TB0100-" and 12 random
	// bytes.
	PeerID [20]byte
	// Listener accepts incoming peers. When nil and ListenAddr is set, the
	// client listens on ListenAddr; with neither, it only dials out.
	Listener   net.Listener
	ListenAddr string
	// Dial opens outgoing peer connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Trackers announces to trackers; nil means a tracker.Client with its
	// defaults.
	Trackers tracker.Announcer
	// HTTPClient fetches from web seeds; nil means a client that verifies
	// TLS, ignores the environment's proxy settings (a proxy must not loop
	// through itself), goes through HTTPProxy, dials with HTTPDial and
	// keeps at most 3 connections per host.
	HTTPClient *http.Client
	// HTTPDial connects the default web seed and tracker clients (HTTP and
	// UDP); nil means Dial. A proxy puts its outbound address policy here,
	// so that a torrent's url-list or announce URL reaches nothing a
	// proxied request could not.
	HTTPDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HTTPProxy, when set, names the proxy that the default web seed and
	// HTTP tracker clients go through, as http.Transport's Proxy does; nil
	// or a nil URL means none. Peers and UDP trackers are always dialled
	// directly.
	HTTPProxy func(*http.Request) (*url.URL, error)
	// RootCAs are the CAs the default web seed and tracker clients trust
	// for HTTPS; nil means the system's.
	RootCAs *x509.CertPool
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	MaxPeers int // connections per torrent; 0 means 50
	// MaxConns caps the peer connections of all torrents together; 0
	// means 500. Every cached torrent is reseeded, so without it the
	// connections (and file descriptors) would grow with the cache.
	MaxConns         int
	UploadSlots      int           // regular unchoke slots; 0 means 8 (as libtorrent)
	HandshakeTimeout time.Duration // dial plus handshake; 0 means 10 s
	RequestTimeout   time.Duration // a request unanswered this long goes elsewhere; 0 means 30 s
	IdleTimeout      time.Duration // a peer silent this long is dropped; 0 means 3 min
	// InactivityTimeout drops a peer when for this long neither side was
	// interested and no block moved, keep-alives or not: it frees the
	// connection for a peer that wants something. 0 means 10 minutes.
	InactivityTimeout time.Duration
	HashWorkers       int // hashing goroutines; 0 means one per core
	// PieceMemory bounds the piece buffers of all torrents together: past
	// it, a torrent finishes the pieces it has started before it starts
	// more (one piece each is always allowed, and so are pieces a reader
	// waits on). 0 means 64 MiB.
	PieceMemory  int64
	ClientName   string        // sent in the BEP 10 handshake; "" means "tbproxy"
	WebSeedRetry time.Duration // a failing web seed waits failures² × this; 0 means 1 s
	// Extensions are BEP 10 messages added by name.
	Extensions []Extension
	// Encryption is the MSE/PE policy for peer connections; the zero
	// value is EncryptionPrefer.
	Encryption Encryption
	// NoPEX turns peer exchange (BEP 11, ut_pex) off for every torrent.
	// It is on by default; private torrents never use it, and
	// TorrentOptions.NoPEX turns it off for one torrent.
	NoPEX bool
	// LSD configures local service discovery (BEP 14); it is off unless
	// LSD.Enabled is set.
	LSD LSDConfig
}

func (c Config) withDefaults() Config {
	if c.PeerID == ([20]byte{}) {
		copy(c.PeerID[:], "-TB0100-")
		rand.Read(c.PeerID[8:])
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	httpDial := c.HTTPDial
	if httpDial == nil {
		httpDial = c.Dial
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: httpTransport(c.RootCAs, httpDial, c.HTTPProxy)}
	}
	if c.Trackers == nil {
		// HTTPS trackers trust the same extra CAs as web seeds, and all
		// trackers are dialled under the same policy (HTTPDial, else
		// Dial), on connections of their own, so that announces never
		// queue behind web seed ranges to the same host.
		c.Trackers = &tracker.Client{
			HTTP: tracker.HTTPClient{Client: &http.Client{Transport: httpTransport(c.RootCAs, httpDial, c.HTTPProxy), Timeout: time.Minute}},
			UDP:  tracker.UDPClient{Dial: httpDial},
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = 50
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 500
	}
	if c.UploadSlots <= 0 {
		c.UploadSlots = 8
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 3 * time.Minute
	}
	if c.InactivityTimeout <= 0 {
		c.InactivityTimeout = 10 * time.Minute
	}
	if c.HashWorkers <= 0 {
		c.HashWorkers = runtime.GOMAXPROCS(0)
	}
	if c.PieceMemory <= 0 {
		c.PieceMemory = 64 << 20
	}
	if c.WebSeedRetry <= 0 {
		c.WebSeedRetry = time.Second
	}
	if c.ClientName == "" {
		c.ClientName = "tbproxy"
	}
	return c
}

// Extension is a BEP 10 extension message that a user of swarm adds by
// name (MonoTorrent's custom messages). Peers that list the same name in
// their extension handshake can exchange it.
type Extension interface {
	// Name is the message's name in the extension handshake, such as
	// "ut_metadata"; it must be unique within a Client.
	Name() string
	// Added is called when a peer's extension handshake offers this
	// message, so the extension may send to it at once.
	Added(p ExtensionPeer)
	// Received handles one message from a peer.
	Received(p ExtensionPeer, payload []byte)
}

// Both Extension methods run on the torrent's run loop, so they must
// return quickly; p is valid only during the call, and Send only queues.

// ExtensionPeer is the peer an Extension message came from.
type ExtensionPeer interface {
	Addr() netip.AddrPort
	// Send queues an extension message by name to this peer.
	Send(name string, payload []byte) error
}

// Client runs torrents.
type Client struct {
	cfg      Config
	log      *slog.Logger
	peerID   [20]byte
	key      uint32 // tracker key, fixed per client
	trackers tracker.Announcer
	http     *http.Client // for web seeds
	ln       net.Listener // nil when not listening
	hasher   *hasher
	// pieceMem is the piece memory the torrents have charged (see
	// Torrent.chargeMemory), against cfg.PieceMemory.
	pieceMem atomic.Int64
	blocks   sync.Pool // *[]byte of blockSize, for received blocks

	ext        extension.Registry   // our BEP 10 message IDs
	extensions map[string]Extension // by name
	localAddrs []netip.Addr         // this host's addresses, against self-dials
	lsd        *lsdService          // nil unless LSD is enabled

	mu       sync.Mutex
	torrents map[metainfo.Hash]*Torrent // guarded by mu
	req2     map[[20]byte]metainfo.Hash // MSE req2 hash to info-hash, one per torrent; guarded by mu
	pieces   map[int]*sync.Pool         // piece buffers by length; guarded by mu
	closed   bool                       // guarded by mu

	done      chan struct{}  // closed by Close
	wg        sync.WaitGroup // accept loop and incoming handshakes
	handshake chan struct{}  // semaphore on incoming handshakes
	conns     atomic.Int64   // peer connections of all torrents (Config.MaxConns)
}

// ErrExists is returned when a torrent is added twice.
var ErrExists = errors.New("swarm: torrent already added")

// maxIncomingHandshakes bounds handshakes in progress, against floods.
const maxIncomingHandshakes = 64

// NewClient starts a client: its listener, if any, and its hash workers.
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	c := &Client{
		cfg:        cfg,
		log:        cfg.Logger,
		peerID:     cfg.PeerID,
		trackers:   cfg.Trackers,
		http:       cfg.HTTPClient,
		extensions: map[string]Extension{},
		torrents:   map[metainfo.Hash]*Torrent{},
		req2:       map[[20]byte]metainfo.Hash{},
		pieces:     map[int]*sync.Pool{},
		done:       make(chan struct{}),
		handshake:  make(chan struct{}, maxIncomingHandshakes),
	}
	var k [4]byte
	rand.Read(k[:])
	c.key = uint32(k[0])<<24 | uint32(k[1])<<16 | uint32(k[2])<<8 | uint32(k[3])
	c.blocks.New = func() any { b := make([]byte, blockSize); return &b }
	// ut_metadata (BEP 9) is built in: we serve our torrents' info
	// dictionaries, and fetch those of magnet links.
	if _, err := c.ext.Register(metadata.Name); err != nil {
		return nil, err
	}
	// ut_pex (BEP 11) is built in unless switched off; torrents that must
	// not use it (private ones) leave it out of their handshakes.
	if !cfg.NoPEX {
		if _, err := c.ext.Register(pex.Name); err != nil {
			return nil, err
		}
	}
	for _, x := range cfg.Extensions {
		if _, err := c.ext.Register(x.Name()); err != nil {
			return nil, fmt.Errorf("swarm: extension %q: %w", x.Name(), err)
		}
		c.extensions[x.Name()] = x
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				c.localAddrs = append(c.localAddrs, p.Addr().Unmap())
			}
		}
	}
	c.ln = cfg.Listener
	if c.ln == nil && cfg.ListenAddr != "" {
		ln, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("swarm: listening for peers: %w", err)
		}
		c.ln = ln
	}
	if cfg.LSD.Enabled {
		s, err := c.startLSD(cfg.LSD)
		if err != nil {
			if c.ln != nil && cfg.Listener == nil {
				c.ln.Close()
			}
			return nil, err
		}
		c.lsd = s
	}
	c.hasher = newHasher(cfg.HashWorkers)
	if c.ln != nil {
		c.wg.Go(c.acceptLoop)
	}
	return c, nil
}

// Addr is the listener's address, or nil when the client does not listen.
func (c *Client) Addr() net.Addr {
	if c.ln == nil {
		return nil
	}
	return c.ln.Addr()
}

// PeerID is the client's peer-id.
func (c *Client) PeerID() [20]byte { return c.peerID }

func (c *Client) port() uint16 {
	if c.ln == nil {
		return 0
	}
	ap, err := netip.ParseAddrPort(c.ln.Addr().String())
	if err != nil {
		return 0
	}
	return ap.Port()
}

func (c *Client) now() time.Time { return c.cfg.Now() }

// isSelf reports whether a is this client's own listening address.
func (c *Client) isSelf(a netip.AddrPort) bool {
	if c.ln == nil || a.Port() != c.port() {
		return false
	}
	if a.Addr().IsLoopback() {
		return true
	}
	for _, l := range c.localAddrs {
		if l == a.Addr() {
			return true
		}
	}
	return false
}

// AddTorrent starts a torrent with its storage. Pieces the storage reports
// verified are seeded and not fetched again.
func (c *Client) AddTorrent(m *metainfo.MetaInfo, st Storage, opts TorrentOptions) (*Torrent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, ok := c.torrents[m.InfoHash]; ok {
		return nil, ErrExists
	}
	t := newTorrent(c, m, st, opts)
	c.torrents[m.InfoHash] = t
	c.req2[mse.Req2(m.InfoHash[:])] = m.InfoHash
	t.start()
	if c.lsd != nil && t.lsdEnabled() {
		c.lsd.add(m.InfoHash)
	}
	return t, nil
}

// Torrent returns the torrent with info-hash ih, if the client has it.
func (c *Client) Torrent(ih metainfo.Hash) (*Torrent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.torrents[ih]
	return t, ok
}

func (c *Client) forget(t *Torrent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torrents[t.meta.InfoHash] == t {
		delete(c.torrents, t.meta.InfoHash)
		delete(c.req2, mse.Req2(t.meta.InfoHash[:]))
		if c.lsd != nil {
			c.lsd.remove(t.meta.InfoHash)
		}
	}
}

// Close closes every torrent and the listener, and returns once every
// goroutine the client started has ended.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ts := make([]*Torrent, 0, len(c.torrents))
	for _, t := range c.torrents {
		ts = append(ts, t)
	}
	c.mu.Unlock()
	close(c.done)
	if c.ln != nil {
		c.ln.Close()
	}
	if c.lsd != nil {
		c.lsd.close()
	}
	for _, t := range ts {
		t.Close()
	}
	c.wg.Wait()
	c.hasher.close()
	c.http.CloseIdleConnections()
	return nil
}

func (c *Client) acceptLoop() {
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			select {
			case <-c.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("accepting peers", "err", err)
			if !sleepOrDone(c.done, 100*time.Millisecond) {
				return
			}
			continue
		}
		c.HandleConn(nc)
	}
}

func sleepOrDone(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// HandleConn takes an incoming peer connection from any transport: it does
// the handshake and hands the connection to the torrent it names.
func (c *Client) HandleConn(nc net.Conn) {
	select {
	case c.handshake <- struct{}{}:
	default:
		nc.Close() // too many handshakes in progress
		return
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.wg.Add(1)
	}
	c.mu.Unlock()
	if closed {
		<-c.handshake
		nc.Close()
		return
	}
	go func() {
		defer c.wg.Done()
		defer func() { <-c.handshake }()
		if err := c.acceptPeer(nc); err != nil {
			c.log.Debug("incoming peer", "addr", nc.RemoteAddr(), "err", err)
			nc.Close()
		}
	}()
}

func (c *Client) ourHandshake(ih metainfo.Hash) wire.Handshake {
	h := wire.Handshake{InfoHash: ih, PeerID: c.peerID}
	h.SetFast(true)
	h.SetExtended(true)
	return h
}

func (c *Client) acceptPeer(nc net.Conn) error {
	nc.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	conn, br, skey, err := c.acceptEncryption(nc)
	if err != nil {
		return err
	}
	head, err := wire.ReadHandshakeHead(br)
	if err != nil {
		return err
	}
	if skey != (metainfo.Hash{}) && head.InfoHash != skey {
		return fmt.Errorf("swarm: encrypted peer asked for %x, then for %x", skey, head.InfoHash)
	}
	t, ok := c.Torrent(head.InfoHash)
	if !ok {
		return fmt.Errorf("swarm: peer asked for unknown torrent %x", head.InfoHash)
	}
	if err := wire.WriteHandshake(conn, c.ourHandshake(t.meta.InfoHash)); err != nil {
		return err
	}
	if head.PeerID, err = wire.ReadPeerID(br); err != nil {
		return err
	}
	nc.SetDeadline(time.Time{})
	select {
	case t.adopt <- &handshaken{conn: conn, br: br, remote: head}:
		return nil
	case <-t.done:
		return ErrClosed
	case <-c.done:
		return ErrClosed
	}
}

// dialPeer connects to addr and completes the handshakes for t.
func (c *Client) dialPeer(t *Torrent, addr netip.AddrPort) (*handshaken, error) {
	conn, br, remote, err := c.connectPeer(t.ctx, addr, t.meta.InfoHash)
	if err != nil {
		return nil, err
	}
	return &handshaken{conn: conn, br: br, remote: remote, outgoing: true, dialed: addr}, nil
}

// httpTransport is the default web seed and tracker transport: TLS
// verified against roots (nil: the system's), no proxy from the
// environment, dial for connections, at most 3 per host.
func httpTransport(roots *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error), proxy func(*http.Request) (*url.URL, error)) *http.Transport {
	return &http.Transport{
		Proxy:                  proxy,
		DialContext:            dial,
		TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxConnsPerHost:        webWorkers,
		MaxIdleConnsPerHost:    webWorkers,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10, // a web seed's or tracker's headers are a few hundred bytes
		ForceAttemptHTTP2:      true,
	}
}

// getPiece returns a buffer of n bytes for assembling a piece.
func (c *Client) getPiece(n int) []byte {
	c.mu.Lock()
	p := c.pieces[n]
	if p == nil {
		p = &sync.Pool{New: func() any { b := make([]byte, n); return &b }}
		c.pieces[n] = p
	}
	c.mu.Unlock()
	return *(p.Get().(*[]byte))
}

func (c *Client) putPiece(b []byte) {
	c.mu.Lock()
	p := c.pieces[len(b)]
	c.mu.Unlock()
	if p != nil {
		p.Put(&b)
	}
}
