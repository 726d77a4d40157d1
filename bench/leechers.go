//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// exitGrace is how long a leecher that quits by itself after finishing
// gets before it is stopped.
const exitGrace = 15 * time.Second

// leechers are the clients compared, the engine first.
func leechers() []leecher {
	return []leecher{swarmLeecher{}, ltLeecher{}, ariaLeecher{}, trLeecher{}}
}

// swarmLeecher is tbproxy's engine, through bench/cmd/swarmget.
type swarmLeecher struct {
	webSeedMode string // swarmget's --web-seed-mode; "" passes none
	webOnly     bool   // no seed: swarmget --web-only, from the url-list alone
}

// seedless reports a leecher that needs no seed: runOne starts none.
type seedless interface{ seedless() bool }

func (l swarmLeecher) seedless() bool { return l.webOnly }

func (l swarmLeecher) name() string {
	switch {
	case l.webOnly:
		return "swarm (tbproxy), web seed only"
	case l.webSeedMode == "":
		return "swarm (tbproxy)"
	case l.webSeedMode == "sparing":
		return "swarm (tbproxy), web seeds sparing (default)"
	}
	return "swarm (tbproxy), web seeds " + l.webSeedMode
}

func (swarmLeecher) firstLabel() string { return "first MiB via Reader" }

func (l swarmLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	args := []string{"--torrent", env.torrent.path, "--dir", env.dir}
	var ready time.Time
	if l.webOnly {
		args = append(args, "--web-only")
	} else {
		s, err := env.startSeed(ctx)
		if err != nil {
			return outcome{}, err
		}
		args, ready = append(args, "--peer", s.addr()), s.ready
	}
	var (
		mu  sync.Mutex
		rep *swarmReport // the last JSON line
	)
	onLine := func(line string) {
		var r swarmReport
		if json.Unmarshal([]byte(line), &r) == nil && r.Done != 0 {
			mu.Lock()
			rep = &r
			mu.Unlock()
		}
	}
	if env.profile != "" {
		args = append(args, "--cpuprofile", env.profile)
	}
	if l.webSeedMode != "" {
		args = append(args, "--web-seed-mode", l.webSeedMode)
	}
	p, err := env.start(procSpec{name: "swarmget", path: env.ws.swarmget, args: args, onLine: onLine})
	if err != nil {
		return outcome{}, err
	}
	if err := waitDone(ctx, p); err != nil {
		return outcome{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	if p.err != nil || rep == nil {
		return outcome{}, p.exitErr("failed")
	}
	p.notePeak(rep.PeakRSS)
	m := marks{
		zero:  latest(p.started, ready, time.Unix(0, rep.Start)),
		first: time.Unix(0, rep.FirstMiB),
		done:  time.Unix(0, rep.Done),
	}
	return outcome{proc: p, marks: m, wasted: rep.Wasted}, nil
}

// swarmReport is the part of swarmget's JSON line the bench uses.
type swarmReport struct {
	Start    int64 `json:"start_unix_nano"`
	FirstMiB int64 `json:"first_mib_unix_nano"`
	Done     int64 `json:"done_unix_nano"`
	Wasted   int64 `json:"wasted"`
	PeakRSS  int64 `json:"vm_hwm_bytes"`
}

// waitDone waits for p to exit by itself, stopping it if ctx ends first.
func waitDone(ctx context.Context, p *process) error {
	select {
	case <-p.Done():
		return nil
	case <-ctx.Done():
		p.stop()
		return ctx.Err()
	}
}

// ltLeecher is python3-libtorrent, through bench/ltleech.py.
type ltLeecher struct{}

func (ltLeecher) name() string       { return "libtorrent" }
func (ltLeecher) firstLabel() string { return "first piece verified" }

func (ltLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	s, err := env.startSeed(ctx)
	if err != nil {
		return outcome{}, err
	}
	ev := newLTEvents()
	p, err := env.start(procSpec{
		name:   "ltleech.py",
		path:   systemPython,
		args:   []string{env.ws.ltleech, "--torrent", env.torrent.path, "--save", env.dir, "--peer", s.addr()},
		onLine: ev.handle,
	})
	if err != nil {
		return outcome{}, err
	}
	select {
	case <-ev.finished:
	case <-p.Done():
		return outcome{}, p.exitErr("exited before finishing")
	case <-ctx.Done():
		return outcome{}, ctx.Err()
	}
	p.waitExit(exitGrace)
	p.notePeak(ev.peakRSS())
	m := ev.marks()
	m.zero = latest(m.zero, p.started, s.ready)
	return outcome{proc: p, marks: m, wasted: -1}, nil
}

// ltEvents collects ltleech.py's JSON lines.
type ltEvents struct {
	finished chan struct{} // closed at the "finished" event

	mu   sync.Mutex
	m    marks // from the events' own timestamps
	peak int64 // VmHWM in bytes when finished
}

func newLTEvents() *ltEvents { return &ltEvents{finished: make(chan struct{})} }

func (e *ltEvents) handle(line string) {
	var ev struct {
		Event string `json:"event"`
		T     int64  `json:"t"`
		HWMKB int64  `json:"vm_hwm_kb"`
	}
	if json.Unmarshal([]byte(line), &ev) != nil || ev.T == 0 {
		return
	}
	t := time.Unix(0, ev.T)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case ev.Event == "start" && e.m.zero.IsZero():
		e.m.zero = t
	case ev.Event == "first_piece" && e.m.first.IsZero():
		e.m.first = t
	case ev.Event == "finished" && e.m.done.IsZero():
		e.m.done = t
		e.peak = ev.HWMKB << 10
		close(e.finished)
	}
}

func (e *ltEvents) peakRSS() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peak
}

