package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/cache"
	"github.com/tbproxy/tbproxy/certs"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/proxy"
	"github.com/tbproxy/tbproxy/swarm"
)

// runOptions are the flags of `tbproxy run`.
type runOptions struct {
	listen       string
	uiListen     string
	dataDir      string
	peerListen   string
	encryption   swarm.Encryption
	cacheSize    int64
	mitm         bool
	caDir        string
	mitmExclude  listFlag
	allowClients listFlag
	excludeHosts listFlag
	connectPorts string
	allowPrivate bool
	upstreamCA   string
	parent       string
	logLevel     string
	magnetWait   time.Duration
	webSeeds     webSeedOptions
	dht          dhtOptions
	discovery    discovery
}

func runProxyFlags(stderr io.Writer) (*flag.FlagSet, *runOptions) {
	o := &runOptions{cacheSize: 10 << 30}
	fs := newFlagSet("tbproxy run", stderr, "Usage: tbproxy [run] [flags]")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "proxy `address`; beyond loopback it needs --allow-clients")
	fs.StringVar(&o.uiListen, "ui-listen", "127.0.0.1:8081", "status page `address`; empty to disable")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "cache `directory`")
	fs.StringVar(&o.peerListen, "peer-listen", ":6881", "BitTorrent peer `address`")
	fs.TextVar(&o.encryption, "encryption", swarm.EncryptionPrefer, encryptionUsage)
	fs.Var(sizeFlag{n: &o.cacheSize, positive: true}, "cache-size", "`size` of the cached content to keep, such as 10GiB")
	fs.BoolVar(&o.mitm, "mitm", false, "intercept HTTPS (CONNECT) with a per-install CA; see `tbproxy ca`")
	fs.StringVar(&o.caDir, "ca-dir", "", "CA `directory` (default: the XDG config directory)")
	fs.Var(&o.mitmExclude, "mitm-exclude", "`host` (or *.suffix) to tunnel blindly even with --mitm; repeatable")
	fs.Var(&o.allowClients, "allow-clients", "client `network` (CIDR) allowed besides loopback; repeatable")
	fs.Var(&o.excludeHosts, "exclude-host", "`host` (or *.suffix) never negotiated; repeatable")
	fs.StringVar(&o.connectPorts, "connect-ports", "443", "comma-separated `ports` CONNECT may reach")
	fs.BoolVar(&o.allowPrivate, "allow-private", false, "allow origins on loopback and private networks, and peers on this machine")
	fs.StringVar(&o.parent, "parent-proxy", "", "http://[user:password@]host:port of a `proxy` to send all HTTP traffic (and CONNECT) through; peers are still dialled directly")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "PEM `file` of extra CAs trusted for origins (besides the system's)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	durationVar(fs, &o.magnetWait, "magnet-timeout", proxy.DefaultMagnetTimeout,
		"the `duration` to wait for peers to give the metadata of a magnet an origin answers with, before plain HTTP")
	o.webSeeds.register(fs)
	o.dht.register(fs, "for the torrents the proxy fetches (off by default)")
	o.discovery.register(fs, false)
	fs.String("config", defaultConfigFile(), "TOML `file` of settings named like these flags; flags override it")
	return fs, o
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := runProxyFlags(stderr)
	path, explicit := configPath(args)
	if err := applyConfigFile(fs, path, explicit); err != nil {
		return err
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tbproxy run: unexpected argument %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	cfg, err := o.proxyConfig()
	if err != nil {
		return err
	}
	// The cache must be writable: otherwise every download through the
	// proxy would fail once its headers were out.
	if err := checkDataDir(o.dataDir); err != nil {
		return err
	}

	// The DHT node, when on, closes after the engine whose torrents use it.
	node, err := o.dht.start(log.With("component", "dht"))
	if err != nil {
		return err
	}
	if node != nil {
		defer node.Close()
	}
	// The engine's HTTP and UDP tracker traffic and its web seeds trust
	// what the proxy trusts upstream, go through no proxy but the parent
	// (--parent-proxy, HTTP only), and dial under the proxy's outbound
	// policy (no SSRF through a torrent's url-list or announce URL). The
	// proxy needs the engine, so the policy is bound once the proxy
	// exists, before any torrent is added.
	var px atomic.Pointer[proxy.Proxy]
	guarded := func(ctx context.Context, network, addr string) (net.Conn, error) {
		p := px.Load()
		if p == nil {
			return nil, errors.New("tbproxy: the proxy is not up yet")
		}
		return p.DialUpstream(ctx, network, addr)
	}
	// Peers are dialled under the proxy's peer policy: never the proxy's
	// own listeners or services on this machine (a tracker-directed port
	// scan), unless --allow-private.
	peerDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		p := px.Load()
		if p == nil {
			return nil, errors.New("tbproxy: the proxy is not up yet")
		}
		return p.DialPeer(ctx, network, addr)
	}
	engineCfg := swarm.Config{
		ListenAddr: o.peerListen,
		Logger:     log.With("component", "swarm"),
		RootCAs:    cfg.RootCAs,
		Dial:       peerDial,
		HTTPDial:   guarded,
		Encryption: o.encryption,
	}
	if cfg.Parent != nil {
		// Web seeds and HTTP trackers go through the parent proxy too.
		engineCfg.HTTPProxy = func(r *http.Request) (*url.URL, error) {
			p := px.Load()
			if p == nil {
				return nil, errors.New("tbproxy: the proxy is not up yet")
			}
			return p.ParentFor(r)
		}
	}
	o.discovery.apply(&engineCfg)
	engine, err := swarm.NewClient(engineCfg)
	if err != nil {
		return err
	}
	store := &cacheStore{handles: map[metainfo.Hash]*cache.Torrent{}}
	cacheCfg := cache.Config{
		Dir:      o.dataDir,
		MaxBytes: o.cacheSize,
		Logger:   log, // the cache adds its component=cache itself
		OnEvict:  func(ih metainfo.Hash) { store.evict(engine, ih) },
	}
	if store.c, err = cache.Open(cacheCfg); err != nil {
		engine.Close()
		return err
	}
	// The engine stops before the cache closes under it.
	defer func() {
		engine.Close()
		store.close()
	}()
	cfg.Engine = engine
	cfg.PeerSources = func(m *metainfo.MetaInfo) []swarm.PeerSource { return dhtSources(node, m) }
	cfg.Store = store
	cfg.URLFile = filepath.Join(o.dataDir, "urls.json") // beside the torrents it points into
	cfg.Cache = cacheView{store: store, engine: engine}
	cfg.Logger = log.With("component", "proxy")
	if o.mitm {
		dir := o.caDir
		if dir == "" {
			if dir, err = defaultCADir(); err != nil {
				return err
			}
		}
		if cfg.CA, err = certs.Load(dir); err != nil {
			return err
		}
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	px.Store(p)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening for proxy clients: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { store.reseed(ctx, p.Reseed, log) })
	wg.Go(func() { store.account(ctx, engine) })
	p.AddListener(ln.Addr().String()) // before the status page, whose PAC file names it
	var ui *http.Server
	uiAddr := ""
	if o.uiListen != "" {
		uiLn, err := net.Listen("tcp", o.uiListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening for the status page: %w", err)
		}
		// A proxied request must never reach the status page.
		if err := p.AddSelf(uiLn.Addr().String()); err != nil {
			ln.Close()
			uiLn.Close()
			return err
		}
		uiAddr = uiLn.Addr().String()
		ui = &http.Server{Handler: p.LocalHandler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() { ui.Serve(uiLn) })
		defer ui.Close()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- p.Serve(ln) }()
	addr := ln.Addr().String()
	fmt.Fprintf(stdout, "tbproxy is listening on %s\n", addr)
	fmt.Fprintf(stdout, "  use it:   export http_proxy=http://%s https_proxy=http://%s\n", addr, addr)
	fmt.Fprintf(stdout, "  or PAC:   http://%s/proxy.pac\n", addr)
	if ui != nil {
		fmt.Fprintf(stdout, "  status:   http://%s/\n", uiAddr)
	}
	fmt.Fprintf(stdout, "  peers on %s, cache %s (%s)\n", engine.Addr(), o.dataDir, formatSize(o.cacheSize))
	if cfg.CA != nil {
		fmt.Fprintf(stdout, "  HTTPS interception is on: trust %s (tbproxy ca install)\n", cfg.CA.Path())
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
	}
	p.Close()
	if err == nil {
		<-serveErr
	}
	return err
}

