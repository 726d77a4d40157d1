//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// btType is the media type of metainfo, which negotiation asks for.
const btType = "application/x-bittorrent"

// fetchSample is one curl download of comparisons 2, 4 and 5.
type fetchSample struct {
	ttfb     time.Duration // curl's time to the first byte of the response
	total    time.Duration // curl's time to the end
	proxyCPU time.Duration // the proxy's CPU over the download; valid when the row has a proxy
	proxyRSS int64         // the proxy's peak RSS (VmHWM) after the download, bytes; 0 without a proxy
	seedUp   int64         // bytes the libtorrent seed reports sending; -1 without one
}

// fetchRow is one way to download, and its runs.
type fetchRow struct {
	name    string
	proxied bool // the download goes through a proxy, whose CPU and memory are measured
	samples []fetchSample
	tally
}

func (r *fetchRow) figure(f func(fetchSample) (float64, bool)) spread {
	var xs []float64
	for _, s := range r.samples {
		if v, ok := f(s); ok {
			xs = append(xs, v)
		}
	}
	return spreadOf(xs)
}

func (r *fetchRow) throughput(size int64) spread {
	return r.figure(func(s fetchSample) (float64, bool) { return mbps(size, s.total), true })
}

func (r *fetchRow) ttfbMS() spread {
	return r.figure(func(s fetchSample) (float64, bool) { return float64(s.ttfb) / 1e6, true })
}

// last describes the latest run, for the progress log.
func (r *fetchRow) last(size int64) string {
	return r.state(func() string {
		s := r.samples[len(r.samples)-1]
		line := fmt.Sprintf("first byte %.1f ms, total %.3f s", float64(s.ttfb)/1e6, s.total.Seconds())
		if size > 0 {
			line = fmt.Sprintf("%.0f MB/s, %s", mbps(size, s.total), line)
		}
		if r.proxied {
			line += fmt.Sprintf(", proxy CPU %.2f s, proxy peak RSS %.0f MiB", s.proxyCPU.Seconds(), mib(s.proxyRSS))
		}
		return line
	})
}

// proxyResult is comparison 2: one file downloaded with curl directly
// from nginx, through tinyproxy, and through tbproxy from a publisher
// and a libtorrent seed, from nginx as a web seed, and from its cache.
type proxyResult struct {
	size     int64
	pieceLen int64 // of the published torrent, as the publisher picked it
	sameHash bool  // the trackerless torrent (nginx's, the lone leecher's) has the publisher's info-hash

	direct, tiny, cold, web, warm *fetchRow
	metaPub, metaNginx            *fetchRow // the metainfo fetched directly, for its first byte
	// nginx's metainfo asked for with its own type, so passed through:
	// by tinyproxy, and by a fresh tbproxy (one origin round trip and
	// nothing transformed, the floor of any answer of a fresh proxy).
	metaTiny, metaTB *fetchRow
	metaMin          *fetchRow // through bench/cmd/minproxy: the Go hop alone
	// Over an emulated wide-area path to nginx (newDelayRelay, --wan-rtt):
	// the metainfo fetched directly, and a cold transform's first MiB.
	wanRTT          time.Duration // 0 when the case was left out
	metaWAN, webWAN *fetchRow

	lt       *row // the libtorrent leecher alone, on the same torrent
	ltReused bool // lt is comparison 1's row, not measured here
}

// proxyCmp is comparison 2 while it runs.
type proxyCmp struct {
	cfg     config
	ws      *workspace
	res     *proxyResult
	ng, tp  *server // nginx and tinyproxy, for the whole comparison
	wan     *relay  // the emulated wide-area path to nginx; nil without one
	pubData string  // the publisher's data directory, shared by its runs
}