func (e *ltEvents) marks() marks {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m
}

// ariaLeecher is aria2c. It cannot be told to dial a peer, so the seed
// dials it.
type ariaLeecher struct{}

func (ariaLeecher) name() string       { return "aria2" }
func (ariaLeecher) firstLabel() string { return "first piece (RPC bitfield, 20 ms polls)" }

func (ariaLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	port, err := freePort()
	if err != nil {
		return outcome{}, err
	}
	rpc, err := newAria2RPC()
	if err != nil {
		return outcome{}, err
	}
	defer rpc.close()
	hook, err := newDoneHook(env.dir)
	if err != nil {
		return outcome{}, err
	}
	defer hook.close()
	args := []string{
		"--no-conf=true",
		"--interface=127.0.0.1",
		"--disable-ipv6=true",
		"--enable-dht=false",
		"--enable-dht6=false",
		"--bt-enable-lpd=false",
		"--enable-peer-exchange=false",
		"--listen-port=" + strconv.Itoa(port),
		"--dir=" + env.dir,
		"--check-integrity=false",
		"--file-allocation=falloc",
		"--summary-interval=0",
		"--console-log-level=warn",
		"--stop-with-process=" + strconv.Itoa(os.Getpid()),
		"--on-bt-download-complete=" + hook.script,
		"--enable-rpc=true",
		"--rpc-listen-all=false",
		"--rpc-listen-port=" + strconv.Itoa(rpc.port),
		"--rpc-secret=" + rpc.secret,
		env.torrent.path,
	}
	p, err := env.start(procSpec{name: "aria2c", path: "aria2c", args: args})
	if err != nil {
		return outcome{}, err
	}
	m, err := dialledDownload(ctx, env, p, port, hook, rpc.hasPiece)
	if err != nil {
		return outcome{}, err
	}
	p.stop() // it seeds otherwise
	return outcome{proc: p, marks: m, wasted: -1}, nil
}

// trLeecher is transmission-cli. It ignores loopback peers from
// trackers, so the seed dials it; it waits about 13 s before its first
// request, which is reported as it is.
type trLeecher struct{}

func (trLeecher) name() string       { return "transmission" }
func (trLeecher) firstLabel() string { return "first piece (RPC haveValid, 20 ms polls)" }

