//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// passResult is comparison 5: plain HTTP, which tbproxy passes through,
// against tinyproxy and against nginx directly.
type passResult struct {
	size  int64
	small []*wrkRow   // wrk on the small page: nginx direct, tinyproxy, tbproxy
	large []*fetchRow // curl of the large plain file, the same three
}

// wrkRow is one way to reach the small page, and its wrk runs.
type wrkRow struct {
	name    string
	samples []wrkResult
	tally
}

func (r *wrkRow) figure(f func(wrkResult) float64) spread {
	var xs []float64
	for _, s := range r.samples {
		xs = append(xs, f(s))
	}
	return spreadOf(xs)
}

func (r *wrkRow) rate() spread { return r.figure(wrkResult.rate) }

// last describes the latest run, for the progress log.
func (r *wrkRow) last() string {
	return r.state(func() string {
		s := r.samples[len(r.samples)-1]
		return fmt.Sprintf("%.0f req/s, p50 %.2f ms, p99 %.2f ms, %d socket errors", s.rate(), float64(s.P50US)/1e3, float64(s.P99US)/1e3, s.socketErrors())
	})
}

// measurePassthrough runs comparison 5 against one nginx, one tinyproxy
// and one tbproxy, each up for the whole comparison.
func measurePassthrough(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) (res *passResult, err error) {
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	ng, err := startNginx(ctx, env, ws, env.dir, false)
	if err != nil {
		return nil, err
	}
	tp, err := startTinyproxy(ctx, env)
	if err != nil {
		return nil, err
	}
	px, err := startTBProxy(ctx, env, ws)
	if err != nil {
		return nil, err
	}
	vias := []*server{nil, tp, px}
	res = &passResult{size: cfg.size}
	for _, name := range []string{"nginx direct", "tinyproxy", "tbproxy"} {
		res.small = append(res.small, &wrkRow{name: name})
		res.large = append(res.large, &fetchRow{name: name, proxied: name != "nginx direct"})
	}
	pageURL := ng.url("/page.html")
	fileURL := ng.url(plainPath + filepath.Base(ws.content))
	for i := range cfg.runs {
		for j, via := range vias {
			r := res.small[j]
			err := r.attempt(ctx, budget, i, cfg.wrkDuration+startTimeout, func(ctx context.Context) error {
				// A wrong answer at full speed would look like a fast proxy:
				// check the page first, then load it.
				req := curlReq{url: pageURL, want: pageSize}
				port := ng.port
				if via != nil {
					req.proxy, port = via.url(""), via.port
				}
				if _, err := curl(ctx, env, req); err != nil {
					return err
				}
				s, err := runWrk(ctx, env, ws, port, pageURL, cfg.wrkDuration)
				if err == nil {
					r.samples = append(r.samples, s)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: passthrough, run %d/%d, %s page with wrk: %s\n", i+1, cfg.runs, r.name, r.last())
		}
		for j, via := range vias {
			r := res.large[j]
			err := r.attempt(ctx, budget, i, runTimeout(cfg.size), func(ctx context.Context) error {
				var s fetchSample
				var err error
				if via == nil {
					s, err = directFetch(ctx, env, fileURL, cfg.size)
				} else {
					s, err = proxiedFetch(ctx, env, via, fileURL, cfg.size)
				}
				if err == nil {
					r.samples = append(r.samples, s)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "bench: passthrough, run %d/%d, %s %s file with curl: %s\n", i+1, cfg.runs, r.name, formatBytes(cfg.size), r.last(cfg.size))
		}
	}
	return res, nil
}
