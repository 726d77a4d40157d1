package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/tbproxy/tbproxy/cache"
	"github.com/tbproxy/tbproxy/dht"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
	"github.com/tbproxy/tbproxy/swarm"
)

// runGet downloads one URL the way the proxy would: it negotiates, and
// when the origin answers with a torrent it fetches the file through the
// engine (peers first, the URL itself as a web seed), into the cache.
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy get", stderr, "Usage: tbproxy get [flags] URL|MAGNET")
	dataDir := fs.String("data-dir", defaultDataDir(), "cache `directory`")
	out := fs.String("o", "", "write to `FILE` (default: the URL's file name; - for stdout)")
	peerListen := fs.String("peer-listen", ":6881", "BitTorrent peer `address`")
	quiet := fs.Bool("q", false, "no progress bar")
	var dhtOpts dhtOptions
	dhtOpts.register(fs, "(on by default for a magnet when --dht-bootstrap is set)")
	dhtSet := false
	var enc swarm.Encryption
	fs.TextVar(&enc, "encryption", swarm.EncryptionPrefer, encryptionUsage)
	var disc discovery
	disc.register(fs, false)
	var webSeeds webSeedOptions
	webSeeds.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "tbproxy get: want exactly one URL or magnet URI")
		fs.Usage()
		return errUsage
	}
	target := pos[0]
	var opts swarm.TorrentOptions
	if err := webSeeds.options(&opts); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { dhtSet = dhtSet || f.Name == "dht" })
	isMagnet := strings.HasPrefix(strings.ToLower(target), "magnet:")
	if isMagnet && !dhtSet && len(dhtOpts.bootstrap) > 0 {
		dhtOpts.enabled = true
	}
	var mg metainfo.Magnet
	var peers []netip.AddrPort // the peers a magnet names (x.pe)
	if isMagnet {
		if mg, err = metainfo.ParseMagnet(target); err != nil {
			return err
		}
		for _, pe := range mg.Params["x.pe"] {
			if a, err := netip.ParseAddrPort(pe); err == nil {
				peers = append(peers, a)
			}
		}
		if err := magnetSources(mg, peers, dhtOpts.enabled); err != nil {
			return err
		}
	}
	node, err := dhtOpts.start(nil)
	if err != nil {
		return err
	}
	if node != nil {
		defer node.Close()
	}
	env := getEnv{dataDir: *dataDir, engine: swarm.Config{ListenAddr: *peerListen, Encryption: enc}, disc: disc,
		opts: opts, node: node, stdout: stdout, stderr: stderr, quiet: *quiet}
	if isMagnet {
		dest := *out
		if dest == "" {
			dest = filepath.Base(mg.Name)
			if mg.Name == "" || dest == "." || dest == "/" {
				dest = mg.InfoHash.String()
			}
		}
		resolve := func(engine *swarm.Client) (*metainfo.MetaInfo, int, error) {
			fmt.Fprintln(stderr, "fetching the torrent's metadata from peers (BEP 9)...")
			fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			extra := dhtMagnetPeers(fctx, node, mg.InfoHash, 30*time.Second)
			m, err := engine.FetchMetadata(fctx, mg, extra...)
			if err != nil {
				return nil, 0, err
			}
			return m, largestFile(&m.Info), nil
		}
		// Peers the magnet names (x.pe) are peers of the download too.
		return env.getTorrent(ctx, resolve, "", peers, dest)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") {
		return fmt.Errorf("not an http or https URL: %q", target)
	}
	req.Header.Set("User-Agent", "tbproxy-get")
	injected, _ := negotiate.InjectAccept(req, negotiate.Config{})
	client := &http.Client{Transport: &http.Transport{Proxy: nil, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dest := *out
	if dest == "" {
		dest = path.Base(req.URL.Path)
		if dest == "/" || dest == "." || dest == "" {
			dest = "index.html"
		}
	}
	prefix := make([]byte, negotiate.SniffLen)
	n, _ := io.ReadFull(resp.Body, prefix)
	prefix = prefix[:n]
	body := io.MultiReader(strings.NewReader(string(prefix)), resp.Body)
	d := negotiate.Decide(resp, injected, prefix)
	switch {
	case d.Transform && d.Kind == negotiate.KindMagnetLink:
		// The body is the file itself; its magnet is not used here.
		d = negotiate.Decision{Reason: d.Reason}
	case d.Transform && d.Kind == negotiate.KindMagnetBody:
		// The body is a magnet, not the file: ask again plainly.
		d = negotiate.Decision{Refetch: true, Reason: d.Reason}
	}
	if !d.Transform {
		if d.Refetch {
			resp.Body.Close()
			plain, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if resp, err = client.Do(plain); err != nil {
				return err
			}
			defer resp.Body.Close()
			body = resp.Body
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("the origin answered %s", resp.Status)
		}
		fmt.Fprintln(stderr, "plain HTTP (the origin offered no torrent)")
		return save(dest, stdout, body, resp.ContentLength, *quiet, stderr, nil)
	}
	m, _, err := negotiate.ReadMetainfo(body)
	if err != nil {
		return fmt.Errorf("the origin's torrent is unusable: %w", err)
	}
	idx, ok := negotiate.PickFile(&m.Info, req.URL)
	if !ok {
		return errors.New("no file in the torrent matches the URL")
	}
	resolve := func(*swarm.Client) (*metainfo.MetaInfo, int, error) { return m, idx, nil }
	return env.getTorrent(ctx, resolve, target, nil, dest)
}

// magnetSources checks that a magnet's metadata can come from somewhere:
// it comes from peers only (BEP 9), found through the magnet's trackers
// (tr=), named in it (x.pe=, given as peers), or found in the DHT. With
// none of them the download could never start, so it fails at once.
func magnetSources(mg metainfo.Magnet, peers []netip.AddrPort, dht bool) error {
	if len(mg.Trackers) > 0 || len(peers) > 0 || dht {
		return nil
	}
	why := "the magnet names no tracker (tr=) and no peer (x.pe=), and the DHT is off"
	if len(mg.WebSeeds) > 0 {
		why += " (a web seed, ws=, cannot give the metadata)"
	}
	return fmt.Errorf("%s: nowhere to get the torrent's metadata from; "+
		"use a magnet with tr= or x.pe=, or turn the DHT on with --dht-bootstrap HOST:PORT", why)
}

// largestFile is the file a magnet download writes: the biggest one.
func largestFile(info *metainfo.Info) int {
	best := 0
	for i, f := range info.Files {
		if !f.Padding() && f.Length > info.Files[best].Length {
			best = i
		}
	}
	return best
}

// getEnv is how `tbproxy get` downloads: where, with which engine and
// torrent settings, and where it reports.
type getEnv struct {
	dataDir        string
	engine         swarm.Config
	disc           discovery
	opts           swarm.TorrentOptions // the web seed settings; the rest is set per download
	node           *dht.Server          // a DHT node to find peers with, or nil
	stdout, stderr io.Writer
	quiet          bool // no progress bar
}

// getTorrent downloads file idx of the torrent resolve gives, into the
// cache and to dest. originURL, when set, is the file's own URL, used as
// a web seed; peers are known peers of the torrent.
func (e getEnv) getTorrent(ctx context.Context, resolve func(*swarm.Client) (*metainfo.MetaInfo, int, error), originURL string, peers []netip.AddrPort, dest string) error {
	if err := checkDataDir(e.dataDir); err != nil {
		return err
	}
	store, err := cache.Open(cache.Config{Dir: e.dataDir})
	if err != nil {
		return err
	}
	defer store.Close()
	engineCfg := e.engine
	e.disc.apply(&engineCfg)
	engine, err := swarm.NewClient(engineCfg)
	if err != nil {
		return err
	}
	defer engine.Close() // before the cache closes: deferred calls run in reverse
	m, idx, err := resolve(engine)
	if err != nil {
		return err
	}
	st, err := store.Torrent(m, cache.TorrentOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	release := st.Pin()
	defer release()
	opts := e.opts
	opts.Lazy, opts.Peers, opts.PeerSources = true, peers, dhtSources(e.node, m)
	t, err := engine.AddTorrent(m, st, opts)
	if err != nil {
		return err
	}
	defer t.Close() // the torrent stops before its storage closes
	if originURL != "" {
		if err := t.AddWebSeed(swarm.WebSeed{URL: originURL, Origin: true, File: idx}); err != nil {
			return err
		}
	}
	r, err := t.NewFileReader(ctx, idx)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(e.stderr, "BitTorrent: %s (info-hash %s)\n", m.Info.Files[idx].DisplayPath(), m.InfoHash)
	return save(dest, e.stdout, r, r.Size(), e.quiet, e.stderr, t)
}

// save writes body to dest (or stdout for "-"), with a progress bar on
// stderr that shows the peers' and the origin's shares for a torrent. A
// file is written under a temporary name and renamed when complete.
func save(dest string, stdout io.Writer, body io.Reader, size int64, quiet bool, stderr io.Writer, t *swarm.Torrent) error {
	var w io.Writer = stdout
	var tmp *os.File
	if dest != "-" {
		var err error
		tmp, err = createPart(dest)
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		w = tmp
	}
	if !quiet {
		bar := newBar(size, stderr)
		if t != nil {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			defer wg.Wait()
			defer close(stop)
			wg.Go(func() { describe(bar, t, stop) })
		}
		w = io.MultiWriter(w, bar)
	}
	n, err := io.Copy(w, body)
	if err != nil {
		return err
	}
	if size >= 0 && n != size {
		return fmt.Errorf("got %d bytes, want %d", n, size)
	}
	if tmp == nil {
		return nil
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dest)
}

// createPart creates the file a download to dest is written in before it
// is renamed to dest: a new file (never an existing one, nor a link an
// attacker planted) with a random name beside dest. Like curl's and
// wget's output, it is created with mode 0666 less the umask, not 0600 as
// os.CreateTemp would.
func createPart(dest string) (*os.File, error) {
	dir, base := filepath.Dir(dest), filepath.Base(dest)
	for range 100 {
		name := filepath.Join(dir, fmt.Sprintf(".%s.part-%d", base, rand.Uint32()))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("creating a temporary file beside %s: too many tries", dest)
}

// newBar is the progress bar of a download of size bytes. Its clock starts
// now, before the first bytes arrive: started by them instead, its first
// rate would be their count over the microseconds since, tens of GB/s.
func newBar(size int64, stderr io.Writer) *progressbar.ProgressBar {
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
	)
	bar.StartWithoutRender()
	return bar
}

// describe keeps the bar's label on the peer and origin shares.
func describe(bar *progressbar.ProgressBar, t *swarm.Torrent, stop <-chan struct{}) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s := t.Stats()
		total := max(s.Downloaded+s.FromWebSeeds, 1)
		bar.Describe(fmt.Sprintf("%d peers, %d%% peers / %d%% origin", len(s.Peers), 100*s.Downloaded/total, 100*s.FromWebSeeds/total))
	}
}
