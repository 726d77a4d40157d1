//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// offloadResult is comparison 4: N proxies fetch one published file at
// once; how much does the origin serve?
type offloadResult struct {
	size int64
	rows []*offloadRow
}

// offloadRow is one N: the publisher fronted by tbproxy proxies, and
// nginx serving N plain curls.
type offloadRow struct {
	n      int
	tb, ng offloadSeries
}

type offloadSeries struct {
	samples []offloadSample
	tally
}

// offloadSample is one run with N clients.
type offloadSample struct {
	wall      time.Duration // from the first curl's start to the last one's end
	http      int64         // bytes the origin sent over HTTP, headers included
	peer      int64         // bytes the publisher sent to peers; 0 for nginx
	originCPU time.Duration // the publisher's CPU over the window; 0 for nginx
}

func (s *offloadSeries) figure(f func(offloadSample) float64) spread {
	var xs []float64
	for _, x := range s.samples {
		xs = append(xs, f(x))
	}
	return spreadOf(xs)
}

// last describes the latest run, for the progress log.
func (s *offloadSeries) last(size int64, origin bool) string {
	return s.state(func() string {
		x := s.samples[len(s.samples)-1]
		line := fmt.Sprintf("wall %.2f s, HTTP %.2f× the file", x.wall.Seconds(), float64(x.http)/float64(size))
		if origin {
			line += fmt.Sprintf(", BitTorrent %.2f×, publisher CPU %.2f s", float64(x.peer)/float64(size), x.originCPU.Seconds())
		}
		return line
	})
}

// offloadCmp is comparison 4 while it runs.
type offloadCmp struct {
	ws      *workspace
	size    int64
	ng      *server
	pubData string
}

// measureOffload runs comparison 4.
func measureOffload(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) (res *offloadResult, err error) {
	res = &offloadResult{size: cfg.offloadSize}
	for _, n := range cfg.offloadCounts {
		res.rows = append(res.rows, &offloadRow{n: n})
	}
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	oc := &offloadCmp{ws: ws, size: cfg.offloadSize, pubData: filepath.Join(env.dir, "publish-data")}
	if oc.ng, err = startNginx(ctx, env, ws, env.dir, false); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "bench: offload: hashing %s with tbproxy publish\n", formatBytes(cfg.offloadSize))
	if _, err := publishOnce(ctx, ws, oc.pubData, ws.offload); err != nil {
		return nil, err
	}
	for i := range cfg.runs {
		for _, r := range res.rows {
			limit := runTimeout(int64(r.n) * cfg.offloadSize)
			if err := r.tb.attempt(ctx, budget, i, limit, func(ctx context.Context) error { return oc.publisher(ctx, &r.tb, r.n) }); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: offload, run %d/%d, %d tbproxy: %s\n", i+1, cfg.runs, r.n, r.tb.last(cfg.offloadSize, true))
			if err := r.ng.attempt(ctx, budget, i, limit, func(ctx context.Context) error { return oc.nginx(ctx, &r.ng, r.n) }); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: offload, run %d/%d, %d curl from nginx: %s\n", i+1, cfg.runs, r.n, r.ng.last(cfg.offloadSize, false))
		}
	}
	return res, nil
}

// publisher measures n fresh tbproxy proxies fetching the file from a
// fresh publisher at once. The publisher is reached only through a
// counting relay, which it names as its public URL, so its HTTP bytes
// (metainfo, web seed ranges, tracker replies) are counted there; the
// bytes it sends to peers are its wchar over the window less those HTTP
// bytes and less what it logged (see bench/README.md).
func (oc *offloadCmp) publisher(ctx context.Context, into *offloadSeries, n int) (err error) {
	env, err := newRunEnv(oc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	port, err := freePort()
	if err != nil {
		return err
	}
	rl, err := newRelay(hostPort(port))
	if err != nil {
		return err
	}
	defer rl.close()
	pub, err := startPublisher(ctx, env, oc.ws, oc.pubData, port, rl.port())
	if err != nil {
		return err
	}
	url := pub.base + "/" + filepath.Base(oc.ws.offload)
	meta := filepath.Join(env.dir, "published.torrent")
	if _, err := curl(ctx, env, curlReq{url: url, accept: btType, out: meta, want: -1}); err != nil {
		return fmt.Errorf("fetching the metainfo: %w", err)
	}
	mi, err := readTorrent(meta)
	if err != nil {
		return err
	}
	if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 1); err != nil {
		return fmt.Errorf("the publisher's own announce: %w", err)
	}
	proxies := make([]*server, n)
	for i := range proxies {
		if proxies[i], err = startTBProxy(ctx, env, oc.ws); err != nil {
			return err
		}
	}

	logged0 := pub.proc.outBytes.Load()
	written0, err := pub.proc.written()
	if err != nil {
		return err
	}
	http0 := rl.served.Load()
	cpu0, err := pub.proc.cpuSoFar()
	if err != nil {
		return err
	}
	start := time.Now()
	curls := make([]*curlRun, n)
	for i, px := range proxies {
		if curls[i], err = startCurl(env, curlReq{url: url, proxy: px.url(""), want: oc.size}); err != nil {
			return err
		}
	}
	for i, c := range curls {
		if _, err := c.wait(ctx); err != nil {
			return fmt.Errorf("proxy %d of %d: %w; its last output:\n%s", i+1, n, err, proxies[i].proc.out)
		}
	}
	wall := time.Since(start)
	// Every proxy has the whole file now; what the publisher still sends
	// is answers to requests already in flight.
	written1, err := quietWrites(ctx, pub.proc, 250*time.Millisecond, 5*time.Second)
	if err != nil {
		return err
	}
	http := rl.served.Load() - http0
	logged := pub.proc.outBytes.Load() - logged0
	cpu1, err := pub.proc.cpuSoFar()
	if err != nil {
		return err
	}
	into.samples = append(into.samples, offloadSample{
		wall:      wall,
		http:      http,
		peer:      written1 - written0 - http - logged,
		originCPU: cpu1 - cpu0,
	})
	return nil
}

// nginx measures n curls fetching the file from nginx at once.
func (oc *offloadCmp) nginx(ctx context.Context, into *offloadSeries, n int) (err error) {
	env, err := newRunEnv(oc.ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	url := oc.ng.url(plainPath + filepath.Base(oc.ws.offload))
	start := time.Now()
	curls := make([]*curlRun, n)
	for i := range curls {
		if curls[i], err = startCurl(env, curlReq{url: url, want: oc.size}); err != nil {
			return err
		}
	}
	var served int64
	for _, c := range curls {
		r, err := c.wait(ctx)
		if err != nil {
			return err
		}
		served += r.size
	}
	into.samples = append(into.samples, offloadSample{wall: time.Since(start), http: served})
	return nil
}