// beyondLoopback reports whether a listening address (host:port) can be
// reached from other machines: its host is neither localhost nor a
// loopback address (an empty host listens everywhere).
func beyondLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false // "" (no listener) or not an address; Listen reports the latter
	}
	ip, perr := netip.ParseAddr(host)
	return !(host == "localhost" || perr == nil && ip.IsLoopback())
}

func (o *runOptions) proxyConfig() (proxy.Config, error) {
	var cfg proxy.Config
	for _, c := range o.allowClients {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return cfg, fmt.Errorf("--allow-clients %q: %w", c, err)
		}
		cfg.AllowedClients = append(cfg.AllowedClients, pfx)
	}
	// Beyond loopback, the proxy and its status page (which shows every
	// transfer's URL) answer only the networks named.
	for flag, addr := range map[string]string{"--listen": o.listen, "--ui-listen": o.uiListen} {
		if beyondLoopback(addr) && len(cfg.AllowedClients) == 0 {
			return cfg, fmt.Errorf("%s %s is beyond loopback: name the client networks with --allow-clients", flag, addr)
		}
	}
	for _, p := range strings.Split(o.connectPorts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 || n > 65535 {
			return cfg, fmt.Errorf("--connect-ports: bad port %q", p)
		}
		cfg.ConnectPorts = append(cfg.ConnectPorts, n)
	}
	if o.upstreamCA != "" {
		pem, err := os.ReadFile(o.upstreamCA)
		if err != nil {
			return cfg, fmt.Errorf("--upstream-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--upstream-ca %s: no certificates in it", o.upstreamCA)
		}
		cfg.RootCAs = pool
	}
	cfg.MITMExclude = o.mitmExclude
	cfg.ExcludeHosts = o.excludeHosts
	cfg.AllowPrivateUpstream = o.allowPrivate
	if o.parent != "" {
		u, err := proxy.ParseParent(o.parent)
		if err != nil {
			return cfg, fmt.Errorf("--parent-proxy: %w", err)
		}
		cfg.Parent = u
	}
	if o.magnetWait <= 0 {
		return cfg, fmt.Errorf("--magnet-timeout %v: must be positive", o.magnetWait)
	}
	cfg.MagnetTimeout = o.magnetWait
	var opts swarm.TorrentOptions
	if err := o.webSeeds.options(&opts); err != nil {
		return cfg, err
	}
	cfg.WebSeedMode, cfg.StallBudget = opts.WebSeedMode, opts.StallBudget
	return cfg, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if l <= slog.LevelDebug {
		// Debugging latency needs finer times than milliseconds.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
				a.Value = slog.StringValue(a.Value.Time().UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', -1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', -1, 64) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// cacheStore adapts the disk cache to the proxy and keeps the handle of
// every torrent it opened, so that pins and evictions find it.
type cacheStore struct {
	c *cache.Store

	mu      sync.Mutex
	handles map[metainfo.Hash]*cache.Torrent // guarded by mu
}

func (s *cacheStore) Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error) {
	h, err := s.c.Torrent(m, cache.TorrentOptions{Transient: transient})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.handles[m.InfoHash]; old != nil && old != h {
		old.Close()
	}
	s.handles[m.InfoHash] = h
	return h, nil
}

