// Package dht is a Mainline DHT node (BEP 5) over IPv4: it keeps a
// routing table, answers ping, find_node, get_peers and announce_peer, and
// finds and announces peers for info-hashes with iterative lookups.
//
// It is built to face hostile nodes: every datagram is size-limited and
// decoded strictly; each source is rate-limited; a node enters the routing
// table only after answering a query we sent (a spoofed source cannot),
// with one node per IP and BEP 42 node IDs preferred; loopback, private
// and other non-global addresses are neither routed to nor handed out as
// peers unless Config.AllowLocal; announced peers are bounded per
// torrent, per IP and in total.
//
// It does not do IPv6 (BEP 32), storage (BEP 44), read-only mode or
// scrapes. Whether a torrent may use the DHT at all (never for a private
// one) is the caller's decision.
package dht

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/dht/internal/krpc"
)

// ErrClosed is returned by a Server used after Close.
var ErrClosed = errors.New("dht: closed")

// errTimeout is a query no one answered in time.
var errTimeout = errors.New("dht: query timed out")

// Config configures a Server. The zero value listens on 0.0.0.0:6881,
// with no bootstrap nodes, and refuses local addresses.
type Config struct {
	// Addr is the UDP listen address; "" means ":6881". Ignored when Conn
	// is set.
	Addr string
	// Conn, when set, is the socket to use instead of listening on Addr.
	// The Server closes it.
	Conn net.PacketConn
	// Bootstrap are "host:port" nodes to join the DHT through.
	Bootstrap []string
	// AllowLocal accepts loopback and private addresses as nodes and
	// peers, several per IP: for tests and LAN-only DHTs.
	AllowLocal bool
	// ID is this node's ID; zero picks one at random, or one BEP 42 allows
	// for ExternalIP when that is set.
	ID ID
	// ExternalIP is this node's public address, when known.
	ExternalIP netip.Addr
	// QueryRate is how many datagrams per second one source may send us
	// (burst 5 times that); 0 means 10.
	QueryRate float64
	// QueryTimeout bounds the wait for one answer; 0 means 2 s.
	QueryTimeout time.Duration
	// AnnounceInterval paces FindPeers once it found peers; 0 means 15 min.
	AnnounceInterval time.Duration
	// RetryInterval is FindPeers' first wait after a lookup found no peers,
	// doubling up to AnnounceInterval; 0 means 1 min.
	RetryInterval time.Duration
	// Logger receives debug and info lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// version is the "v" key of our messages: client "TB", version 0.1.
const version = "TB\x00\x01"

// Server is one DHT node.
type Server struct {
	cfg  Config
	conn net.PacketConn
	log  *slog.Logger
	now  func() time.Time
	self ID

	ctx    context.Context // cancelled by Close; ends maintenance lookups
	cancel context.CancelFunc
	wg     sync.WaitGroup // readLoop and maintain

	closeOnce sync.Once

	mu      sync.Mutex
	table   *table
	store   *peerStore
	tokens  *tokens
	limit   *limiter
	calls   map[callKey]*call      // queries in flight
	callsTo map[netip.AddrPort]int // queries in flight per address
	rnd     *mrand.Rand
	closed  bool
	stats   Stats
}

// Stats are counters for tests and status pages.
type Stats struct {
	Nodes         int // in the routing table
	Received      int // datagrams read
	Dropped       int // datagrams refused: malformed, rate-limited, unexpected
	QueriesServed int
	Announced     int // announce_peer queries accepted
}

type callKey struct {
	tx   string
	addr netip.AddrPort
}

// call is a query in flight. done, when set, gets the answer.
type call struct {
	deadline time.Time
	done     chan *krpc.Msg // buffered 1; nil when no one waits
}

// New starts a DHT node. Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":6881"
	}
	if cfg.QueryRate <= 0 {
		cfg.QueryRate = 10
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 2 * time.Second
	}
	if cfg.AnnounceInterval <= 0 {
		cfg.AnnounceInterval = 15 * time.Minute
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	conn := cfg.Conn
	if conn == nil {
		var err error
		if conn, err = net.ListenPacket("udp4", cfg.Addr); err != nil {
			return nil, fmt.Errorf("dht: listening: %w", err)
		}
	}
	self := cfg.ID
	if self == (ID{}) {
		if cfg.ExternalIP.IsValid() {
			self = bep42ID(cfg.ExternalIP)
		} else {
			self = randomID()
		}
	}
	var seed [32]byte
	rand.Read(seed[:])
	t := now()
	s := &Server{
		cfg:     cfg,
		conn:    conn,
		log:     log,
		now:     now,
		self:    self,
		table:   newTable(self, cfg.AllowLocal, t),
		store:   newPeerStore(),
		tokens:  newTokens(t),
		limit:   newLimiter(cfg.QueryRate, 5*cfg.QueryRate),
		calls:   map[callKey]*call{},
		callsTo: map[netip.AddrPort]int{},
		rnd:     mrand.New(mrand.NewChaCha8(seed)),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.readLoop)
	s.wg.Go(s.maintain)
	return s, nil
}

