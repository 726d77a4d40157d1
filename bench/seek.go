//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
)

// seekSpan is the length of each Range request of comparison 3.
const seekSpan = 64 << 10

// seekSeed fixes comparison 3's offsets, so that every invocation on a
// file of the same size asks for the same ranges.
const seekSeed = 9

// seekResult is comparison 3: the first byte of Range requests at random
// offsets, through a fresh tbproxy each, against nginx directly.
type seekResult struct {
	size    int64
	offsets []int64
	tb, ng  *fetchRow
}

// seekOffsets draws n offsets in [0, size-seekSpan] from a fixed seed.
func seekOffsets(size int64, n int) []int64 {
	r := rand.New(rand.NewPCG(seekSeed, uint64(size)))
	out := make([]int64, n)
	for i := range out {
		out[i] = r.Int64N(size - seekSpan + 1)
	}
	return out
}

// measureSeek runs comparison 3. One publisher and one libtorrent seed
// serve the whole comparison; each offset gets a fresh tbproxy with an
// empty data directory, so no piece is cached and the proxy knows
// nothing of the torrent yet.
func measureSeek(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) (res *seekResult, err error) {
	res = &seekResult{
		size:    cfg.size,
		offsets: seekOffsets(cfg.size, cfg.seekCount),
		tb:      &fetchRow{name: "tbproxy, cold (fresh proxy per offset), publisher + libtorrent seed", proxied: true},
		ng:      &fetchRow{name: "nginx direct"},
	}
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	pubData := filepath.Join(env.dir, "publish-data")
	fmt.Fprintf(log, "bench: seek: hashing %s with tbproxy publish\n", formatBytes(cfg.size))
	if _, err := publishOnce(ctx, ws, pubData, ws.content); err != nil {
		return nil, err
	}
	ng, err := startNginx(ctx, env, ws, env.dir, false)
	if err != nil {
		return nil, err
	}
	pub, err := startPublisher(ctx, env, ws, pubData, 0, 0)
	if err != nil {
		return nil, err
	}
	url := pub.url("/" + filepath.Base(ws.content))
	meta := filepath.Join(env.dir, "published.torrent")
	if _, err := curl(ctx, env, curlReq{url: url, accept: btType, out: meta, want: -1}); err != nil {
		return nil, fmt.Errorf("fetching the metainfo: %w", err)
	}
	mi, err := readTorrent(meta)
	if err != nil {
		return nil, err
	}
	if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 1); err != nil {
		return nil, fmt.Errorf("the publisher's own announce: %w", err)
	}
	env.torrent = torrent{path: meta, pieceLen: mi.Info.PieceLength, meta: mi}
	if _, err := env.startSeed(ctx); err != nil {
		return nil, err
	}
	if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 2); err != nil {
		return nil, fmt.Errorf("the libtorrent seed's announce: %w", err)
	}
	plain := ng.url(plainPath + filepath.Base(ws.content))
	limit := runTimeout(64 << 20)
	for i, off := range res.offsets {
		rng := fmt.Sprintf("%d-%d", off, off+seekSpan-1)
		if err := res.tb.attempt(ctx, budget, i, limit, func(ctx context.Context) error {
			return seekProxied(ctx, ws, res.tb, url, rng)
		}); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "bench: seek, offset %d/%d (%d), %s: %s\n", i+1, len(res.offsets), off, res.tb.name, res.tb.last(0))
		if err := res.ng.attempt(ctx, budget, i, limit, func(ctx context.Context) error {
			r, err := curl(ctx, env, curlReq{url: plain, want: seekSpan, rng: rng})
			if err == nil {
				res.ng.samples = append(res.ng.samples, fetchSample{ttfb: r.ttfb, total: r.total, seedUp: -1})
			}
			return err
		}); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "bench: seek, offset %d/%d (%d), %s: %s\n", i+1, len(res.offsets), off, res.ng.name, res.ng.last(0))
	}
	return res, nil
}

// seekProxied fetches one range of url through a fresh tbproxy.
func seekProxied(ctx context.Context, ws *workspace, r *fetchRow, url, rng string) (err error) {
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	px, err := startTBProxy(ctx, env, ws)
	if err != nil {
		return err
	}
	cpu0, err := px.proc.cpuSoFar()
	if err != nil {
		return err
	}
	c, err := curl(ctx, env, curlReq{url: url, proxy: px.url(""), want: seekSpan, rng: rng})
	if err != nil {
		return fmt.Errorf("%w; %s's last output:\n%s", err, px.proc.name, px.proc.out)
	}
	px.proc.snapshot()
	cpu1, err := px.proc.cpuSoFar()
	if err != nil {
		return err
	}
	r.samples = append(r.samples, fetchSample{ttfb: c.ttfb, total: c.total, proxyCPU: cpu1 - cpu0, proxyRSS: px.proc.hwm.Load(), seedUp: -1})
	return nil
}

// renderSeek writes comparison 3.
func renderSeek(b *bytes.Buffer, cfg config, r *seekResult) {
	fmt.Fprintf(b, "## Comparison 3: seek latency\n\n")
	strs := make([]string, len(r.offsets))
	for i, o := range r.offsets {
		strs[i] = fmt.Sprint(o)
	}
	fmt.Fprintf(b, "`curl -r OFF-OFF+65535` of a %s random file published by `tbproxy publish` (with a python3-libtorrent seed "+
		"of its torrent announcing to its tracker), at %d offsets drawn from a fixed seed (%s): through a fresh `tbproxy run` "+
		"with an empty data directory for each offset (so its first byte includes the negotiation, adding the torrent, "+
		"finding peers and the pieces under the range), and from nginx directly (`/plain/`). First byte is curl's "+
		"`time_starttransfer`; median (min–max) over the offsets.\n\n", formatBytes(r.size), len(r.offsets), strings.Join(strs, ", "))
	fmt.Fprintf(b, "| case | offsets | first byte (ms) | total (ms) | proxy CPU (s) |\n|---|---|---|---|---|\n")
	for _, row := range []*fetchRow{r.tb, r.ng} {
		cpu := "—"
		if row.proxied {
			cpu = row.figure(func(s fetchSample) (float64, bool) { return s.proxyCPU.Seconds(), true }).format("%.2f")
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s |\n", row.name, len(row.samples), row.ttfbMS().format("%.1f"),
			row.figure(func(s fetchSample) (float64, bool) { return float64(s.total) / 1e6, true }).format("%.1f"), cpu)
	}
	fmt.Fprintf(b, "\n| ratio (medians) | measured |\n|---|---|\n| first byte, tbproxy ÷ nginx direct | %s |\n\n",
		ratio(r.tb.ttfbMS(), r.ng.ttfbMS()))
	renderTallies(b, []named{{r.tb.name, &r.tb.tally}, {r.ng.name, &r.ng.tally}})
}