// measureProxy runs comparison 2. swarm is comparison 1's result, whose
// libtorrent leecher is reused when it downloaded the same torrent.
func measureProxy(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer, swarm []comparison) (res *proxyResult, err error) {
	res = &proxyResult{
		size:      cfg.size,
		direct:    &fetchRow{name: "nginx direct"},
		tiny:      &fetchRow{name: "tinyproxy (plain pass-through)", proxied: true},
		cold:      &fetchRow{name: "tbproxy, cold cache, publisher + libtorrent seed", proxied: true},
		web:       &fetchRow{name: "tbproxy, cold cache, web seed only (nginx origin)", proxied: true},
		warm:      &fetchRow{name: "tbproxy, warm cache (second download)", proxied: true},
		metaPub:   &fetchRow{name: "tbproxy publish"},
		metaNginx: &fetchRow{name: "nginx"},
		metaTiny:  &fetchRow{name: "nginx, through tinyproxy"},
		metaTB:    &fetchRow{name: "nginx, through a fresh tbproxy (passed through)"},
		metaMin:   &fetchRow{name: "nginx, through a fresh minimal Go proxy (bench/cmd/minproxy)"},
		wanRTT:    cfg.wanRTT,
		metaWAN:   &fetchRow{name: fmt.Sprintf("nginx's metainfo over the emulated %v path, directly", cfg.wanRTT)},
		webWAN:    &fetchRow{name: fmt.Sprintf("tbproxy, cold cache, web seed only, over the emulated %v path (first MiB)", cfg.wanRTT), proxied: true},
	}
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	pc := &proxyCmp{cfg: cfg, ws: ws, res: res, pubData: filepath.Join(env.dir, "publish-data")}
	fmt.Fprintf(log, "bench: proxy: hashing %s with tbproxy publish\n", formatBytes(cfg.size))
	published, err := publishOnce(ctx, ws, pc.pubData, ws.content)
	if err != nil {
		return nil, err
	}
	// A trackerless torrent with the publisher's piece length has the same
	// pieces as the publisher's: nginx offers it, and the libtorrent
	// leecher alone downloads it.
	res.pieceLen = published.Info.PieceLength
	t, err := ws.makeTorrent(ctx, res.pieceLen)
	if err != nil {
		return nil, err
	}
	res.sameHash = t.meta.InfoHash == published.InfoHash
	for _, c := range swarm {
		if c.pieceLen == res.pieceLen && c.size == cfg.size {
			res.lt, res.ltReused = c.rows[1], true
		}
	}
	if res.lt == nil {
		res.lt = &row{leecher: ltLeecher{}}
	}
	torrents := filepath.Join(env.dir, "torrents")
	if err := copyFile(t.path, filepath.Join(torrents, filepath.Base(ws.content)+".torrent")); err != nil {
		return nil, err
	}
	if pc.ng, err = startNginx(ctx, env, ws, torrents, false); err != nil {
		return nil, err
	}
	if pc.tp, err = startTinyproxy(ctx, env); err != nil {
		return nil, err
	}
	if cfg.wanRTT > 0 {
		if pc.wan, err = newDelayRelay(hostPort(pc.ng.port), cfg.wanRTT); err != nil {
			return nil, err
		}
		defer pc.wan.close()
	}
	plain := pc.ng.url(plainPath + filepath.Base(ws.content))
	for i := range cfg.runs {
		steps := []struct {
			r       *fetchRow
			measure func(context.Context) error
		}{
			{res.direct, func(ctx context.Context) error { return pc.plain(ctx, res.direct, plain, nil) }},
			{res.tiny, func(ctx context.Context) error { return pc.plain(ctx, res.tiny, plain, pc.tp) }},
			{res.cold, pc.fromPublisher},
			{res.web, pc.fromWebSeed},
		}
		if pc.wan != nil {
			steps = append(steps, struct {
				r       *fetchRow
				measure func(context.Context) error
			}{res.webWAN, pc.fromWebSeedOverWAN})
		}
		for _, st := range steps {
			// The publisher case makes two downloads and starts five processes.
			if err := st.r.attempt(ctx, budget, i, 2*runTimeout(cfg.size), st.measure); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: proxy, run %d/%d, %s: %s\n", i+1, cfg.runs, st.r.name, st.r.last(cfg.size))
			if st.r == res.cold && len(st.r.errs) == 0 && st.r.skipped == 0 {
				fmt.Fprintf(log, "bench: proxy, run %d/%d, %s: %s\n", i+1, cfg.runs, res.warm.name, res.warm.last(cfg.size))
			}
		}
		if !res.ltReused {
			if err := measureRow(ctx, budget, cfg, ws, t, res.lt, i); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: proxy, run %d/%d, libtorrent leecher alone: %s\n", i+1, cfg.runs, res.lt.last(cfg.size))
		}
	}
	return res, nil
}