func (s *cacheStore) Pin(ih metainfo.Hash) func() {
	s.mu.Lock()
	h := s.handles[ih]
	s.mu.Unlock()
	if h == nil {
		return func() {}
	}
	h.Touch()
	return h.Pin()
}

var _ proxy.WholeStore = (*cacheStore)(nil)

// Whole returns the metainfo of a torrent the cache holds whole, for the
// proxy's answer from the cache when an origin cannot be reached
// (proxy.WholeStore).
func (s *cacheStore) Whole(ih metainfo.Hash) (*metainfo.MetaInfo, bool) {
	for _, e := range s.c.Entries() {
		if e.InfoHash == ih {
			return e.MetaInfo, e.Complete && !e.Transient && !e.Rechecking
		}
	}
	return nil, false
}

// evict drops a torrent the cache is about to delete: the engine stops
// seeding it first, then its handle closes.
func (s *cacheStore) evict(engine *swarm.Client, ih metainfo.Hash) {
	if t, ok := engine.Torrent(ih); ok {
		t.Close()
	}
	s.mu.Lock()
	h := s.handles[ih]
	delete(s.handles, ih)
	s.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// reseed has every cached torrent that the seeding policy allows run
// again, so that what was downloaded before a restart is seeded again.
// add is the proxy's Reseed: a torrent opens as a transform opens it, and
// one that a request opened first is not opened twice.
func (s *cacheStore) reseed(ctx context.Context, add func(*metainfo.MetaInfo) error, log *slog.Logger) {
	for _, e := range s.c.Entries() {
		if ctx.Err() != nil {
			return
		}
		if !e.Seed || e.Transient {
			continue
		}
		if err := add(e.MetaInfo); err != nil {
			log.Warn("cannot reseed a cached torrent", "infohash", e.InfoHash.String(), "err", err)
		}
	}
}

// account reports upload counts to the cache, for its seeding policy, and
// stops seeding torrents the policy is done with.
func (s *cacheStore) account(ctx context.Context, engine *swarm.Client) {
	reported := map[metainfo.Hash]int64{}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		handles := make(map[metainfo.Hash]*cache.Torrent, len(s.handles))
		for ih, h := range s.handles {
			handles[ih] = h
		}
		s.mu.Unlock()
		for ih, h := range handles {
			t, ok := engine.Torrent(ih)
			if !ok {
				continue
			}
			up := t.Stats().Uploaded
			h.AddUploaded(up - reported[ih])
			reported[ih] = up
			if !h.Seeding() {
				t.Close()
			}
		}
	}
}