func (trLeecher) download(ctx context.Context, env *runEnv) (outcome, error) {
	port, err := freePort()
	if err != nil {
		return outcome{}, err
	}
	rpc, err := newTransmissionRPC()
	if err != nil {
		return outcome{}, err
	}
	defer rpc.close()
	hook, err := newDoneHook(env.dir)
	if err != nil {
		return outcome{}, err
	}
	defer hook.close()
	cfg := filepath.Join(env.dir, "transmission")
	if err := writeTransmissionSettings(cfg, env.dir, port, rpc.port, hook.script); err != nil {
		return outcome{}, err
	}
	p, err := env.start(procSpec{name: "transmission-cli", path: "transmission-cli", args: []string{
		"-g", cfg, "-w", env.dir, "-p", strconv.Itoa(port),
		"-M", "-B", "-D", "-U", "-et", "-f", hook.script,
		env.torrent.path,
	}})
	if err != nil {
		return outcome{}, err
	}
	m, err := dialledDownload(ctx, env, p, port, hook, rpc.hasPiece)
	if err != nil {
		return outcome{}, err
	}
	p.stop() // it seeds for ever otherwise
	return outcome{proc: p, marks: m, wasted: -1}, nil
}

// writeTransmissionSettings writes a settings.json that keeps
// transmission on 127.0.0.1 with no limits, and runs script when done.
func writeTransmissionSettings(cfg, dir string, port, rpcPort int, script string) error {
	settings := map[string]any{
		"bind-address-ipv4":            "127.0.0.1",
		"bind-address-ipv6":            "::1",
		"dht-enabled":                  false,
		"lpd-enabled":                  false,
		"pex-enabled":                  false,
		"utp-enabled":                  false,
		"port-forwarding-enabled":      false,
		"peer-port":                    port,
		"peer-port-random-on-start":    false,
		"encryption":                   0,
		"blocklist-enabled":            false,
		"speed-limit-down-enabled":     false,
		"speed-limit-up-enabled":       false,
		"alt-speed-enabled":            false,
		"ratio-limit-enabled":          false,
		"download-queue-enabled":       false,
		"start-added-torrents":         true,
		"rename-partial-files":         false,
		"download-dir":                 dir,
		"message-level":                1,
		"script-torrent-done-enabled":  true,
		"script-torrent-done-filename": script,
		"rpc-enabled":                  true,
		"rpc-bind-address":             "127.0.0.1",
		"rpc-port":                     rpcPort,
		"rpc-authentication-required":  false,
		"rpc-whitelist-enabled":        true,
		"rpc-whitelist":                "127.0.0.1",
		"rpc-host-whitelist-enabled":   false,
	}
	data, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cfg, "settings.json"), data, 0o600)
}

// dialledDownload runs a download whose leecher p listens on port and
// is dialled by the seed: it waits for p to accept, starts the seed,
// polls hasPiece for the first verified piece, and returns when hook
// fires.
func dialledDownload(ctx context.Context, env *runEnv, p *process, port int, hook *doneHook, hasPiece func(context.Context) (bool, error)) (marks, error) {
	if err := waitAccept(ctx, p, port); err != nil {
		return marks{}, err
	}
	s, err := env.startSeed(ctx, hostPort(port))
	if err != nil {
		return marks{}, err
	}
	m := marks{zero: latest(p.started, s.ready)}
	pctx, stopPoll := context.WithCancel(ctx)
	first := make(chan time.Time, 1)
	go func() { first <- pollFirst(pctx, hasPiece) }()
	select {
	case m.done = <-hook.at:
		p.snapshot()
	case <-p.Done():
		stopPoll()
		<-first
		return marks{}, p.exitErr("exited before finishing")
	case <-ctx.Done():
		stopPoll()
		<-first
		return marks{}, ctx.Err()
	}
	stopPoll()
	if t := <-first; !t.IsZero() && !t.After(m.done) {
		m.first = t
	}
	return m, nil
}

// pollFirst calls has every 20 ms until it reports true, and returns when
// that was seen; the zero time if ctx ended first.
func pollFirst(ctx context.Context, has func(context.Context) (bool, error)) time.Time {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := has(ctx)
		if ok && err == nil {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}
