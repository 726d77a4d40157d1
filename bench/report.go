//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Targets for the engine against the libtorrent leecher of the same run.
const (
	targetThroughput = 1.2       // swarm MB/s ÷ libtorrent MB/s, at least
	targetFirst      = 0.5       // swarm first MiB ÷ libtorrent first piece, at most
	targetRSS        = 150 << 20 // swarm peak RSS, at most
)

// comparison is the download comparison at one piece length.
type comparison struct {
	pieceLen int64
	size     int64
	rows     []*row // the engine first, then libtorrent
}

// row is one leecher's runs.
type row struct {
	leecher   leecher
	samples   []sample
	errs      []string // failed runs; after the first, the leecher is skipped
	skipped   int      // runs not attempted
	budgetHit bool     // some runs were skipped or cut short by --budget
}

// last describes the latest run, for the progress log.
func (r *row) last(size int64) string {
	if len(r.errs) > 0 && r.skipped == 0 {
		return "failed: " + firstLine(r.errs[len(r.errs)-1])
	}
	if r.skipped > 0 {
		return "skipped"
	}
	s := r.samples[len(r.samples)-1]
	first := "n/a"
	if s.firstKnown {
		first = fmt.Sprintf("%.3f s", s.first.Seconds())
	}
	return fmt.Sprintf("%.0f MB/s, first %s, total %.2f s, peak RSS %.0f MiB (anon %.0f MiB), CPU %.2f s, seed CPU %.2f s",
		mbps(size, s.total), first, s.total.Seconds(), mib(s.maxRSS), mib(s.anonRSS), s.cpu.Seconds(), s.seedCPU.Seconds())
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// spread is the median, minimum and maximum of some runs' figures.
type spread struct {
	med, min, max float64
	n             int
}

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med: med, min: s[0], max: s[len(s)-1], n: len(s)}
}