// Addr is the UDP address the node listens on.
func (s *Server) Addr() netip.AddrPort {
	a, _ := netip.ParseAddrPort(s.conn.LocalAddr().String())
	return a
}

// ID is this node's ID.
func (s *Server) ID() ID { return s.self }

// Stats returns the node's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Nodes = s.table.len()
	return st
}

// Close stops the node and waits for its goroutines. Lookups in progress
// end with ErrClosed.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		err = s.conn.Close()
		s.wg.Wait()
	})
	return err
}

// readLoop reads datagrams until the socket closes.
func (s *Server) readLoop() {
	buf := make([]byte, krpc.MaxPacket+1)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-s.ctx.Done():
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable reported on the socket
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if reply := s.handle(buf[:n], src); reply != nil {
			s.conn.WriteTo(reply, net.UDPAddrFromAddrPort(src))
		}
	}
}

// limitKey is what the rate limit counts by: the IP, or on a local DHT,
// where every node shares an address, the IP and port.
func (s *Server) limitKey(a netip.AddrPort) netip.AddrPort {
	if s.cfg.AllowLocal {
		return a
	}
	return netip.AddrPortFrom(a.Addr(), 0)
}

// handle digests one datagram and returns the reply to send, if any.
func (s *Server) handle(b []byte, src netip.AddrPort) []byte {
	now := s.now()
	s.mu.Lock()
	s.stats.Received++
	if len(b) > krpc.MaxPacket || !addrOK(src, s.cfg.AllowLocal) || !s.limit.allow(s.limitKey(src), now) {
		s.stats.Dropped++
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	m, err := krpc.Decode(b)
	if err != nil {
		s.mu.Lock()
		s.stats.Dropped++
		s.mu.Unlock()
		return nil // garbage gets no answer: answering would make us a reflector
	}
	switch m.Y {
	case krpc.Query:
		return s.serve(m, src, now)
	default:
		s.answered(m, src, now)
		return nil
	}
}

// answered delivers a response or error to the query it answers. One
// that answers nothing we asked (spoofed, late, or a flood) is dropped.
func (s *Server) answered(m *krpc.Msg, src netip.AddrPort, now time.Time) {
	s.mu.Lock()
	key := callKey{m.T, src}
	c := s.calls[key]
	if c == nil {
		s.stats.Dropped++
		s.mu.Unlock()
		return
	}
	s.dropCall(key)
	var ping []netip.AddrPort
	if m.R != nil {
		ping = s.table.heardReply(ID([]byte(m.R.ID)), src, now)
	}
	s.mu.Unlock()
	if c.done != nil {
		c.done <- m
	}
	for _, a := range ping {
		s.ping(a)
	}
}

// serve answers a query.
func (s *Server) serve(m *krpc.Msg, src netip.AddrPort, now time.Time) []byte {
	reply := &krpc.Msg{T: m.T, Y: krpc.Response, V: version, IP: string(krpc.AppendPeer(nil, src))}
	fail := func(code int64, msg string) []byte {
		reply.Y, reply.E = krpc.Failure, &krpc.Error{Code: code, Msg: msg}
		b, _ := krpc.Encode(reply)
		return b
	}
	a := m.A
	r := &krpc.Return{ID: string(s.self[:])}
	s.mu.Lock()
	s.stats.QueriesServed++
	// Ping a newcomer once, not once per query it sends.
	wanted := s.table.heardQuery(ID([]byte(a.ID)), src, now) && s.callsTo[src] == 0
	s.mu.Unlock()
	if wanted {
		// A newcomer enters the table only by answering us.
		s.ping(src)
	}
	switch m.Q {
	case krpc.Ping:
	case krpc.FindNode:
		if len(a.Target) != krpc.IDLen {
			return fail(krpc.ErrProtocol, "bad target")
		}
		r.Nodes = s.closestCompact(ID([]byte(a.Target)))
	case krpc.GetPeers:
		if len(a.InfoHash) != krpc.IDLen {
			return fail(krpc.ErrProtocol, "bad info_hash")
		}
		ih := ID([]byte(a.InfoHash))
		s.mu.Lock()
		r.Token = s.tokens.issue(src.Addr(), now)
		for _, p := range s.store.get(ih, maxValuesPerReply, now, s.rnd) {
			r.Values = append(r.Values, string(krpc.AppendPeer(nil, p)))
		}
		s.mu.Unlock()
		r.Nodes = s.closestCompact(ih)
	case krpc.AnnouncePeer:
		if len(a.InfoHash) != krpc.IDLen {
			return fail(krpc.ErrProtocol, "bad info_hash")
		}
		port := a.Port
		if a.ImpliedPort != 0 {
			port = int64(src.Port())
		}
		if port <= 0 || port > 65535 {
			return fail(krpc.ErrProtocol, "bad port")
		}
		s.mu.Lock()
		ok := s.tokens.valid(a.Token, src.Addr(), now)
		if ok {
			// The peer is the querier's own IP: announce_peer cannot name
			// a victim's address.
			s.store.add(ID([]byte(a.InfoHash)), netip.AddrPortFrom(src.Addr(), uint16(port)), now)
			s.stats.Announced++
		}
		s.mu.Unlock()
		if !ok {
			return fail(krpc.ErrProtocol, "bad token")
		}
	default:
		return fail(krpc.ErrMethod, "method unknown")
	}
	reply.R = r
	b, err := krpc.Encode(reply)
	if err != nil {
		return nil
	}
	return b
}

func (s *Server) closestCompact(target ID) string {
	s.mu.Lock()
	ns := s.table.closest(target, K)
	out := make([]krpc.Node, len(ns))
	for i, n := range ns {
		out[i] = krpc.Node{ID: n.id, Addr: n.addr}
	}
	s.mu.Unlock()
	return string(krpc.AppendNodes(nil, out))
}

// send registers a call and sends the query. done, when set, receives
// the answer.
func (s *Server) send(addr netip.AddrPort, method string, args *krpc.Args, done chan *krpc.Msg) (callKey, error) {
	args.ID = string(s.self[:])
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return callKey{}, ErrClosed
	}
	var key callKey
	for {
		// Random, not sequential: a spoofer who cannot see our queries
		// must guess 32 bits to forge an answer.
		v := s.rnd.Uint32()
		key = callKey{string([]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), addr}
		if s.calls[key] == nil {
			break
		}
	}
	s.calls[key] = &call{deadline: s.now().Add(s.cfg.QueryTimeout), done: done}
	s.callsTo[addr]++
	s.mu.Unlock()
	b, err := krpc.Encode(&krpc.Msg{T: key.tx, Y: krpc.Query, Q: method, A: args, V: version})
	if err == nil {
		_, err = s.conn.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	}
	if err != nil {
		s.mu.Lock()
		s.dropCall(key)
		s.mu.Unlock()
		return callKey{}, fmt.Errorf("dht: sending %s: %w", method, err)
	}
	return key, nil
}