// cacheView shows the cache on the status page.
type cacheView struct {
	store  *cacheStore
	engine *swarm.Client
}

func (v cacheView) Usage() (used, limit int64) {
	st := v.store.c.Stats()
	return st.BytesUsed, st.MaxBytes
}

func (v cacheView) Torrents() []proxy.CachedTorrent {
	entries := v.store.c.Entries()
	out := make([]proxy.CachedTorrent, 0, len(entries))
	for _, e := range entries {
		ct := proxy.CachedTorrent{
			InfoHash:  e.InfoHash,
			DiskBytes: e.Bytes,
			Seeding:   e.Seed && !e.Transient,
			Uploaded:  e.Uploaded,
			LastUse:   e.LastUse,
		}
		if m := e.MetaInfo; m != nil {
			ct.Name = m.Info.Name
			ct.Size = m.Info.TotalLength
			ct.Verified = float64(e.Verified) / float64(max(m.Info.NumPieces(), 1))
		}
		out = append(out, ct)
	}
	return out
}

// Drop deletes a torrent from the cache; the cache's OnEvict stops the
// engine's torrent first.
func (v cacheView) Drop(ih metainfo.Hash) error {
	err := v.store.c.Remove(ih)
	if errors.Is(err, cache.ErrNotCached) {
		return fmt.Errorf("dropping %s: %w", ih, proxy.ErrNotCached)
	}
	return err
}

func (s *cacheStore) close() {
	s.mu.Lock()
	for ih, h := range s.handles {
		h.Close()
		delete(s.handles, ih)
	}
	s.mu.Unlock()
	s.c.Close()
}