// plain downloads url with curl, through px unless it is nil.
func (pc *proxyCmp) plain(ctx context.Context, r *fetchRow, url string, px *server) (err error) {
	env, err := newRunEnv(pc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	var s fetchSample
	if px == nil {
		s, err = directFetch(ctx, env, url, pc.res.size)
	} else {
		s, err = proxiedFetch(ctx, env, px, url, pc.res.size)
	}
	if err == nil {
		r.samples = append(r.samples, s)
	}
	return err
}

// fromPublisher is a cold download through a fresh tbproxy of a file
// that a fresh publisher and a fresh libtorrent seed both seed, then a
// warm one through the same tbproxy. The seed gets the publisher's
// torrent as a client would (curl with the BitTorrent Accept) and
// announces to the publisher's tracker, where tbproxy finds both.
func (pc *proxyCmp) fromPublisher(ctx context.Context) (err error) {
	env, err := newRunEnv(pc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	pub, err := startPublisher(ctx, env, pc.ws, pc.pubData, 0, 0)
	if err != nil {
		return err
	}
	url := pub.url("/" + filepath.Base(pc.ws.content))
	meta := filepath.Join(env.dir, "published.torrent")
	m, err := curl(ctx, env, curlReq{url: url, accept: btType, out: meta, want: -1})
	if err != nil {
		return fmt.Errorf("fetching the metainfo: %w", err)
	}
	mi, err := readTorrent(meta)
	if err != nil {
		return err
	}
	if mi.Info.PieceLength != pc.res.pieceLen {
		return fmt.Errorf("the publisher now has %s pieces, not %s", formatBytes(mi.Info.PieceLength), formatBytes(pc.res.pieceLen))
	}
	if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 1); err != nil {
		return fmt.Errorf("the publisher's own announce: %w", err)
	}
	env.torrent = torrent{path: meta, pieceLen: mi.Info.PieceLength, meta: mi}
	seed, err := env.startSeed(ctx)
	if err != nil {
		return err
	}
	if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 2); err != nil {
		return fmt.Errorf("the libtorrent seed's announce: %w", err)
	}
	px, err := startTBProxy(ctx, env, pc.ws)
	if err != nil {
		return err
	}
	cold, err := proxiedFetch(ctx, env, px, url, pc.res.size)
	if err != nil {
		return err
	}
	done := time.Now()
	warm, err := proxiedFetch(ctx, env, px, url, pc.res.size)
	if err != nil {
		return fmt.Errorf("warm download: %w", err)
	}
	if cold.seedUp, err = seed.uploadedSince(ctx, done); err != nil {
		return err
	}
	pc.res.metaPub.samples = append(pc.res.metaPub.samples, fetchSample{ttfb: m.ttfb, total: m.total, seedUp: -1})
	pc.res.cold.samples = append(pc.res.cold.samples, cold)
	pc.res.warm.samples = append(pc.res.warm.samples, warm)
	return nil
}

