//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// targetMixed is issue #5's target for the mixed swarm: the engine's MB/s
// over the libtorrent leecher's on the same swarm, at least.
const targetMixed = 1.2

// targetWebOnly is issue #5's target with no peers: the engine's MB/s from
// the web seed alone over curl's from the same URL, at least.
const targetWebOnly = 0.8

// mixedResult is comparison 1b: the engine and the libtorrent leecher
// downloading from one libtorrent seed plus nginx as the torrent's web
// seed.
type mixedResult struct {
	size     int64
	pieceLen int64
	webPath  string // the url-list's path on each run's nginx
	rows     []*row // the engine in its default mode (the headline), the engine with web seeds always, libtorrent
	// webRows have no seed, only nginx: the engine (swarmget --web-only),
	// curl to a file, curl to /dev/null.
	webRows []*row
	// pairRows are the engine and curl to a file again, in pairs against
	// one nginx (see measurePaired).
	pairRows []*row
}

// measureMixed runs comparison 1b: every leecher cfg.runs times,
// interleaved, each download with a fresh nginx and a fresh seed. A
// leecher that fails is not run again.
func measureMixed(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) (*mixedResult, error) {
	// The largest piece length of comparison 1: 1 MiB, 256 KiB with --quick.
	pl := cfg.pieceLens[len(cfg.pieceLens)-1]
	t, err := ws.makeTorrent(ctx, pl)
	if err != nil {
		return nil, err
	}
	res := &mixedResult{size: cfg.size, pieceLen: pl, webPath: plainPath + filepath.Base(ws.content)}
	for _, l := range []leecher{swarmLeecher{webSeedMode: "sparing"}, swarmLeecher{webSeedMode: "always"}, ltLeecher{}} {
		res.rows = append(res.rows, &row{leecher: mixedLeecher{inner: l}})
	}
	for _, l := range []leecher{swarmLeecher{webOnly: true}, curlLeecher{toFile: true}, curlLeecher{}} {
		res.webRows = append(res.webRows, &row{leecher: mixedLeecher{inner: l}})
	}
	for i := range cfg.runs {
		for _, r := range append(slices.Clip(res.rows), res.webRows...) {
			profile := ""
			if sl, ok := r.leecher.(mixedLeecher).inner.(swarmLeecher); ok && cfg.profileDir != "" {
				mode := sl.webSeedMode
				if sl.webOnly {
					mode = "web-only"
				}
				profile = filepath.Join(cfg.profileDir, fmt.Sprintf("swarmget-mixed-%s-run%d.pprof", mode, i+1))
			}
			err := r.attempt(ctx, budget, i, 0, func(budget context.Context) error {
				s, err := runOne(budget, ws, t, r.leecher, runTimeout(cfg.size), profile)
				if err == nil {
					r.samples = append(r.samples, s)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: mixed swarm, run %d/%d, %s: %s\n", i+1, cfg.runs, r.leecher.name(), mixedLast(r, cfg.size))
		}
	}
	return res, measurePaired(ctx, budget, cfg, ws, t, res, log)
}

// measurePaired downloads from the web seed alone once more, in pairs
// back to back against one nginx that lives through the series: the
// engine, then curl into a file, cfg.runs times after a pair that warms
// up and is not counted. Each download then starts right after the
// other's clean-up, so both find the machine in the same state; in the
// interleaved series the engine follows libtorrent's teardown and curl
// follows the engine's (see bench/README.md on why that matters here).
func measurePaired(ctx, budget context.Context, cfg config, ws *workspace, t torrent, res *mixedResult, log io.Writer) (err error) {
	env, err := newRunEnv(ws, t)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	ng, err := startNginx(ctx, env, ws, env.dir, false)
	if err != nil {
		return err
	}
	// One torrent whose url-list is the shared nginx, for every pair.
	pt, err := withWebSeed(t, ng.url(plainPath+filepath.Base(ws.content)), filepath.Join(env.dir, "paired.torrent"))
	if err != nil {
		return err
	}
	for _, l := range []leecher{swarmLeecher{webOnly: true}, curlLeecher{toFile: true}} {
		res.pairRows = append(res.pairRows, &row{leecher: pairedLeecher{inner: l}})
	}
	for i := -1; i < cfg.runs; i++ {
		for _, r := range res.pairRows {
			err := r.attempt(ctx, budget, max(i, 0), 0, func(budget context.Context) error {
				s, err := runOne(budget, ws, pt, r.leecher, runTimeout(cfg.size), "")
				switch {
				case err != nil && i < 0:
					return fmt.Errorf("warming up: %w", err)
				case err == nil && i >= 0:
					r.samples = append(r.samples, s)
				}
				return err
			})
			if err != nil {
				return err
			}
			if i >= 0 {
				fmt.Fprintf(log, "bench: mixed swarm, pair %d/%d, %s: %s\n", i+1, cfg.runs, r.leecher.name(), r.last(cfg.size))
			}
		}
	}
	return nil
}

// pairedLeecher is inner in measurePaired's series, whose torrent names
// the shared nginx as its web seed: no seed is started for it.
type pairedLeecher struct{ inner leecher }

func (p pairedLeecher) name() string       { return p.inner.name() + ", paired" }
func (p pairedLeecher) firstLabel() string { return p.inner.firstLabel() }
func (pairedLeecher) seedless() bool       { return true }

func (p pairedLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	return p.inner.download(ctx, env)
}

// mixedLast describes a row's latest run, with what nginx sent.
func mixedLast(r *row, size int64) string {
	line := r.last(size)
	if n := len(r.samples); n > 0 && len(r.errs) == 0 && r.skipped == 0 {
		if w := r.samples[n-1].web; w != nil {
			line += fmt.Sprintf(", web seed %.3f of the file in %d request(s)", float64(w.body)/float64(size), w.requests)
		}
	}
	return line
}

// mixedLeecher runs inner on the mixed swarm: before the seed and the
// leecher it starts a fresh nginx, and gives both a torrent whose url-list
// is that nginx's URL of the content; after the leecher has ended it stops
// nginx and adds up what nginx sent.
type mixedLeecher struct {
	inner leecher
}

func (m mixedLeecher) name() string       { return m.inner.name() }
func (m mixedLeecher) firstLabel() string { return m.inner.firstLabel() }
func (m mixedLeecher) seedless() bool {
	s, ok := m.inner.(seedless)
	return ok && s.seedless()
}

// curlLeecher is curl fetching the torrent's web seed URL (its url-list's
// first entry) plainly: the reference for a download from the web seed
// alone. Its times are curl's own (time_starttransfer, time_total).
type curlLeecher struct {
	toFile bool // -o a file in the run's directory, as a download lands; else /dev/null
}

func (l curlLeecher) name() string {
	if l.toFile {
		return "curl, to a file"
	}
	return "curl, to /dev/null"
}

func (curlLeecher) firstLabel() string { return "first byte of the response" }
func (curlLeecher) seedless() bool     { return true }

func (l curlLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	m := env.torrent.meta
	if m == nil || len(m.URLList) == 0 {
		return outcome{}, errors.New("curl: the torrent names no web seed")
	}
	req := curlReq{url: m.URLList[0], want: m.Info.TotalLength}
	if l.toFile {
		req.out = filepath.Join(env.dir, "curl.out")
	}
	zero := time.Now()
	c, err := startCurl(env, req)
	if err != nil {
		return outcome{}, err
	}
	res, err := c.wait(ctx)
	if err != nil {
		return outcome{}, err
	}
	marks := marks{zero: zero, first: zero.Add(res.ttfb), done: zero.Add(res.total)}
	return outcome{proc: c.p, marks: marks, wasted: -1}, nil
}

func (m mixedLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	ng, err := startNginx(ctx, env, env.ws, env.dir, true)
	if err != nil {
		return outcome{}, err
	}
	url := ng.url(plainPath + filepath.Base(env.ws.content))
	if env.torrent, err = withWebSeed(env.torrent, url, filepath.Join(env.dir, "mixed.torrent")); err != nil {
		return outcome{}, err
	}
	o, err := m.inner.download(ctx, env)
	if err != nil {
		return o, err
	}
	// The leecher has ended, so its connections to nginx are closed.
	w, err := ng.readAccessLog()
	if err != nil {
		return o, err
	}
	o.web = &w
	return o, nil
}

// withWebSeed writes a copy of t to path whose url-list is url alone. The
// info dictionary, and so the info-hash, stay t's.
func withWebSeed(t torrent, url, path string) (torrent, error) {
	if t.meta == nil {
		return torrent{}, errors.New("the torrent has no metainfo")
	}
	m := *t.meta
	m.URLList = []string{url}
	data, err := m.Marshal()
	if err != nil {
		return torrent{}, err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return torrent{}, err
	}
	return torrent{path: path, pieceLen: t.pieceLen, meta: &m}, nil
}

// webShare is the share of the file the web seed sent in each run:
// nginx's body bytes ÷ size.
func (r *row) webShare(size int64) spread {
	return r.figure(func(s sample) (float64, bool) {
		if s.web == nil {
			return 0, false
		}
		return float64(s.web.body) / float64(size), true
	})
}

// renderMixed writes comparison 1b.
func renderMixed(b *bytes.Buffer, cfg config, res *mixedResult) {
	fmt.Fprintf(b, "## Comparison 1b: mixed swarm (issue #5)\n\n")
	fmt.Fprintf(b, "A %s random file in %s pieces from one python3-libtorrent seed (seed_mode, no upload limit) "+
		"and nginx as the torrent's web seed (its `url-list` is `http://127.0.0.1:PORT%s`), "+
		"a fresh nginx and a fresh seed for every download. Each leecher dials the seed and finds the web seed in the torrent. "+
		"%d run(s) per leecher.\n\n", formatBytes(res.size), formatBytes(res.pieceLen), res.webPath, cfg.runs)
	cols := append(append([]string{}, leecherColumns...), "web seed ÷ file", "web seed requests")
	tableRow(b, cols)
	tableRule(b, len(cols))
	for _, r := range res.rows {
		cells := leecherCells(r, res.size)
		reqs := r.figure(func(s sample) (float64, bool) {
			if s.web == nil {
				return 0, false
			}
			return float64(s.web.requests), true
		})
		tableRow(b, append(cells, r.webShare(res.size).format("%.3f"), reqs.format("%.0f")))
	}
	renderFirstLabels(b, res.rows)
	fmt.Fprintf(b, "Web seed ÷ file: the body bytes nginx sent in the run (`$body_bytes_sent` summed over its access log) ÷ the file size.\n\n")
	eng, always, lt := res.rows[0], res.rows[1], res.rows[2]
	fmt.Fprintf(b, "| target (medians) | measured | target | met |\n|---|---|---|---|\n")
	// libtorrent takes most of the file from the web seed; the engine's
	// setting that does the same is "always". The default spares the
	// origin and is reported without a target.
	ratioRow(b, "mixed swarm: engine (web seeds always) ÷ libtorrent leecher", always.throughput(res.size), lt.throughput(res.size),
		func(x float64) bool { return x >= targetMixed }, fmt.Sprintf("≥ %.1f×", targetMixed))
	ratioRow(b, "engine (default: web seeds rescue only) ÷ libtorrent leecher (no target)", eng.throughput(res.size), lt.throughput(res.size), nil, "—")
	ratioRow(b, "engine (default) ÷ libtorrent leecher after first data (no target)", eng.afterFirst(res.size), lt.afterFirst(res.size), nil, "—")
	wasted := spreadOf(nil)
	for _, r := range res.rows[:2] {
		w := r.figure(func(s sample) (float64, bool) { return float64(s.wasted), s.wasted >= 0 })
		if w.n > 0 && (wasted.n == 0 || w.max > wasted.max) {
			wasted = w
		}
	}
	if wasted.n > 0 {
		fmt.Fprintf(b, "\nEngine bytes wasted (received but discarded), max over runs and modes: %.0f.\n", wasted.max)
	}
	fmt.Fprintln(b)
	renderWebOnly(b, res)
	var rows []named
	for _, r := range slices.Concat(res.rows, res.webRows, res.pairRows) {
		rows = append(rows, named{r.leecher.name(), &r.tally})
	}
	renderTallies(b, rows)
}

// renderWebOnly writes the web-seed-only part of comparison 1b.
func renderWebOnly(b *bytes.Buffer, res *mixedResult) {
	if len(res.webRows) < 3 {
		return
	}
	fmt.Fprintf(b, "### No peers: the web seed alone\n\n"+
		"The same torrent and a fresh nginx, but no seed: the engine downloads from the `url-list` alone (`swarmget --web-only`, "+
		"pieces verified and written to its download directory), against curl fetching the same URL, "+
		"into a file in the same directory (the same work but the hashing) and into /dev/null. "+
		"curl's times are its own `time_starttransfer` and `time_total`.\n\n")
	cols := append(append([]string{}, leecherColumns...), "web seed ÷ file")
	tableRow(b, cols)
	tableRule(b, len(cols))
	for _, r := range res.webRows {
		tableRow(b, append(leecherCells(r, res.size), r.webShare(res.size).format("%.3f")))
	}
	renderFirstLabels(b, res.webRows)
	eng, file, null := res.webRows[0], res.webRows[1], res.webRows[2]
	fmt.Fprintf(b, "| target (medians) | measured | target | met |\n|---|---|---|---|\n")
	ratioRow(b, "web seed only: engine ÷ curl to a file", eng.throughput(res.size), file.throughput(res.size),
		func(x float64) bool { return x >= targetWebOnly }, fmt.Sprintf("≥ %.1f×", targetWebOnly))
	ratioRow(b, "web seed only: engine ÷ curl to /dev/null (no target)", eng.throughput(res.size), null.throughput(res.size), nil, "—")
	fmt.Fprintln(b)
	if len(res.pairRows) < 2 {
		return
	}
	fmt.Fprintf(b, "In pairs, back to back against one nginx that lives through the series: the engine, then curl into a file, "+
		"after a first pair that warms up and is not counted. Each download starts right after the other's clean-up "+
		"(above, the engine follows libtorrent's teardown and curl follows the engine's).\n\n")
	tableRow(b, leecherColumns)
	tableRule(b, len(leecherColumns))
	for _, r := range res.pairRows {
		tableRow(b, leecherCells(r, res.size))
	}
	fmt.Fprintln(b)
	fmt.Fprintf(b, "| ratio (medians) | measured | target | met |\n|---|---|---|---|\n")
	ratioRow(b, "web seed only, paired: engine ÷ curl to a file (no target)", res.pairRows[0].throughput(res.size), res.pairRows[1].throughput(res.size), nil, "—")
	fmt.Fprintln(b)
}
