//go:build linux

// Command bench compares tbproxy's BitTorrent engine with established
// clients, and tbproxy as a proxy and publisher with nginx and tinyproxy,
// on 127.0.0.1, and writes bench/RESULTS.md. See bench/README.md.
//
// Usage:
//
//	go run ./bench [--quick] [--only swarm,mixed,proxy,seek,offload,passthrough,scale] [--runs N] [--size 1GiB] [--out bench/RESULTS.md]
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The comparisons, by the names --only takes, in the order they run.
const (
	cmpSwarm       = "swarm"       // 1: the engine against other clients
	cmpMixed       = "mixed"       // 1b: the engine against libtorrent on a libtorrent seed plus an nginx web seed
	cmpProxy       = "proxy"       // 2: a transparent download through the proxy
	cmpSeek        = "seek"        // 3: Range requests at random offsets
	cmpOffload     = "offload"     // 4: what the publisher serves to N proxies
	cmpPassthrough = "passthrough" // 5: plain HTTP through the proxy
	cmpScale       = "scale"       // 6: many clients and torrents through one proxy
)

var allComparisons = []string{cmpSwarm, cmpMixed, cmpProxy, cmpSeek, cmpOffload, cmpPassthrough, cmpScale}

// config is the bench's command line.
type config struct {
	quick         bool
	only          []string // comparisons to run, in allComparisons order
	runs          int
	size          int64
	pieceLens     []int64
	offloadSize   int64         // the file of comparison 4
	offloadCounts []int         // how many proxies fetch at once in comparison 4
	wrkDuration   time.Duration // each wrk run of comparison 5
	wanRTT        time.Duration // the round trip of comparison 2's emulated wide-area path; 0 for none
	seekCount     int           // offsets of comparison 3
	scaleCases    []scaleCase   // loads of comparison 6, without their directories
	tbproxyBin    string        // "" builds ./cmd/tbproxy
	out           string        // "" means bench/RESULTS.md (RESULTS-quick.md with --quick) in the module
	budget        time.Duration // the measurements stop starting runs after this long
	profileDir    string        // "" for none; else swarmget writes a CPU profile per run here
	args          []string      // as given, for the report
}

// has reports whether comparison name was selected.
func (c config) has(name string) bool { return slices.Contains(c.only, name) }

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
	fs.BoolVar(&cfg.quick, "quick", false, "small files, one run, 256 KiB pieces only, short wrk runs: a smoke test for CI")
	only := fs.String("only", strings.Join(allComparisons, ","), "comma-separated comparisons to run: "+strings.Join(allComparisons, ", "))
	fs.IntVar(&cfg.runs, "runs", 3, "downloads per leecher and piece size; the report gives the median")
	size := fs.String("size", "1GiB", "size of the random file of comparisons 1, 1b, 2, 3 and 5 (B, KiB, MiB, GiB, or KB, MB, GB)")
	offloadSize := fs.String("offload-size", "256MiB", "size of the file of comparison 4 (--quick: 32MiB)")
	counts := fs.String("offload-proxies", "1,4,8", "comma-separated numbers of proxies fetching at once in comparison 4 (--quick: 1,4)")
	fs.DurationVar(&cfg.wrkDuration, "wrk-duration", 10*time.Second, "length of each wrk run in comparison 5 (--quick: 3s)")
	fs.DurationVar(&cfg.wanRTT, "wan-rtt", 10*time.Millisecond, "round trip of the emulated wide-area path to nginx in comparison 2's first-byte case over it; 0 leaves the case out")
	fs.StringVar(&cfg.tbproxyBin, "tbproxy", "", "tbproxy binary to measure (default: build ./cmd/tbproxy)")
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
	if cfg.only, err = parseOnly(*only); err != nil {
		return cfg, err
	}
	if cfg.size, err = parseSize(*size); err != nil {
		return cfg, err
	}
	if cfg.offloadSize, err = parseSize(*offloadSize); err != nil {
		return cfg, err
	}
	if cfg.offloadCounts, err = parseCounts(*counts); err != nil {
		return cfg, err
	}
	cfg.pieceLens = []int64{256 << 10, 1 << 20}
	cfg.seekCount = 10
	cfg.scaleCases = []scaleCase{{clients: 50, torrents: 20, size: 64 << 20}, {clients: 8, torrents: 8, size: 1 << 30}}
	if cfg.quick {
		cfg.seekCount = 3
		cfg.scaleCases = []scaleCase{{clients: 10, torrents: 4, size: 16 << 20}}
		cfg.pieceLens = cfg.pieceLens[:1]
		if !set["size"] {
			cfg.size = 64 << 20
		}
		if !set["offload-size"] {
			cfg.offloadSize = 32 << 20
		}
		if !set["offload-proxies"] {
			cfg.offloadCounts = []int{1, 4}
		}
		if !set["wrk-duration"] {
			cfg.wrkDuration = 3 * time.Second
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
	case cfg.offloadSize < 1<<20:
		return cfg, errors.New("--offload-size must be at least 1 MiB")
	case cfg.wrkDuration < time.Second:
		return cfg, errors.New("--wrk-duration must be at least 1s")
	case cfg.wanRTT < 0 || cfg.wanRTT > time.Second:
		return cfg, errors.New("--wan-rtt must be from 0 to 1s")
	}
	return cfg, nil
}

