//go:build linux

// Command bench compares tbproxy's BitTorrent engine with established
// clients on 127.0.0.1 and writes bench/RESULTS.md. See bench/README.md.
//
// Usage:
//
//	go run ./bench [--quick] [--runs N] [--size 1GiB] [--out bench/RESULTS.md]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the bench's command line.
type config struct {
	quick      bool
	runs       int
	size       int64
	pieceLens  []int64
	out        string        // "" means bench/RESULTS.md (RESULTS-quick.md with --quick) in the module
	budget     time.Duration // the measurements stop starting runs after this long
	profileDir string        // "" for none; else swarmget writes a CPU profile per run here
	args       []string      // as given, for the report
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if interrupted {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	cfg := config{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&cfg.quick, "quick", false, "64 MiB, one run, 256 KiB pieces only: a smoke test for CI")
	fs.IntVar(&cfg.runs, "runs", 3, "downloads per leecher and piece size; the report gives the median")
	size := fs.String("size", "1GiB", "size of the random file (B, KiB, MiB, GiB, or KB, MB, GB)")
	fs.StringVar(&cfg.out, "out", "", "results file (default bench/RESULTS.md, or bench/RESULTS-quick.md with --quick)")
	fs.DurationVar(&cfg.budget, "budget", 18*time.Minute, "start no download after this long (--quick: 150s)")
	fs.StringVar(&cfg.profileDir, "cpuprofile-dir", "", "write a CPU profile of every swarmget run into this directory")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	if cfg.size, err = parseSize(*size); err != nil {
		return cfg, err
	}
	cfg.pieceLens = []int64{256 << 10, 1 << 20}
	if cfg.quick {
		cfg.pieceLens = cfg.pieceLens[:1]
		if !set["size"] {
			cfg.size = 64 << 20
		}
		if !set["runs"] {
			cfg.runs = 1
		}
		if !set["budget"] {
			cfg.budget = 150 * time.Second
		}
	}
	switch {
	case cfg.runs < 1:
		return cfg, errors.New("--runs must be at least 1")
	case cfg.size < 1<<20:
		return cfg, errors.New("--size must be at least 1 MiB")
	}
	return cfg, nil
}

// parseSize reads "1GiB", "64MiB", "500MB", "1048576".
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<42)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// run installs what is missing, prepares the content, measures and
// reports. Everything it starts is stopped, and its files removed, before
// it returns.
func run(ctx context.Context, cfg config, stdout, log io.Writer) (err error) {
	if err := ensureTools(ctx, log); err != nil {
		return err
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	mach, err := describeMachine(ctx, root)
	if err != nil {
		return err
	}
	ws, err := newWorkspace(ctx, log, root, cfg.size)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ws.remove()) }()
	res, err := measureAll(ctx, cfg, ws, log)
	if err != nil {
		return err
	}
	text := renderReport(cfg, mach, res)
	out := cfg.out
	if out == "" {
		out = filepath.Join(root, "bench", "RESULTS.md")
		if cfg.quick {
			out = filepath.Join(root, "bench", "RESULTS-quick.md")
		}
	}
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "bench: wrote %s\n\n", out)
	_, err = io.WriteString(stdout, text)
	return err
}

// measureAll runs every leecher cfg.runs times for each piece length,
// interleaving the leechers so that drift hits all alike. A leecher that
// fails is not run again for that piece length. Once the budget is
// spent, the remaining downloads are skipped and reported as such; an
// interrupt (ctx) aborts.
func measureAll(ctx context.Context, cfg config, ws *workspace, log io.Writer) ([]comparison, error) {
	budget, cancel := context.WithTimeout(ctx, cfg.budget)
	defer cancel()
	var res []comparison
	for _, pl := range cfg.pieceLens {
		t, err := ws.makeTorrent(ctx, pl)
		if err != nil {
			return nil, err
		}
		c := comparison{pieceLen: pl, size: cfg.size}
		for _, l := range leechers() {
			c.rows = append(c.rows, &row{leecher: l})
		}
		for i := range cfg.runs {
			for _, r := range c.rows {
				if err := measureRow(ctx, budget, cfg, ws, t, r, i); err != nil {
					return nil, err
				}
				fmt.Fprintf(log, "bench: %s pieces, run %d/%d, %s: %s\n", formatBytes(pl), i+1, cfg.runs, r.leecher.name(), r.last(cfg.size))
			}
		}
		res = append(res, c)
	}
	return res, nil
}

// measureRow runs the i-th download of one leecher into r.
func measureRow(ctx, budget context.Context, cfg config, ws *workspace, t torrent, r *row, i int) error {
	switch {
	case len(r.errs) > 0:
		r.skipped++
		return nil
	case budget.Err() != nil:
		r.skipped++
		r.budgetHit = true
		return nil
	}
	profile := ""
	if cfg.profileDir != "" {
		profile = filepath.Join(cfg.profileDir, fmt.Sprintf("swarmget-%s-run%d.pprof", formatBytes(t.pieceLen), i+1))
	}
	s, err := runOne(budget, ws, t, r.leecher, runTimeout(cfg.size), profile)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		if budget.Err() != nil {
			r.budgetHit = true
		}
		r.errs = append(r.errs, fmt.Sprintf("run %d: %v", i+1, err))
		return nil
	}
	r.samples = append(r.samples, s)
	return nil
}

// runTimeout bounds one download: generous for a slow client, but short
// enough that a stalled one cannot blow the whole bench's time.
func runTimeout(size int64) time.Duration {
	const floor = 5e6 // bytes per second
	return 45*time.Second + time.Duration(float64(size)/floor*float64(time.Second))
}
