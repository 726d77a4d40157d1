package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/origin"
	"github.com/tbproxy/tbproxy/swarm"
	"github.com/tbproxy/tbproxy/tracker/server"
)

// runPublish serves a directory (or fronts an upstream web server) as a
// Transparent BitTorrent origin: it answers the Accept negotiation with
// generated metainfo, runs the tracker, and seeds every published file.
func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy publish", stderr, "Usage: tbproxy publish (--dir DIR | DIR | --upstream URL) [flags]")
	var (
		dir        = fs.String("dir", "", "`directory` to publish")
		upstream   = fs.String("upstream", "", "web server `URL` to front instead of a directory")
		listen     = fs.String("listen", "127.0.0.1:8000", "HTTP (and UDP tracker) `address`")
		peerListen = fs.String("peer-listen", ":6882", "BitTorrent peer `address`")
		dataDir    = fs.String("data-dir", filepath.Join(defaultDataDir(), "publish"), "`directory` for generated metainfo (and fetched copies with --upstream)")
		publicURL  = fs.String("public-url", "", "the `URL` clients reach this server by, for announce and url-list (default: http://LISTEN)")
		minSize    = int64(1 << 20)
		include    listFlag
		exclude    listFlag
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		superSeed  = fs.Bool("super-seed", true, "offer each peer a few pieces at a time (BEP 16), so that downloaders trade among themselves and the origin uploads each piece about once")
		rateLimit  = fs.Float64("tracker-rate", server.DefaultRateLimit, "tracker announces and scrapes per `second` allowed from one address, after a burst of 10 (loopback is not limited); 0 for no limit")
		disc       discovery
	)
	fs.Var(sizeFlag{n: &minSize}, "min-size", "the smallest file `size` to offer as a torrent, such as 1MiB")
	fs.Var(&include, "include", "path `glob` to publish (default: all); repeatable")
	fs.Var(&exclude, "exclude", "path `glob` never published; repeatable")
	var enc swarm.Encryption
	fs.TextVar(&enc, "encryption", swarm.EncryptionPrefer, encryptionUsage)
	// A publisher's content is public: exchanging peers helps its leechers.
	disc.register(fs, true)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	// "tbproxy publish DIR" reads as the user means it: --dir DIR.
	if len(pos) == 1 && *dir == "" && *upstream == "" {
		*dir, pos = pos[0], nil
	}
	if why := publishUsage(pos, *dir, *upstream); why != "" {
		fmt.Fprintln(stderr, "tbproxy publish: "+why)
		fs.Usage()
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	base := strings.TrimSuffix(*publicURL, "/")
	if base == "" {
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return errors.New("listening on all addresses: say how clients reach this server with --public-url")
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	if _, err := url.Parse(base); err != nil {
		return fmt.Errorf("--public-url: %w", err)
	}

	engineCfg := swarm.Config{ListenAddr: *peerListen, Logger: log.With("component", "swarm"), Encryption: enc}
	disc.apply(&engineCfg)
	engine, err := swarm.NewClient(engineCfg)
	if err != nil {
		return err
	}
	seeder := &publishSeeder{engine: engine, superSeed: *superSeed, torrents: map[metainfo.Hash]*seeded{}}
	defer func() {
		engine.Close()
		seeder.close()
	}()
	if *rateLimit < 0 {
		return fmt.Errorf("--tracker-rate must not be negative: %v", *rateLimit)
	}
	trk := server.New(server.Config{AllowList: seeder.has, RateLimit: *rateLimit, Logger: log.With("component", "tracker")})
	cfg := origin.Config{
		DataDir:   *dataDir,
		Announce:  base + "/announce",
		PublicURL: func(r *http.Request) string { return base + r.URL.EscapedPath() },
		MinSize:   minSize,
		Include:   include,
		Exclude:   exclude,
		Seeder:    seeder,
		Logger:    log.With("component", "publish"),
	}
	var next http.Handler
	if *dir != "" {
		cfg.Dir = *dir
		cfg.PlainIsFile = true
		next = origin.FileServer(http.Dir(*dir))
		// The file server types each file from the system's MIME table,
		// which the mime package reads (2 ms here) on first use: now, not
		// in the first client's request.
		mime.TypeByExtension(".bin")
	} else {
		u, err := url.Parse(*upstream)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--upstream %q: not a URL", *upstream)
		}
		up, err := origin.NewUpstream(origin.UpstreamConfig{Upstream: u, CacheDir: filepath.Join(*dataDir, "upstream"), MinSize: minSize, Logger: log.With("component", "upstream")})
		if err != nil {
			return err
		}
		defer up.Close()
		cfg.Resolver = up
		next = up.Handler()
	}
	pub, err := origin.NewPublisher(cfg)
	if err != nil {
		return err
	}
	seeder.setPublisher(pub)
	defer pub.Close() // runs first: no more seeding calls once the engine closes
	if n, err := pub.Load(); err != nil {
		log.Warn("loading published torrents", "err", err)
	} else if n > 0 {
		log.Info("seeding what was published before", "torrents", n)
	}

	mux := http.NewServeMux()
	mux.Handle("/announce", trk)
	mux.Handle("/scrape", trk)
	mux.Handle("/", pub.Handler(next))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	var wg sync.WaitGroup
	defer wg.Wait()
	if pc, err := net.ListenPacket("udp", ln.Addr().String()); err == nil {
		defer pc.Close()
		wg.Go(func() { trk.ServeUDP(pc) })
	} else {
		log.Warn("no UDP tracker", "err", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "tbproxy publish is serving %s%s on %s\n", *dir, *upstream, base)
	fmt.Fprintf(stdout, "  tracker:  %s/announce (HTTP) and udp://%s/announce\n", base, ln.Addr())
	fmt.Fprintf(stdout, "  peers on %s; files of %s or more are offered as torrents\n", engine.Addr(), formatSize(minSize))
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
	}
	srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// seeded is one published torrent being seeded.
type seeded struct {
	t  *swarm.Torrent
	st *origin.FileStorage
}

// publishSeeder seeds published files with the engine, straight from the
// files, and tells the tracker which torrents it tracks.
type publishSeeder struct {
	engine    *swarm.Client
	superSeed bool

	mu       sync.Mutex
	pub      *origin.Publisher         // set once the publisher exists; guarded by mu
	torrents map[metainfo.Hash]*seeded // guarded by mu
}

func (s *publishSeeder) setPublisher(p *origin.Publisher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pub = p
}

func (s *publishSeeder) Seed(m *metainfo.MetaInfo, files []origin.Resource) error {
	ih := m.InfoHash
	st, err := origin.NewFileStorage(&m.Info, files, func() {
		s.mu.Lock()
		pub := s.pub
		s.mu.Unlock()
		if pub != nil {
			pub.Invalidate(ih)
		}
	})
	if err != nil {
		return err
	}
	t, err := s.engine.AddTorrent(m, st, swarm.TorrentOptions{NoWebSeeds: true, SuperSeed: s.superSeed})
	if err != nil {
		st.Close()
		if errors.Is(err, swarm.ErrExists) {
			return nil
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.torrents[ih] = &seeded{t: t, st: st}
	return nil
}

func (s *publishSeeder) Unseed(ih metainfo.Hash) {
	s.mu.Lock()
	sd := s.torrents[ih]
	delete(s.torrents, ih)
	s.mu.Unlock()
	if sd != nil {
		sd.t.Close()
		sd.st.Close()
	}
}

// has is the tracker's allow-list: only our own torrents are tracked.
func (s *publishSeeder) has(ih metainfo.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.torrents[ih] != nil
}

func (s *publishSeeder) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ih, sd := range s.torrents {
		sd.st.Close()
		delete(s.torrents, ih)
	}
}

// runTracker runs the tracker on its own.
func runTracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy tracker", stderr, "Usage: tbproxy tracker [flags]")
	listen := fs.String("listen", "127.0.0.1:6969", "HTTP and UDP `address`")
	var interval time.Duration
	durationVar(fs, &interval, "interval", 30*time.Minute, "the announce interval, a `duration` such as 30m")
	trustIP := fs.Bool("trust-ip", false, "honour the ip= parameter (only behind a trusted network)")
	rateLimit := fs.Float64("rate", server.DefaultRateLimit, "announces and scrapes per `second` allowed from one address, after a burst of 10 (loopback is not limited); 0 for no limit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tbproxy tracker: unexpected argument %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *rateLimit < 0 {
		return fmt.Errorf("--rate must not be negative: %v", *rateLimit)
	}
	trk := server.New(server.Config{
		Intervals: server.Static{Every: interval, Min: min(interval, 5*time.Minute)},
		TrustIP:   *trustIP,
		RateLimit: *rateLimit,
		Logger:    log,
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: trk, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	var wg sync.WaitGroup
	wg.Go(func() { trk.ServeUDP(pc) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "tbproxy tracker: http://%s/announce and udp://%s/announce\n", ln.Addr(), ln.Addr())
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	srv.Close()
	pc.Close()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// publishUsage says what is wrong with publish's source arguments, or "".
func publishUsage(pos []string, dir, upstream string) string {
	switch {
	case len(pos) > 0:
		return fmt.Sprintf("unexpected argument %q", pos[0])
	case dir == "" && upstream == "":
		return "say what to publish: a directory or --upstream URL"
	case dir != "" && upstream != "":
		return "--dir and --upstream exclude each other"
	}
	return ""
}