// fromWebSeed is a cold download through a fresh tbproxy from nginx,
// which answers the negotiation with a torrent that has no tracker: the
// only source is the origin itself as a web seed.
func (pc *proxyCmp) fromWebSeed(ctx context.Context) (err error) {
	env, err := newRunEnv(pc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	url := pc.ng.url(seedPath + filepath.Base(pc.ws.content))
	m, err := curl(ctx, env, curlReq{url: url, accept: btType, want: -1})
	if err != nil {
		return fmt.Errorf("fetching the metainfo: %w", err)
	}
	mt, err := curl(ctx, env, curlReq{url: url, accept: btType, proxy: pc.tp.url(""), want: -1})
	if err != nil {
		return fmt.Errorf("fetching the metainfo through tinyproxy: %w", err)
	}
	mtb, err := metainfoThroughFresh(ctx, env, url, "tbproxy", func() (*server, error) { return startTBProxy(ctx, env, pc.ws) })
	if err != nil {
		return err
	}
	mm, err := metainfoThroughFresh(ctx, env, url, "minproxy", func() (*server, error) { return startMinproxy(ctx, env, pc.ws) })
	if err != nil {
		return err
	}
	px, err := startTBProxy(ctx, env, pc.ws)
	if err != nil {
		return err
	}
	s, err := proxiedFetch(ctx, env, px, url, pc.res.size)
	if err != nil {
		return err
	}
	pc.res.metaNginx.samples = append(pc.res.metaNginx.samples, fetchSample{ttfb: m.ttfb, total: m.total, seedUp: -1})
	pc.res.metaTiny.samples = append(pc.res.metaTiny.samples, fetchSample{ttfb: mt.ttfb, total: mt.total, seedUp: -1})
	pc.res.metaTB.samples = append(pc.res.metaTB.samples, fetchSample{ttfb: mtb.ttfb, total: mtb.total, seedUp: -1})
	pc.res.metaMin.samples = append(pc.res.metaMin.samples, fetchSample{ttfb: mm.ttfb, total: mm.total, seedUp: -1})
	pc.res.web.samples = append(pc.res.web.samples, s)
	return nil
}

// wanSpan is the part of the file a cold transform over the emulated
// path fetches: its first byte is the figure, and the whole file would
// only time the relay.
const wanSpan = 1 << 20

// fromWebSeedOverWAN is fromWebSeed's first byte over the emulated
// wide-area path to nginx: the metainfo fetched directly over it, then
// the file's first MiB through a fresh tbproxy whose only way to nginx,
// for the negotiation, the confirmation and the web seed, is the path.
func (pc *proxyCmp) fromWebSeedOverWAN(ctx context.Context) (err error) {
	env, err := newRunEnv(pc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	url := "http://" + hostPort(pc.wan.port()) + seedPath + filepath.Base(pc.ws.content)
	m, err := curl(ctx, env, curlReq{url: url, accept: btType, want: -1})
	if err != nil {
		return fmt.Errorf("fetching the metainfo over the emulated path: %w", err)
	}
	px, err := startTBProxy(ctx, env, pc.ws)
	if err != nil {
		return err
	}
	s, err := proxiedReq(ctx, env, px, curlReq{url: url, rng: fmt.Sprintf("0-%d", wanSpan-1), want: wanSpan})
	if err != nil {
		return err
	}
	pc.res.metaWAN.samples = append(pc.res.metaWAN.samples, fetchSample{ttfb: m.ttfb, total: m.total, seedUp: -1})
	pc.res.webWAN.samples = append(pc.res.webWAN.samples, s)
	return nil
}

// metainfoThroughFresh fetches the metainfo at url, asking for it by its
// type, through a proxy of its own that start starts (a tbproxy, or
// minproxy), stopped after: the proxy passes the answer through, so its
// first byte is what a fresh proxy adds to one origin round trip.
func metainfoThroughFresh(ctx context.Context, env *runEnv, url, name string, start func() (*server, error)) (curlResult, error) {
	px, err := start()
	if err != nil {
		return curlResult{}, err
	}
	defer px.proc.stop()
	r, err := curl(ctx, env, curlReq{url: url, accept: btType, proxy: px.url(""), want: -1})
	if err != nil {
		return curlResult{}, fmt.Errorf("fetching the metainfo through a fresh %s: %w", name, err)
	}
	return r, nil
}

// directFetch downloads url with curl, no proxy.
func directFetch(ctx context.Context, env *runEnv, url string, size int64) (fetchSample, error) {
	r, err := curl(ctx, env, curlReq{url: url, want: size})
	if err != nil {
		return fetchSample{}, err
	}
	return fetchSample{ttfb: r.ttfb, total: r.total, seedUp: -1}, nil
}

// proxiedFetch downloads url with curl through the proxy px, and takes
// the proxy's CPU time over the download and its peak RSS after it.
func proxiedFetch(ctx context.Context, env *runEnv, px *server, url string, size int64) (fetchSample, error) {
	return proxiedReq(ctx, env, px, curlReq{url: url, want: size})
}

// proxiedReq makes req with curl through the proxy px, and takes the
// proxy's CPU time over it and its peak RSS after it.
func proxiedReq(ctx context.Context, env *runEnv, px *server, req curlReq) (fetchSample, error) {
	cpu0, err := px.proc.cpuSoFar()
	if err != nil {
		return fetchSample{}, err
	}
	req.proxy = px.url("")
	r, err := curl(ctx, env, req)
	if err != nil {
		return fetchSample{}, fmt.Errorf("%w; %s's last output:\n%s", err, px.proc.name, px.proc.out)
	}
	px.proc.snapshot()
	cpu1, err := px.proc.cpuSoFar()
	if err != nil {
		return fetchSample{}, err
	}
	return fetchSample{ttfb: r.ttfb, total: r.total, proxyCPU: cpu1 - cpu0, proxyRSS: px.proc.hwm.Load(), seedUp: -1}, nil
}

// readTorrent parses a .torrent file: metainfo a publisher sent.
func readTorrent(path string) (*metainfo.MetaInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > 16<<20 {
		return nil, fmt.Errorf("the answer to the BitTorrent Accept (%d bytes) is not metainfo", st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	mi, err := metainfo.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("the answer to the BitTorrent Accept (%d bytes) is not metainfo: %w", len(data), err)
	}
	return mi, nil
}

// copyFile copies src to dst, making dst's directory.
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
