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
	leecher leecher
	samples []sample
	tally
}

// last describes the latest run, for the progress log.
func (r *row) last(size int64) string {
	return r.state(func() string {
		s := r.samples[len(r.samples)-1]
		first := "n/a"
		if s.firstKnown {
			first = fmt.Sprintf("%.3f s", s.first.Seconds())
		}
		return fmt.Sprintf("%.0f MB/s, first %s, total %.2f s, peak RSS %.0f MiB (anon %.0f MiB), CPU %.2f s, seed CPU %.2f s",
			mbps(size, s.total), first, s.total.Seconds(), mib(s.maxRSS), mib(s.anonRSS), s.cpu.Seconds(), s.seedCPU.Seconds())
	})
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
	tools   []string
	engine  string // the commit the engine and tbproxy were built from
	started time.Time
	load    string // /proc/loadavg's 1-minute figure when the bench started
}

func describeMachine(ctx context.Context, module string, cfg config, tools []tool) (machine, error) {
	m := machine{cpus: runtime.NumCPU(), goVer: runtime.Version(), started: time.Now(), load: loadAverage()}
	kernel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return m, err
	}
	m.kernel = strings.TrimSpace(string(kernel))
	m.cpu = procField("/proc/cpuinfo", "model name")
	m.memory = memTotal()
	m.engine = engineVersion(ctx, module, cfg)
	m.tools, err = toolVersions(ctx, tools)
	return m, err
}

// engineVersion names the commit swarmget and tbproxy are built from, and
// the top-level files and directories whose code differs from it. It only
// reads the repository.
func engineVersion(ctx context.Context, module string, cfg config) string {
	head, err := output(ctx, []string{"git", "-C", module, "rev-parse", "--short", "HEAD"})
	if err != nil {
		return "unknown (no git)"
	}
	v := "commit " + strings.TrimSpace(string(head))
	var paths []string
	if cfg.has(cmpSwarm) || cfg.has(cmpMixed) {
		paths = append(paths, "swarm", "metainfo", "bench/cmd/swarmget")
	}
	if usesTBProxy(cfg) && cfg.tbproxyBin == "" {
		paths = append(paths, ".", ":(exclude)bench")
	}
	if len(paths) > 0 {
		argv := append([]string{"git", "--no-optional-locks", "-C", module, "status", "--porcelain", "--"}, paths...)
		if out, err := output(ctx, argv); err == nil {
			if changed := changedTops(out); len(changed) > 0 {
				v += " with uncommitted changes in " + strings.Join(changed, ", ")
			}
		}
	}
	if cfg.tbproxyBin != "" && usesTBProxy(cfg) {
		v += "; tbproxy is " + cfg.tbproxyBin + ", not built by the bench"
	}
	return v
}

// changedTops lists the top-level entries named in git status --porcelain
// output: "proxy/" for proxy/proxy.go, "go.mod" for go.mod.
func changedTops(porcelain []byte) []string {
	var tops []string
	for line := range strings.Lines(string(porcelain)) {
		if len(line) < 4 {
			continue
		}
		path := strings.TrimSpace(line[3:])
		if _, to, ok := strings.Cut(path, " -> "); ok {
			path = to
		}
		top, _, nested := strings.Cut(strings.Trim(path, `"`), "/")
		if nested {
			top += "/"
		}
		if !slices.Contains(tops, top) {
			tops = append(tops, top)
		}
	}
	slices.Sort(tops)
	return tops
}

// usesTBProxy reports whether a selected comparison runs the tbproxy binary.
func usesTBProxy(cfg config) bool {
	return cfg.has(cmpProxy) || cfg.has(cmpSeek) || cfg.has(cmpOffload) || cfg.has(cmpPassthrough) || cfg.has(cmpScale)
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
func renderReport(cfg config, m machine, res results) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Bench results\n\n")
	cmd := strings.TrimSpace("go run ./bench " + strings.Join(cfg.args, " "))
	fmt.Fprintf(&b, "`%s`, started %s, took %s. Load average (1 min) %s at the start, %s at the end.\n\n",
		cmd, m.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(m.started).Round(time.Second), m.load, loadAverage())
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s.\n", m.cpus, m.cpu, m.memory, m.kernel, m.goVer)
	fmt.Fprintf(&b, "Engine: %s. Tools: %s.\n\n", m.engine, strings.Join(m.tools, ", "))
	if cfg.quick {
		fmt.Fprintf(&b, "**--quick: a smoke test of the harness; these figures are not the comparison.**\n\n")
	}
	fmt.Fprintf(&b, "Everything runs on 127.0.0.1; every figure is the median of the runs, with (min–max) when they differ. "+
		"MB/s is 10^6 bytes per second. See bench/README.md for how each figure is taken.\n\n")
	if cfg.has(cmpSwarm) {
		fmt.Fprintf(&b, "## Comparison 1: swarm download\n\n")
		fmt.Fprintf(&b, "A %s random file from one python3-libtorrent seed (seed_mode, no upload limit), "+
			"a fresh seed for every download. Each leecher is its own process. %d run(s) per leecher.\n\n",
			formatBytes(cfg.size), cfg.runs)
		for _, c := range res.swarm {
			renderComparison(&b, c)
		}
	}
	if res.mixed != nil {
		renderMixed(&b, cfg, res.mixed)
	}
	if res.proxy != nil {
		renderProxy(&b, cfg, res.proxy)
	}
	if res.seek != nil {
		renderSeek(&b, cfg, res.seek)
	}
	if res.offload != nil {
		renderOffload(&b, cfg, res.offload)
	}
	if res.pass != nil {
		renderPassthrough(&b, cfg, res.pass)
	}
	if res.scale != nil {
		renderScale(&b, cfg, res.scale)
	}
	return b.String()
}