// parseOnly reads --only: known names, each once, put in running order.
func parseOnly(s string) ([]string, error) {
	var names []string
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(allComparisons, name) {
			return nil, fmt.Errorf("--only: unknown comparison %q (known: %s)", name, strings.Join(allComparisons, ", "))
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, errors.New("--only names no comparison")
	}
	var out []string
	for _, name := range allComparisons {
		if slices.Contains(names, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// parseCounts reads --offload-proxies: "1,4,8".
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 32 {
			return nil, fmt.Errorf("--offload-proxies: bad count %q (1 to 32)", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
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
	tools := toolsFor(cfg)
	if err := ensureTools(ctx, log, tools); err != nil {
		return err
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	mach, err := describeMachine(ctx, root, cfg, tools)
	if err != nil {
		return err
	}
	ws, err := newWorkspace(ctx, log, root, cfg)
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

// results are the figures of every comparison that ran; nil for the
// others.
type results struct {
	swarm   []comparison // comparison 1, one per piece length
	mixed   *mixedResult
	proxy   *proxyResult
	seek    *seekResult
	offload *offloadResult
	pass    *passResult
	scale   *scaleResult
}

// measureAll runs the selected comparisons in order under one budget.
// Once the budget is spent, the remaining runs are skipped and reported
// as such; an interrupt (ctx) aborts.
func measureAll(ctx context.Context, cfg config, ws *workspace, log io.Writer) (res results, err error) {
	budget, cancel := context.WithTimeout(ctx, cfg.budget)
	defer cancel()
	if cfg.has(cmpSwarm) {
		if res.swarm, err = measureSwarm(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpMixed) {
		if res.mixed, err = measureMixed(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpProxy) {
		if res.proxy, err = measureProxy(ctx, budget, cfg, ws, log, res.swarm); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpSeek) {
		if res.seek, err = measureSeek(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpOffload) {
		if res.offload, err = measureOffload(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpPassthrough) {
		if res.pass, err = measurePassthrough(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	if cfg.has(cmpScale) {
		if res.scale, err = measureScale(ctx, budget, cfg, ws, log); err != nil {
			return res, err
		}
	}
	return res, nil
}

// measureSwarm runs every leecher cfg.runs times for each piece length,
// interleaving the leechers so that drift hits all alike. A leecher that
// fails is not run again for that piece length.
func measureSwarm(ctx, budget context.Context, cfg config, ws *workspace, log io.Writer) ([]comparison, error) {
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
	profile := ""
	if cfg.profileDir != "" {
		profile = filepath.Join(cfg.profileDir, fmt.Sprintf("swarmget-%s-run%d.pprof", formatBytes(t.pieceLen), i+1))
	}
	return r.attempt(ctx, budget, i, 0, func(budget context.Context) error {
		s, err := runOne(budget, ws, t, r.leecher, runTimeout(cfg.size), profile)
		if err == nil {
			r.samples = append(r.samples, s)
		}
		return err
	})
}

// tally is what every row of every comparison keeps besides its figures:
// why runs failed or were skipped.
type tally struct {
	errs      []string // failed runs; after the first, the row is skipped
	skipped   int      // runs not attempted
	budgetHit bool     // some runs were skipped or cut short by --budget
}

// attempt makes the i-th run of a row with measure, unless an earlier run
// failed or the budget is spent, which count as skipped. measure gets at
// most limit (0 for no limit of its own). A failure is recorded, not
// returned: only an interrupt (ctx) stops the bench.
func (t *tally) attempt(ctx, budget context.Context, i int, limit time.Duration, measure func(context.Context) error) error {
	switch {
	case len(t.errs) > 0:
		t.skipped++
		return nil
	case budget.Err() != nil:
		t.skipped++
		t.budgetHit = true
		return nil
	}
	mctx, cancel := budget, context.CancelFunc(func() {})
	if limit > 0 {
		mctx, cancel = context.WithTimeout(budget, limit)
	}
	err := measure(mctx)
	timedOut := mctx.Err() != nil && budget.Err() == nil
	cancel()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		if budget.Err() != nil {
			t.budgetHit = true
		}
		if timedOut {
			err = fmt.Errorf("not done within %v: %w", limit, err)
		}
		t.errs = append(t.errs, fmt.Sprintf("run %d: %v", i+1, err))
	}
	return nil
}

// state describes the row's latest run for the progress log, given how
// the successful one reads.
func (t *tally) state(ok func() string) string {
	if len(t.errs) > 0 && t.skipped == 0 {
		return "failed: " + firstLine(t.errs[len(t.errs)-1])
	}
	if t.skipped > 0 {
		return "skipped"
	}
	return ok()
}

// runTimeout bounds one download: generous for a slow client, but short
// enough that a stalled one cannot blow the whole bench's time.
func runTimeout(size int64) time.Duration {
	const floor = 5e6 // bytes per second
	return 45*time.Second + time.Duration(float64(size)/floor*float64(time.Second))
}