// format writes the spread with a printf verb: "12.3 (11.0–13.1)".
func (s spread) format(verb string) string {
	if s.n == 0 {
		return "n/a"
	}
	if s.n == 1 || s.min == s.max {
		return fmt.Sprintf(verb, s.med)
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", s.med, s.min, s.max)
}

// figure extracts one figure from the samples that have it.
func (r *row) figure(f func(sample) (float64, bool)) spread {
	var xs []float64
	for _, s := range r.samples {
		if v, ok := f(s); ok {
			xs = append(xs, v)
		}
	}
	return spreadOf(xs)
}

func (r *row) throughput(size int64) spread {
	return r.figure(func(s sample) (float64, bool) { return mbps(size, s.total), true })
}

// afterFirst is the throughput from the first data to the end, which
// leaves out how long a client takes to connect.
func (r *row) afterFirst(size int64) spread {
	return r.figure(func(s sample) (float64, bool) {
		return mbps(size, s.total-s.first), s.firstKnown && s.total > s.first
	})
}

func (r *row) first() spread {
	return r.figure(func(s sample) (float64, bool) { return s.first.Seconds(), s.firstKnown })
}

func (r *row) peakRSS() spread {
	return r.figure(func(s sample) (float64, bool) { return mib(s.maxRSS), true })
}

func mbps(size int64, d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
func mib(n int64) float64                      { return float64(n) / (1 << 20) }

// formatBytes writes n in the largest binary unit that divides it.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// machine describes where the bench ran.
type machine struct {
	cpus    int
	cpu     string
	kernel  string
	memory  string
	goVer   string
	peers   []string
	engine  string // the commit the engine was built from
	started time.Time
	load    string // /proc/loadavg's 1-minute figure when the bench started
}

func describeMachine(ctx context.Context, module string) (machine, error) {
	m := machine{cpus: runtime.NumCPU(), goVer: runtime.Version(), started: time.Now(), load: loadAverage()}
	kernel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return m, err
	}
	m.kernel = strings.TrimSpace(string(kernel))
	m.cpu = procField("/proc/cpuinfo", "model name")
	m.memory = memTotal()
	m.engine = engineVersion(ctx, module)
	m.peers, err = toolVersions(ctx)
	return m, err
}

// engineVersion names the commit swarmget is built from, and whether the
// engine's files differ from it. It only reads the repository.
func engineVersion(ctx context.Context, module string) string {
	head, err := output(ctx, []string{"git", "-C", module, "rev-parse", "--short", "HEAD"})
	if err != nil {
		return "unknown (no git)"
	}
	v := "commit " + strings.TrimSpace(string(head))
	dirty, err := output(ctx, []string{"git", "--no-optional-locks", "-C", module, "status", "--porcelain", "--", "swarm", "metainfo", "bench/cmd/swarmget"})
	if err == nil && len(bytes.TrimSpace(dirty)) > 0 {
		v += " with uncommitted changes in swarm/, metainfo/ or bench/cmd/swarmget/"
	}
	return v
}

// loadAverage is the 1-minute load average: other work on the machine
// shows up as noise in the figures.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

// memTotal gives the machine's memory in GiB.
func memTotal() string {
	var kb int64
	if _, err := fmt.Sscanf(procField("/proc/meminfo", "MemTotal"), "%d kB", &kb); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

// procField returns the value of the first "name: value" line of a
// /proc file, or "unknown".
func procField(path, name string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// renderReport writes RESULTS.md.
func renderReport(cfg config, m machine, res []comparison) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Bench results\n\n")
	cmd := strings.TrimSpace("go run ./bench " + strings.Join(cfg.args, " "))
	fmt.Fprintf(&b, "`%s`, started %s, took %s. Load average (1 min) %s at the start, %s at the end.\n\n",
		cmd, m.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(m.started).Round(time.Second), m.load, loadAverage())
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s.\n", m.cpus, m.cpu, m.memory, m.kernel, m.goVer)
	fmt.Fprintf(&b, "Engine: %s. Peers: %s.\n\n", m.engine, strings.Join(m.peers, ", "))
	if cfg.quick {
		fmt.Fprintf(&b, "**--quick: a smoke test of the harness; these figures are not the comparison.**\n\n")
	}
	fmt.Fprintf(&b, "## Comparison 1: swarm download\n\n")
	fmt.Fprintf(&b, "A %s random file from one python3-libtorrent seed (seed_mode, no upload limit), "+
		"a fresh seed for every download, everything on 127.0.0.1. Each leecher is its own process. "+
		"%d run(s) per leecher; figures are the median, with (min–max) when they differ. "+
		"MB/s is 10^6 bytes per second. See bench/README.md for what each figure means.\n\n",
		formatBytes(cfg.size), cfg.runs)
	for _, c := range res {
		renderComparison(&b, c)
	}
	return b.String()
}

func renderComparison(b *bytes.Buffer, c comparison) {
	fmt.Fprintf(b, "### %s pieces\n\n", formatBytes(c.pieceLen))
	fmt.Fprintf(b, "| leecher | runs | MB/s | MB/s after first data | first data (s) | total (s) | peak RSS (MiB) | peak anon RSS (MiB) | CPU (s) | CPU s/GiB | seed CPU (s) |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	gib := float64(c.size) / (1 << 30)
	for _, r := range c.rows {
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.leecher.name(), len(r.samples),
			r.throughput(c.size).format("%.0f"),
			r.afterFirst(c.size).format("%.0f"),
			r.first().format("%.3f"),
			r.figure(func(s sample) (float64, bool) { return s.total.Seconds(), true }).format("%.2f"),
			r.peakRSS().format("%.0f"),
			r.figure(func(s sample) (float64, bool) { return mib(s.anonRSS), true }).format("%.0f"),
			r.figure(func(s sample) (float64, bool) { return s.cpu.Seconds(), true }).format("%.2f"),
			r.figure(func(s sample) (float64, bool) { return s.cpu.Seconds() / gib, true }).format("%.2f"),
			r.figure(func(s sample) (float64, bool) { return s.seedCPU.Seconds(), true }).format("%.2f"))
	}
	fmt.Fprintf(b, "\nFirst data: ")
	for i, r := range c.rows {
		if i > 0 {
			fmt.Fprintf(b, "; ")
		}
		fmt.Fprintf(b, "%s, %s", r.leecher.name(), r.leecher.firstLabel())
	}
	fmt.Fprintf(b, ".\n\n")
	renderTargets(b, c)
	renderProblems(b, c)
}

// renderTargets compares the engine (row 0) with libtorrent (row 1).
func renderTargets(b *bytes.Buffer, c comparison) {
	eng, lt := c.rows[0], c.rows[1]
	tp, ltTP := eng.throughput(c.size), lt.throughput(c.size)
	first, ltFirst := eng.first(), lt.first()
	rss := eng.peakRSS()
	fmt.Fprintf(b, "| target (engine against libtorrent, medians) | measured | target | met |\n|---|---|---|---|\n")
	ratioRow(b, "throughput ratio", tp, ltTP, func(x float64) bool { return x >= targetThroughput }, fmt.Sprintf("≥ %.1f×", targetThroughput))
	ratioRow(b, "throughput ratio after first data (no target)", eng.afterFirst(c.size), lt.afterFirst(c.size), nil, "—")
	ratioRow(b, "first MiB ÷ libtorrent's first piece", first, ltFirst, func(x float64) bool { return x <= targetFirst }, fmt.Sprintf("≤ %.1f×", targetFirst))
	if rss.n == 0 {
		fmt.Fprintf(b, "| peak RSS | n/a | ≤ %d MiB | n/a |\n", targetRSS>>20)
	} else {
		fmt.Fprintf(b, "| peak RSS | %.0f MiB | ≤ %d MiB | %s |\n", rss.med, targetRSS>>20, yesNo(rss.med <= targetRSS>>20))
	}
	wasted := eng.figure(func(s sample) (float64, bool) { return float64(s.wasted), s.wasted >= 0 })
	if wasted.n > 0 {
		fmt.Fprintf(b, "\nEngine bytes wasted (received but discarded), max over runs: %.0f.\n", wasted.max)
	}
	fmt.Fprintln(b)
}

func ratioRow(b *bytes.Buffer, name string, x, y spread, ok func(float64) bool, target string) {
	if x.n == 0 || y.n == 0 || y.med == 0 {
		fmt.Fprintf(b, "| %s | n/a | %s | — |\n", name, target)
		return
	}
	r := x.med / y.med
	met := "—"
	if ok != nil {
		met = yesNo(ok(r))
	}
	fmt.Fprintf(b, "| %s | %.2f× | %s | %s |\n", name, r, target, met)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// renderProblems lists failed and skipped runs.
func renderProblems(b *bytes.Buffer, c comparison) {
	var lines []string
	for _, r := range c.rows {
		for _, e := range r.errs {
			lines = append(lines, fmt.Sprintf("- %s failed, %s", r.leecher.name(), indent(e)))
		}
		if r.skipped > 0 {
			why := "after a failure"
			if r.budgetHit {
				why = "when --budget ran out"
			}
			lines = append(lines, fmt.Sprintf("- %s: %d run(s) skipped %s.", r.leecher.name(), r.skipped, why))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintf(b, "Problems:\n\n%s\n\n", strings.Join(lines, "\n"))
	}
}

// indent keeps a multi-line error inside its list item.
func indent(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ")
}