// query sends a query and waits for its answer. A KRPC error answer is
// returned as a *krpc.Error.
func (s *Server) query(ctx context.Context, addr netip.AddrPort, method string, args *krpc.Args) (*krpc.Return, error) {
	done := make(chan *krpc.Msg, 1)
	key, err := s.send(addr, method, args, done)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(s.cfg.QueryTimeout)
	defer timer.Stop()
	select {
	case m := <-done:
		if m.E != nil {
			return nil, m.E
		}
		return m.R, nil
	case <-timer.C:
		err = errTimeout
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.ctx.Done():
		err = ErrClosed
	}
	s.mu.Lock()
	if s.calls[key] != nil {
		s.dropCall(key)
		if err == errTimeout {
			s.table.failed(addr, s.now())
		}
	}
	s.mu.Unlock()
	select {
	case m := <-done: // answered while we gave up
		if m.R != nil {
			return m.R, nil
		}
	default:
	}
	return nil, err
}

// dropCall forgets a call; s.mu is held.
func (s *Server) dropCall(key callKey) {
	delete(s.calls, key)
	if s.callsTo[key.addr]--; s.callsTo[key.addr] <= 0 {
		delete(s.callsTo, key.addr)
	}
}

// ping sends a ping no one waits for: the answer, if it comes, updates
// the routing table; maintain counts a missing one as a failure.
func (s *Server) ping(addr netip.AddrPort) {
	s.send(addr, krpc.Ping, &krpc.Args{}, nil)
}