func renderComparison(b *bytes.Buffer, c comparison) {
	fmt.Fprintf(b, "### %s pieces\n\n", formatBytes(c.pieceLen))
	tableRow(b, leecherColumns)
	tableRule(b, len(leecherColumns))
	for _, r := range c.rows {
		tableRow(b, leecherCells(r, c.size))
	}
	renderFirstLabels(b, c.rows)
	renderTargets(b, c)
	renderProblems(b, c)
}

// leecherColumns head the tables of leechers; leecherCells fills them.
var leecherColumns = []string{"leecher", "runs", "MB/s", "MB/s after first data", "first data (s)", "total (s)",
	"peak RSS (MiB)", "peak anon RSS (MiB)", "CPU (s)", "CPU s/GiB", "seed CPU (s)"}

// leecherCells are one leecher's figures for a file of size bytes.
func leecherCells(r *row, size int64) []string {
	gib := float64(size) / (1 << 30)
	return []string{
		r.leecher.name(), fmt.Sprint(len(r.samples)),
		r.throughput(size).format("%.0f"),
		r.afterFirst(size).format("%.0f"),
		r.first().format("%.3f"),
		r.figure(func(s sample) (float64, bool) { return s.total.Seconds(), true }).format("%.2f"),
		r.peakRSS().format("%.0f"),
		r.figure(func(s sample) (float64, bool) { return mib(s.anonRSS), true }).format("%.0f"),
		r.figure(func(s sample) (float64, bool) { return s.cpu.Seconds(), true }).format("%.2f"),
		r.figure(func(s sample) (float64, bool) { return s.cpu.Seconds() / gib, true }).format("%.2f"),
		r.figure(func(s sample) (float64, bool) { return s.seedCPU.Seconds(), true }).format("%.2f"),
	}
}

// tableRow writes one line of a Markdown table.
func tableRow(b *bytes.Buffer, cells []string) {
	fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
}

// tableRule writes the line under a Markdown table's head.
func tableRule(b *bytes.Buffer, n int) {
	fmt.Fprintf(b, "|%s\n", strings.Repeat("---|", n))
}

// renderFirstLabels says what each leecher's first data is.
func renderFirstLabels(b *bytes.Buffer, rows []*row) {
	fmt.Fprintf(b, "\nFirst data: ")
	for i, r := range rows {
		if i > 0 {
			fmt.Fprintf(b, "; ")
		}
		fmt.Fprintf(b, "%s, %s", r.leecher.name(), r.leecher.firstLabel())
	}
	fmt.Fprintf(b, ".\n\n")
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

// renderProblems lists the failed and skipped runs of a comparison.
func renderProblems(b *bytes.Buffer, c comparison) {
	var rows []named
	for _, r := range c.rows {
		rows = append(rows, named{r.leecher.name(), &r.tally})
	}
	renderTallies(b, rows)
}

// named is a row's tally with the row's name, for renderTallies.
type named struct {
	name string
	t    *tally
}

// renderTallies lists failed and skipped runs.
func renderTallies(b *bytes.Buffer, rows []named) {
	var lines []string
	for _, r := range rows {
		for _, e := range r.t.errs {
			lines = append(lines, fmt.Sprintf("- %s failed, %s", r.name, indent(e)))
		}
		if r.t.skipped > 0 {
			why := "after a failure"
			if r.t.budgetHit {
				why = "when --budget ran out"
			}
			lines = append(lines, fmt.Sprintf("- %s: %d run(s) skipped %s.", r.name, r.t.skipped, why))
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
