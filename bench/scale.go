//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// scaleCase is one load of comparison 6: clients curls through one
// tbproxy, spread round-robin over torrents files of size bytes.
type scaleCase struct {
	clients, torrents int
	size              int64
	dir               string // the files, scale-N.bin; set by the workspace
}

// scaleSample is one run of a scale case.
type scaleSample struct {
	wall      time.Duration // first curl's start to the last one's end
	rss       int64         // the proxy's VmHWM at the end, bytes
	anon      int64         // the highest RssAnon sampled, bytes
	cpu       time.Duration // the proxy's CPU over its whole life
	identical int           // downloads whose SHA-256 matched the file
}

type scaleRow struct {
	c       scaleCase
	samples []scaleSample
	tally
}

type scaleResult struct{ rows []*scaleRow }

func (r *scaleRow) figure(f func(scaleSample) float64) spread {
	var xs []float64
	for _, s := range r.samples {
		xs = append(xs, f(s))
	}
	return spreadOf(xs)
}

// targetScaleRSS is issue #6's peak RSS target in MiB.
const targetScaleRSS = 200

// scaleName names file i of a case.
func scaleName(i int) string { return fmt.Sprintf("scale-%d.bin", i) }

// writeScaleFiles writes the random files of c into c.dir.
func writeScaleFiles(c scaleCase) error {
	for i := range c.torrents {
		if err := writeRandomFile(filepath.Join(c.dir, scaleName(i)), c.size); err != nil {
			return err
		}
	}
	return nil
}

// measureScale runs comparison 6: for each case, its files hashed once by
// tbproxy publish, then per run a fresh publisher and one fresh tbproxy,
// and all the curls started together.
func measureScale(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) (res *scaleResult, err error) {
	res = &scaleResult{}
	for _, c := range ws.scale {
		res.rows = append(res.rows, &scaleRow{c: c})
	}
	for _, r := range res.rows {
		c := r.c
		env, err := newRunEnv(ws, torrent{})
		if err != nil {
			return nil, err
		}
		pubData := filepath.Join(env.dir, "publish-data")
		fmt.Fprintf(log, "bench: scale: hashing %d × %s with tbproxy publish\n", c.torrents, formatBytes(c.size))
		sums := make([][sha256.Size]byte, c.torrents)
		for i := range c.torrents {
			file := filepath.Join(c.dir, scaleName(i))
			if _, err := publishOnce(ctx, ws, pubData, file); err != nil {
				return nil, errors.Join(err, env.close())
			}
			if sums[i], err = fileSum(file); err != nil {
				return nil, errors.Join(err, env.close())
			}
		}
		for i := range cfg.runs {
			limit := runTimeout(int64(c.clients) * c.size)
			if err := r.attempt(ctx, budget, i, limit, func(ctx context.Context) error { return scaleRun(ctx, ws, r, pubData, sums) }); err != nil {
				return nil, errors.Join(err, env.close())
			}
			fmt.Fprintf(log, "bench: scale, run %d/%d, %d clients × %d torrents of %s: %s\n", i+1, cfg.runs, c.clients, c.torrents, formatBytes(c.size), r.last())
		}
		if err := env.close(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (r *scaleRow) last() string {
	return r.state(func() string {
		s := r.samples[len(r.samples)-1]
		return fmt.Sprintf("wall %.2f s, proxy peak RSS %.0f MiB (anon %.0f), proxy CPU %.2f s, %d/%d identical",
			s.wall.Seconds(), mib(s.rss), mib(s.anon), s.cpu.Seconds(), s.identical, r.c.clients)
	})
}

// scaleRun is one run of a case: a fresh publisher of c.dir, one fresh
// tbproxy, and c.clients curls through it, client i fetching file
// i mod c.torrents into a file that is then checked and removed.
func scaleRun(ctx context.Context, ws *workspace, r *scaleRow, pubData string, sums [][sha256.Size]byte) (err error) {
	c := r.c
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	pub, err := startPublisherIn(ctx, env, ws, c.dir, pubData, 0, 0)
	if err != nil {
		return err
	}
	for i := range c.torrents {
		url := pub.url("/" + scaleName(i))
		meta := filepath.Join(env.dir, fmt.Sprintf("meta-%d.torrent", i))
		if _, err := curl(ctx, env, curlReq{url: url, accept: btType, out: meta, want: -1}); err != nil {
			return fmt.Errorf("fetching the metainfo of %s: %w", scaleName(i), err)
		}
		mi, err := readTorrent(meta)
		if err != nil {
			return err
		}
		if err := waitSeeds(ctx, pub.announce(), mi.InfoHash, 1); err != nil {
			return fmt.Errorf("the publisher's own announce of %s: %w", scaleName(i), err)
		}
	}
	px, err := startTBProxy(ctx, env, ws)
	if err != nil {
		return err
	}
	start := time.Now()
	curls := make([]*curlRun, c.clients)
	outs := make([]string, c.clients)
	for i := range curls {
		outs[i] = filepath.Join(env.dir, fmt.Sprintf("client-%d.out", i))
		req := curlReq{url: pub.url("/" + scaleName(i%c.torrents)), proxy: px.url(""), out: outs[i], want: c.size}
		if curls[i], err = startCurl(env, req); err != nil {
			return err
		}
	}
	var errs []error
	for i, cr := range curls {
		if _, err := cr.wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("client %d: %w", i, err))
		}
	}
	wall := time.Since(start)
	px.proc.snapshot()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w; %s's last output:\n%s", err, px.proc.name, px.proc.out)
	}
	cpu, err := px.proc.cpuSoFar()
	if err != nil {
		return err
	}
	s := scaleSample{wall: wall, rss: px.proc.hwm.Load(), anon: px.proc.anonPeak.Load(), cpu: cpu}
	for i, out := range outs {
		sum, err := fileSum(out)
		if err != nil {
			return err
		}
		if sum == sums[i%c.torrents] {
			s.identical++
		}
		if err := os.Remove(out); err != nil {
			return err
		}
	}
	r.samples = append(r.samples, s)
	if s.identical != c.clients {
		return fmt.Errorf("%d of %d downloads differ from their file", c.clients-s.identical, c.clients)
	}
	return nil
}

