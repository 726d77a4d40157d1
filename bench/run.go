//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"
)

// marks are the wall-clock moments of one download.
type marks struct {
	zero  time.Time // both sides are up and the leecher starts: the clock's zero
	first time.Time // first MiB read (engine) or first piece verified (others); zero if unseen
	done  time.Time // every piece verified (others) or every byte read (engine)
}

// sample is one leecher's figures from one run.
type sample struct {
	first      time.Duration // from marks.zero; valid when firstKnown
	firstKnown bool
	total      time.Duration // from marks.zero to marks.done
	maxRSS     int64         // bytes, the kernel's peak RSS (VmHWM) of the process when done
	anonRSS    int64         // bytes, the sampled peak of anonymous RSS
	cpu        time.Duration // user plus system time of the whole process
	seedCPU    time.Duration // the same for the seed, from its start until stopped after the download
	wasted     int64         // bytes the engine discarded; -1 for other clients
	web        *httpLoad     // what the web seed (nginx) sent in the run; nil when not measured
}

// leecher is one client under test.
type leecher interface {
	name() string
	// firstLabel says what the first-data figure measures.
	firstLabel() string
	// download fetches the torrent in env, starting the seed too, and
	// returns once the leecher's process has ended (or been stopped).
	download(ctx context.Context, env *runEnv) (outcome, error)
}

// outcome is what a leecher's download leaves to measure.
type outcome struct {
	proc   *process // ended
	marks  marks
	wasted int64     // bytes the engine discarded; -1 for other clients
	web    *httpLoad // what the web seed sent; nil when not measured
}

// runEnv is one leecher's run: its download directory and the processes
// it started, which close stops.
type runEnv struct {
	ws      *workspace
	torrent torrent
	dir     string // the leecher's download directory
	profile string // where swarmget writes a CPU profile; "" for none

	seed  *process   // the run's seed, once started
	procs []*process // stopped by close, newest first
}

func newRunEnv(ws *workspace, t torrent) (*runEnv, error) {
	dir, err := ws.tempDir("run-")
	if err != nil {
		return nil, err
	}
	return &runEnv{ws: ws, torrent: t, dir: dir}, nil
}

// start starts a process that close will stop.
func (e *runEnv) start(spec procSpec) (*process, error) {
	home, err := os.MkdirTemp(e.dir, "home-")
	if err != nil {
		return nil, err
	}
	spec.home = home
	p, err := startProcess(spec)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	return p, nil
}

// startSeed starts the run's seed; see startSeed.
func (e *runEnv) startSeed(ctx context.Context, dial ...string) (*seed, error) {
	home, err := os.MkdirTemp(e.dir, "seed-home-")
	if err != nil {
		return nil, err
	}
	s, err := startSeed(ctx, e.ws, e.torrent, home, dial...)
	if err != nil {
		return nil, err
	}
	e.seed = s.proc
	e.procs = append(e.procs, s.proc)
	return s, nil
}

// close stops every process of the run and removes its files.
func (e *runEnv) close() error {
	for _, p := range slices.Backward(e.procs) {
		p.stop()
	}
	return os.RemoveAll(e.dir)
}

// runOne measures one download by l, bounded by timeout.
func runOne(ctx context.Context, ws *workspace, t torrent, l leecher, timeout time.Duration, profile string) (s sample, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env, err := newRunEnv(ws, t)
	if err != nil {
		return s, err
	}
	env.profile = profile
	defer func() { err = errors.Join(err, env.close()) }()
	o, err := l.download(ctx, env)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no complete download within %v: %w", timeout, err)
		}
		return s, err
	}
	if s, err = measure(o); err != nil {
		return s, err
	}
	if sl, ok := l.(seedless); ok && sl.seedless() {
		return s, nil
	}
	if env.seed == nil {
		return s, errors.New("no seed was started")
	}
	env.seed.stop()
	s.seedCPU, err = env.seed.cpu()
	return s, err
}

// measure turns a finished download into a sample.
func measure(o outcome) (sample, error) {
	p := o.proc
	s, err := timings(o.marks)
	if err != nil {
		return s, fmt.Errorf("%s: %w", p.name, err)
	}
	if s.cpu, err = p.cpu(); err != nil {
		return s, err
	}
	s.maxRSS, s.anonRSS, s.wasted, s.web = p.hwm.Load(), p.anonPeak.Load(), o.wasted, o.web
	return s, nil
}

// timings turns marks into durations from the zero mark.
func timings(m marks) (sample, error) {
	if m.zero.IsZero() || m.done.Before(m.zero) {
		return sample{}, fmt.Errorf("inconsistent timings %+v", m)
	}
	s := sample{total: m.done.Sub(m.zero)}
	if !m.first.IsZero() {
		s.first, s.firstKnown = max(0, m.first.Sub(m.zero)), true
	}
	return s, nil
}

// latest is the latest of ts.
func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for clients that cannot report the port they bound.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// waitAccept waits until 127.0.0.1:port accepts a connection, or p
// exits, or ctx ends.
func waitAccept(ctx context.Context, p *process, port int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", hostPort(port))
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.Done():
			return p.exitErr("exited before listening")
		case <-ctx.Done():
			return fmt.Errorf("%s not accepting on port %d: %w", p.name, port, ctx.Err())
		case <-tick.C:
		}
	}
}