// maintenance pacing.
const (
	tick          = 5 * time.Second
	bootstrapWait = 30 * time.Second
	maxPingsTick  = 16
)

// maintain bootstraps, pings questionable nodes, refreshes stale buckets,
// expires calls no one waits for, and sweeps the peer store.
func (s *Server) maintain() {
	ctx := s.ctx
	var lastBoot time.Time
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
		now := s.now()
		s.mu.Lock()
		for key, c := range s.calls {
			if c.done == nil && now.After(c.deadline) {
				s.dropCall(key)
				s.table.failed(key.addr, now)
			}
		}
		s.store.sweep(now)
		s.limit.sweep(now)
		empty := s.table.len() < K
		pings := s.table.questionable(now)
		target, stale := s.table.stale(now)
		s.mu.Unlock()
		if empty && len(s.cfg.Bootstrap) > 0 && now.Sub(lastBoot) >= bootstrapWait {
			lastBoot = now
			s.Bootstrap(ctx)
			continue
		}
		for i, a := range pings {
			if i == maxPingsTick {
				break
			}
			s.ping(a)
		}
		if stale {
			s.lookup(ctx, target, krpc.FindNode, nil)
		}
	}
}

// Bootstrap joins the DHT through the configured bootstrap nodes: a
// lookup of our own ID starting from them. It reports how many nodes the
// routing table holds afterwards.
func (s *Server) Bootstrap(ctx context.Context) int {
	var seeds []netip.AddrPort
	for _, hp := range s.cfg.Bootstrap {
		if a, err := netip.ParseAddrPort(hp); err == nil {
			seeds = append(seeds, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
			continue
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			s.log.Info("bad bootstrap node", "node", hp, "err", err)
			continue
		}
		p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
		if err != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		if err != nil {
			s.log.Info("bootstrap node unresolved", "node", hp, "err", err)
			continue
		}
		for _, ip := range ips {
			seeds = append(seeds, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
		}
	}
	s.lookup(ctx, s.self, krpc.FindNode, seeds)
	n := s.Stats().Nodes
	s.log.Debug("bootstrapped", "nodes", n)
	return n
}