// fileSum is the SHA-256 of a file.
func fileSum(path string) (sum [sha256.Size]byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// renderScale writes comparison 6.
func renderScale(b *bytes.Buffer, cfg config, r *scaleResult) {
	fmt.Fprintf(b, "## Comparison 6: scale\n\n")
	fmt.Fprintf(b, "One fresh `tbproxy run` while N curls (`curl -x`) download at once, client i fetching file i mod T of T random files "+
		"published by one fresh `tbproxy publish` (the only source: its engine and its web seed). Peak RSS is the proxy's `VmHWM` "+
		"after the last curl; CPU is its user + system time over its life (`/proc/PID/stat`); wall time from the first curl's start "+
		"to the last one's end; every download's SHA-256 is checked against its file. %d run(s).\n\n", cfg.runs)
	fmt.Fprintf(b, "| clients × torrents × size | runs | wall (s) | proxy peak RSS (MiB) | proxy peak anon RSS (MiB) | proxy CPU (s) | byte-identical |\n|---|---|---|---|---|---|---|\n")
	var rows []named
	for _, row := range r.rows {
		ident := "—"
		if len(row.samples) > 0 {
			ident = fmt.Sprintf("%d/%d", row.samples[len(row.samples)-1].identical, row.c.clients)
		}
		fmt.Fprintf(b, "| %d × %d × %s | %d | %s | %s | %s | %s | %s |\n", row.c.clients, row.c.torrents, formatBytes(row.c.size),
			len(row.samples), row.figure(func(s scaleSample) float64 { return s.wall.Seconds() }).format("%.2f"),
			row.figure(func(s scaleSample) float64 { return mib(s.rss) }).format("%.0f"),
			row.figure(func(s scaleSample) float64 { return mib(s.anon) }).format("%.0f"),
			row.figure(func(s scaleSample) float64 { return s.cpu.Seconds() }).format("%.2f"), ident)
		rows = append(rows, named{fmt.Sprintf("%d × %d × %s", row.c.clients, row.c.torrents, formatBytes(row.c.size)), &row.tally})
	}
	for _, row := range r.rows {
		if row.c.clients == 8 && row.c.size == 1<<30 {
			rss := row.figure(func(s scaleSample) float64 { return mib(s.rss) })
			met := "—"
			if rss.n > 0 {
				met = yesNo(rss.med <= targetScaleRSS)
			}
			fmt.Fprintf(b, "\n| target (median) | measured | target | met |\n|---|---|---|---|\n")
			fmt.Fprintf(b, "| proxy peak RSS, 8 clients streaming 1 GiB files | %s MiB | ≤ %d MiB | %s |\n", rss.format("%.0f"), targetScaleRSS, met)
		}
	}
	fmt.Fprintf(b, "\nIssue #6's target is a peak RSS ≤ %d MiB while 8 clients stream 1 GiB files: the 8 × 8 × 1 GiB row (full runs only).\n\n", targetScaleRSS)
	renderTallies(b, rows)
}
