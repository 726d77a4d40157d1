//go:build linux

package integration

// This file is the harness that starts real third-party BitTorrent peers
// and a tracker on 127.0.0.1 for end-to-end tests: libtorrent (through
// testdata/ltpeer.py), aria2, transmission-cli and opentracker.
//
// Every process runs in its own process group with a private HOME and no
// proxy variables, DHT, local peer discovery, peer exchange and port
// mapping are switched off in each of them, and every listener is bound
// to 127.0.0.1. Each start helper registers a t.Cleanup that stops the
// process group, so nothing outlives the test that started it; on failure
// the cleanup logs the tail of the process's output.
//
// The helpers are Linux-only: they rely on process groups and on
// Pdeathsig, which kills a peer if the test binary itself dies (for
// example on a go test -timeout panic, when no cleanup runs).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
)

const (
	// systemPython is the only interpreter that can import Debian's
	// python3-libtorrent.
	systemPython = "/usr/bin/python3"

	// loopback is the only address any peer may use.
	loopback = "127.0.0.1"

	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 5 * time.Second

	// startTimeout bounds how long a peer or tracker may take to listen.
	startTimeout = 20 * time.Second

	// pollInterval paces the few waits that have nothing to block on
	// (a port to accept, a marker file to appear).
	pollInterval = 50 * time.Millisecond

	// ringLines is how many output lines each process keeps for diagnostics.
	ringLines = 400

	// maxLineLen caps a single remembered output line.
	maxLineLen = 8 << 10
)

// installHint says how to get a tool that requireTool did not find.
func installHint(name string) string {
	switch name {
	case "libtorrent", "python3-libtorrent":
		return "apt-get install -y python3-libtorrent (importable only from /usr/bin/python3)"
	case "aria2c", "aria2":
		return "apt-get install -y aria2"
	case "transmission-cli":
		return "apt-get install -y transmission-cli"
	case "opentracker":
		return "apt-get install -y opentracker"
	case "mktorrent":
		return "apt-get install -y mktorrent"
	}
	return "install " + name
}

// requireTool makes sure an external tool is available. name is a binary
// looked up in PATH, or "libtorrent", which is checked by importing the
// bindings into /usr/bin/python3. A missing tool fails the test when the
// CI environment variable is set, so CI cannot pass by skipping, and skips
// it otherwise; both messages carry an install hint.
func requireTool(t testing.TB, name string) {
	t.Helper()
	var err error
	switch name {
	case "libtorrent", "python3-libtorrent":
		out, e := exec.Command(systemPython, "-c", "import libtorrent").CombinedOutput()
		if e != nil {
			err = fmt.Errorf("%s -c 'import libtorrent': %v: %s", systemPython, e, bytes.TrimSpace(out))
		}
	default:
		_, err = exec.LookPath(name)
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("required tool %s is missing (%v); %s", name, err, installHint(name))
	}
	t.Skipf("skipping: tool %s is missing (%v); %s", name, err, installHint(name))
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process can take it before the caller binds it; where a tool
// can report the port it bound (libtorrent can), prefer port 0.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", loopback+":0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	return port
}

// freeTCPUDPPort returns a port number that is free on 127.0.0.1 for both
// TCP and UDP, for servers (opentracker) that take one number for both.
func freeTCPUDPPort(t testing.TB) int {
	t.Helper()
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", loopback+":0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(loopback, strconv.Itoa(port)))
		l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		u.Close()
		return port
	}
	t.Fatalf("no port free for both TCP and UDP: %v", lastErr)
	return 0
}

// makeContent writes a file of size pseudo-random bytes at dir/name
// (name may contain slashes; parent directories are created) and returns
// its path. The bytes depend only on size and seed, so two calls with the
// same arguments write identical files. The file is written in 1 MiB
// chunks, so size is not limited by memory.
func makeContent(t testing.TB, dir, name string, size, seed int64) string {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("making content: %v", err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("making content: %v", err)
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:8], uint64(seed))
	copy(key[8:], "tbproxy integration content")
	src := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int(min(left, int64(len(buf))))
		_, _ = src.Read(buf[:n]) // ChaCha8.Read never fails
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			t.Fatalf("making content: %v", err)
		}
		left -= int64(n)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("making content: %v", err)
	}
	return path
}

// makeTorrent builds a .torrent for contentPath (a file or a directory)
// with metainfo.Build and writes it to a fresh temporary directory. Each
// tracker URL becomes its own tier, in order. pieceLen 0 picks one
// automatically. It returns the .torrent's path and the parsed metainfo.
func makeTorrent(t testing.TB, contentPath string, pieceLen int64, trackers []string) (string, *metainfo.MetaInfo) {
	t.Helper()
	var tiers [][]string
	for _, u := range trackers {
		tiers = append(tiers, []string{u})
	}
	m, err := metainfo.Build(t.Context(), contentPath, metainfo.BuildOptions{
		PieceLength: pieceLen,
		Trackers:    tiers,
	})
	if err != nil {
		t.Fatalf("building torrent for %s: %v", contentPath, err)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatalf("encoding torrent for %s: %v", contentPath, err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(contentPath)+".torrent")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("writing torrent: %v", err)
	}
	return path, m
}

// fileSHA256 returns the hex SHA-256 of a file and its size, streaming it.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// sameFile fails the test unless files a and b have identical contents,
// comparing streamed SHA-256 digests so large files are fine.
func sameFile(t testing.TB, a, b string) {
	t.Helper()
	ha, na, err := fileSHA256(a)
	if err != nil {
		t.Fatalf("sameFile: %v", err)
	}
	hb, nb, err := fileSHA256(b)
	if err != nil {
		t.Fatalf("sameFile: %v", err)
	}
	if ha != hb || na != nb {
		t.Fatalf("files differ:\n  %s: %d bytes, sha256 %s\n  %s: %d bytes, sha256 %s", a, na, ha, b, nb, hb)
	}
}

// lineRing keeps the last ringLines lines of a process's output.
type lineRing struct {
	mu    sync.Mutex
	lines []string // oldest first; trimmed to ringLines when it reaches twice that
	total int      // lines ever added, to report how many were dropped
}

func (r *lineRing) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	r.lines = append(r.lines, line)
	if len(r.lines) >= 2*ringLines {
		r.lines = append(r.lines[:0], r.lines[len(r.lines)-ringLines:]...)
	}
}

// tail returns up to n of the most recent lines, newline-terminated.
func (r *lineRing) tail(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := r.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	if dropped := r.total - len(lines); dropped > 0 {
		fmt.Fprintf(&b, "[%d earlier lines not shown]\n", dropped)
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// lineWriter splits a byte stream into lines at '\n' or '\r' (progress
// displays redraw with '\r') and hands each non-empty line to emit.
// os/exec calls Write from one copying goroutine per stream; flush is
// called once that goroutine has finished.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte // bytes after the last line break, at most maxLineLen
	emit    func(line string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			w.partial = append(w.partial, p...)
			if len(w.partial) > maxLineLen {
				w.emitLocked()
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.emitLocked()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) emitLocked() {
	line := w.partial
	if len(line) > maxLineLen {
		line = line[:maxLineLen]
	}
	if len(bytes.TrimSpace(line)) > 0 {
		w.emit(string(line))
	}
	w.partial = w.partial[:0]
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emitLocked()
}

// procConfig adjusts startProcWith.
type procConfig struct {
	// dir is the working directory; empty means a fresh temporary one.
	dir string
	// env adds KEY=VALUE entries on top of the sanitised environment.
	env []string
	// onLine, if set, sees every non-empty output line (stdout and
	// stderr) as it arrives, on an os/exec copying goroutine. It must not
	// call t methods that end the test.
	onLine func(line string)
}

// proc is a running external process owned by one test.
type proc struct {
	name string // the command, for messages
	pid  int    // also the process group id
	out  *lineRing

	done    chan struct{} // closed once the process has been reaped and its output drained
	waitErr error         // cmd.Wait's result; read only after done is closed

	stopOnce sync.Once
}

// startProc starts name with args in its own process group, with a
// private HOME and XDG directories under t.TempDir() and without proxy
// variables, and keeps the last lines of its stdout and stderr for
// diagnostics. A t.Cleanup stops it: SIGTERM to the group, up to 5 s to
// exit, then SIGKILL to the group; then, if the test failed, the last 50
// output lines are logged. The goroutine that reaps the process ends
// before the cleanup returns.
func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startProcWith(t, procConfig{}, name, args...)
}

// startProcWith is startProc with a working directory, extra environment
// and a line callback.
func startProcWith(t testing.TB, cfg procConfig, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(name), out: &lineRing{}, done: make(chan struct{})}
	emit := func(prefix string) func(string) {
		return func(line string) {
			p.out.add(prefix + line)
			if cfg.onLine != nil {
				cfg.onLine(line)
			}
		}
	}
	stdout := &lineWriter{emit: emit("")}
	stderr := &lineWriter{emit: emit("stderr: ")}

	home := t.TempDir()
	cmd := exec.Command(name, args...)
	cmd.Dir = cfg.dir
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	cmd.Env = append(cleanEnv(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
	)
	cmd.Env = append(cmd.Env, cfg.env...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies without running cleanups, take the
		// peer with it. (Linux sends this when the forking thread exits;
		// the Go runtime keeps its threads, so that is the process.)
		Pdeathsig: syscall.SIGKILL,
	}
	// A grandchild that escaped the group could hold the pipes open;
	// don't let that block Wait for ever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		stdout.flush()
		stderr.flush()
		p.waitErr = err
		close(p.done)
	}()
	t.Cleanup(func() {
		begin := time.Now()
		p.Stop()
		if d := time.Since(begin); d > 2*time.Second {
			t.Logf("stopping %s (pid %d) took %v", p.name, p.pid, d.Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("%s (pid %d, %s): last output:\n%s", p.name, p.pid, p.state(), p.Tail(50))
		}
	})
	return p
}

// cleanEnv is the test's environment without proxy settings, so no
// client sends tracker requests anywhere but 127.0.0.1.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// PID returns the process id, which is also its process group id.
func (p *proc) PID() int { return p.pid }

// Done is closed once the process has exited and been reaped.
func (p *proc) Done() <-chan struct{} { return p.done }

// ExitCode returns the exit status, -1 if it was killed by a signal or
// could not be reaped, or -2 while it is still running.
func (p *proc) ExitCode() int {
	select {
	case <-p.done:
	default:
		return -2
	}
	if p.waitErr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// state describes the process for messages.
func (p *proc) state() string {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return "exited 0"
		}
		return p.waitErr.Error()
	default:
		return "running"
	}
}

// Tail returns up to n of the most recent output lines.
func (p *proc) Tail(n int) string { return p.out.tail(n) }

// Wait waits up to timeout for the process to exit by itself and reports
// whether it did.
func (p *proc) Wait(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// Stop ends the process group: SIGTERM, up to stopGrace to exit, then
// SIGKILL; then it SIGKILLs whatever is left in the group and waits up
// to 2 s for init to reap those orphans. It returns once the process is
// reaped. Later calls return at once; it is safe to call from several
// goroutines.
func (p *proc) Stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.pid, syscall.SIGTERM)
			timer := time.NewTimer(stopGrace)
			select {
			case <-p.done:
			case <-timer.C:
				_ = syscall.Kill(-p.pid, syscall.SIGKILL)
				<-p.done
			}
			timer.Stop()
		}
		// Children the leader left behind in its group (hook scripts).
		// Once orphaned they are reaped by init, not by us, so wait
		// (briefly) until the group is really gone.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		deadline := time.Now().Add(2 * time.Second)
		for syscall.Kill(-p.pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitTCP waits until 127.0.0.1:port accepts a TCP connection, failing
// the test if p exits first or timeout passes.
func waitTCP(t testing.TB, p *proc, port int, timeout time.Duration) {
	t.Helper()
	addr := net.JoinHostPort(loopback, strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept on %s within %v: %v\n%s", p.name, addr, timeout, err, p.Tail(50))
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%s) before accepting on %s:\n%s", p.name, p.state(), addr, p.Tail(50))
		case <-tick.C:
		}
	}
}

// waitFile waits until path exists, or p exits, or timeout passes.
func waitFile(p *proc, path string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.done:
			if _, err := os.Stat(path); err == nil {
				return nil
			}
			return fmt.Errorf("%s exited (%s) before %s appeared", p.name, p.state(), path)
		case <-deadline.C:
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		case <-tick.C:
		}
	}
}

// writeScript writes an executable /bin/sh script that creates marker,
// for clients that run a command when a download completes.
func writeScript(t testing.TB, marker string) string {
	t.Helper()
	if strings.ContainsAny(marker, "'\n") {
		t.Fatalf("marker path %q cannot be quoted", marker)
	}
	path := filepath.Join(t.TempDir(), "on-complete.sh")
	body := "#!/bin/sh\n: > '" + marker + "'\n"
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatalf("writing hook script: %v", err)
	}
	return path
}

func hostPort(port int) string { return net.JoinHostPort(loopback, strconv.Itoa(port)) }

// LTOpts configures startLibtorrent.
type LTOpts struct {
	Torrent  string // path of the .torrent file
	SaveDir  string // a seed's data is here already; a leech writes here
	Seed     bool   // seed (true) or leech (false)
	SeedMode bool   // seed without hash-checking the data (libtorrent's seed_mode)
	// Peers are "127.0.0.1:PORT" addresses to dial, again every 2 s
	// while not connected.
	Peers []string
	// Trackers are announce URLs added to the torrent's own.
	Trackers      []string
	ListenPort    int   // 0: libtorrent picks a free port; see Port
	UploadLimit   int64 // bytes/s, 0 means none; applies to loopback peers too
	DownloadLimit int64 // bytes/s, 0 means none; applies to loopback peers too
	UTP           bool  // also allow uTP; by default every connection is TCP
	// DHT joins a loopback DHT through DHTNodes ("127.0.0.1:PORT") and
	// announces the torrent there every 3 s; by default the DHT is off.
	DHT      bool
	DHTNodes []string
	// Encryption is libtorrent's MSE/PE policy, both directions:
	// "forced" (RC4 only), "enabled" or "disabled"; "" leaves its default.
	Encryption string
	PEX        bool // exchange peers (ut_pex); off by default
	LSD        bool // local service discovery on the listening interface; off by default
}

// LTStatus is the latest status line of a libtorrent peer.
type LTStatus struct {
	Progress      float64 `json:"progress"` // 0..1
	State         string  `json:"state"`    // libtorrent's torrent_status.state name
	NumPeers      int     `json:"num_peers"`
	DownloadRate  int64   `json:"download_rate"`        // bytes/s
	UploadRate    int64   `json:"upload_rate"`          // bytes/s
	TotalUpload   int64   `json:"total_upload"`         // bytes this session, including protocol overhead
	PayloadUpload int64   `json:"total_payload_upload"` // piece bytes this session
	TotalDownload int64   `json:"total_download"`
	IsSeeding     bool    `json:"is_seeding"`
	// PeerEncryption has one entry per connected peer: "rc4",
	// "plaintext" (MSE with a plain stream) or "" (no MSE).
	PeerEncryption []string     `json:"peer_encryption"`
	Peers          []LTPeerInfo `json:"peers"`
}

// LTPeerInfo is one connected peer in a libtorrent status line.
type LTPeerInfo struct {
	IP     string `json:"ip"`
	Port   int    `json:"port"`
	Source int    `json:"source"` // libtorrent's peer_source_flags: 1 tracker, 2 dht, 4 pex, 8 lsd, 32 incoming
}

// libtorrent's peer_source_flags.
const (
	LTSourcePEX      = 4
	LTSourceLSD      = 8
	LTSourceIncoming = 32
)

// ltEvent is one JSON line from ltpeer.py.
type ltEvent struct {
	Event   string `json:"event"`
	Port    int    `json:"port"`
	Message string `json:"message"`
	LTStatus
}

// LTPeer is a running libtorrent peer.
type LTPeer struct {
	proc *proc

	listening chan int      // gets the listen port once; buffered
	finished  chan struct{} // closed at the first "finished" event

	mu           sync.Mutex
	port         int      // set by the "listening" event
	last         LTStatus // the latest status event
	errs         []string // messages of "error" events
	sawListening bool
	sawFinished  bool
}

// startLibtorrent starts testdata/ltpeer.py with opts and returns once it
// reports that it is listening (failing the test if it exits or takes
// longer than 20 s). The peer stops in t.Cleanup.
func startLibtorrent(t testing.TB, opts LTOpts) *LTPeer {
	t.Helper()
	requireTool(t, "libtorrent")
	script, err := filepath.Abs(filepath.Join("testdata", "ltpeer.py"))
	if err != nil {
		t.Fatal(err)
	}
	mode := "leech"
	if opts.Seed {
		mode = "seed"
	}
	args := []string{script,
		"--torrent", opts.Torrent,
		"--save", opts.SaveDir,
		"--listen-port", strconv.Itoa(opts.ListenPort),
		"--mode", mode,
	}
	for _, p := range opts.Peers {
		args = append(args, "--peer", p)
	}
	for _, u := range opts.Trackers {
		args = append(args, "--tracker", u)
	}
	if opts.SeedMode {
		args = append(args, "--seed-mode")
	}
	if opts.UploadLimit > 0 {
		args = append(args, "--upload-limit", strconv.FormatInt(opts.UploadLimit, 10))
	}
	if opts.DownloadLimit > 0 {
		args = append(args, "--download-limit", strconv.FormatInt(opts.DownloadLimit, 10))
	}
	if opts.UTP {
		args = append(args, "--utp")
	}
	if opts.DHT {
		args = append(args, "--dht")
	}
	for _, n := range opts.DHTNodes {
		args = append(args, "--dht-node", n)
	}
	if opts.Encryption != "" {
		args = append(args, "--encryption", opts.Encryption)
	}
	if opts.PEX {
		args = append(args, "--pex")
	}
	if opts.LSD {
		args = append(args, "--lsd")
	}
	l := &LTPeer{listening: make(chan int, 1), finished: make(chan struct{})}
	l.proc = startProcWith(t, procConfig{onLine: l.handleLine}, systemPython, args...)

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-l.listening:
	case <-l.proc.done:
		t.Fatalf("libtorrent peer exited (%s) before listening:\n%s", l.proc.state(), l.proc.Tail(50))
	case <-timer.C:
		t.Fatalf("libtorrent peer did not listen within %v:\n%s", startTimeout, l.proc.Tail(50))
	}
	return l
}

// handleLine digests one line of ltpeer.py output.
func (l *LTPeer) handleLine(line string) {
	if !strings.HasPrefix(line, "{") {
		return
	}
	var ev ltEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ev.Event {
	case "listening":
		if !l.sawListening {
			l.sawListening = true
			l.port = ev.Port
			l.listening <- ev.Port
		}
	case "status":
		l.last = ev.LTStatus
	case "finished":
		if !l.sawFinished {
			l.sawFinished = true
			close(l.finished)
		}
	case "error":
		l.errs = append(l.errs, ev.Message)
	}
}

// Port returns the TCP port the peer listens on.
func (l *LTPeer) Port() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.port
}

// Addr returns "127.0.0.1:PORT" for dialling the peer.
func (l *LTPeer) Addr() string { return hostPort(l.Port()) }

// Proc returns the underlying process.
func (l *LTPeer) Proc() *proc { return l.proc }

// LastStatus returns the latest status report (every 0.5 s); the zero
// value before the first.
func (l *LTPeer) LastStatus() LTStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Errors returns the messages of the error events seen so far.
func (l *LTPeer) Errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// WaitSeeding waits until the peer reports its torrent in the "seeding"
// state: listening comes sooner, while libtorrent may still be checking
// the torrent and refuse (or mishandle) a connection for it.
func (l *LTPeer) WaitSeeding(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for l.LastStatus().State != "seeding" {
		if time.Now().After(deadline) {
			t.Fatalf("libtorrent peer not seeding within %v; last status %+v:\n%s", startTimeout, l.LastStatus(), l.proc.Tail(20))
		}
		select {
		case <-l.proc.Done():
			t.Fatalf("libtorrent peer exited (%s) before seeding:\n%s", l.proc.state(), l.proc.Tail(50))
		case <-time.After(pollInterval):
		}
	}
}

// WaitFinished waits until a leech reports that it has every piece. It
// returns an error if the process exits first or timeout passes.
func (l *LTPeer) WaitFinished(timeout time.Duration) error {
	select {
	case <-l.finished:
		return nil
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-l.finished:
		return nil
	case <-l.proc.done:
		select {
		case <-l.finished:
			return nil
		default:
		}
		return fmt.Errorf("libtorrent peer exited (%s) before finishing", l.proc.state())
	case <-timer.C:
		return fmt.Errorf("libtorrent peer not finished after %v; last status %+v; errors %q",
			timeout, l.LastStatus(), l.Errors())
	}
}

// AriaOpts configures startAria2.
type AriaOpts struct {
	Torrent string // path of the .torrent file
	Dir     string // a seed's data is here already; a leech writes here
	Seed    bool   // seed the existing data without checking it
	// Tracker is an extra announce URL (--bt-tracker). aria2 has no way
	// to be told to dial a given peer, so a leech needs a tracker (in the
	// torrent or here) or a peer that dials its Port.
	Tracker string
	// KeepSeeding keeps a leech running (and seeding) after the download;
	// by default it exits 0 as soon as it has the data (--seed-time=0).
	KeepSeeding   bool
	ListenPort    int   // 0: a free port
	UploadLimit   int64 // bytes/s, 0 means none
	DownloadLimit int64 // bytes/s, 0 means none
}

// Aria2 is a running aria2c.
type Aria2 struct {
	proc   *proc
	port   int    // TCP listen port
	marker string // created by the --on-bt-download-complete hook
	seed   bool
}

// startAria2 starts aria2c for one torrent and returns once its listen
// port accepts connections. The peer stops in t.Cleanup.
func startAria2(t testing.TB, opts AriaOpts) *Aria2 {
	t.Helper()
	requireTool(t, "aria2c")
	port := opts.ListenPort
	if port == 0 {
		port = freePort(t)
	}
	marker := filepath.Join(t.TempDir(), "complete")
	args := []string{
		"--no-conf=true",
		"--interface=" + loopback, // binds the listener and outgoing sockets
		"--disable-ipv6=true",
		"--enable-dht=false",
		"--enable-dht6=false",
		"--bt-enable-lpd=false",
		"--enable-peer-exchange=false",
		"--listen-port=" + strconv.Itoa(port),
		"--dir=" + opts.Dir,
		"--seed-ratio=0.0", // no ratio limit
		"--check-integrity=false",
		"--file-allocation=none",
		"--summary-interval=0",
		"--bt-stop-timeout=0",
		"--console-log-level=warn",
		"--stop-with-process=" + strconv.Itoa(os.Getpid()),
		"--on-bt-download-complete=" + writeScript(t, marker),
	}
	if opts.Seed {
		args = append(args, "--bt-seed-unverified=true")
	} else if !opts.KeepSeeding {
		args = append(args, "--seed-time=0")
	}
	if opts.Tracker != "" {
		args = append(args, "--bt-tracker="+opts.Tracker)
	}
	if opts.UploadLimit > 0 {
		args = append(args, "--max-upload-limit="+strconv.FormatInt(opts.UploadLimit, 10))
	}
	if opts.DownloadLimit > 0 {
		args = append(args, "--max-download-limit="+strconv.FormatInt(opts.DownloadLimit, 10))
	}
	args = append(args, opts.Torrent)
	a := &Aria2{port: port, marker: marker, seed: opts.Seed}
	a.proc = startProc(t, "aria2c", args...)
	waitTCP(t, a.proc, port, startTimeout)
	return a
}

// Port returns the TCP port aria2 listens on.
func (a *Aria2) Port() int { return a.port }

// Addr returns "127.0.0.1:PORT" for dialling aria2.
func (a *Aria2) Addr() string { return hostPort(a.port) }

// Proc returns the underlying process.
func (a *Aria2) Proc() *proc { return a.proc }

// WaitFinished waits until a leech has the whole download: its
// completion hook ran, or it exited with status 0. It returns an error
// if it exits otherwise or timeout passes.
func (a *Aria2) WaitFinished(timeout time.Duration) error {
	err := waitFile(a.proc, a.marker, timeout)
	if err != nil && a.proc.ExitCode() == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("aria2: %w", err)
	}
	return nil
}

// TROpts configures startTransmission. transmission-cli decides by
// itself whether it seeds: it verifies whatever data is in Dir.
type TROpts struct {
	Torrent    string // path of the .torrent file
	Dir        string // download directory (-w); a seed's data is here already
	ListenPort int    // 0: a free port
}

// Transmission is a running transmission-cli.
type Transmission struct {
	proc   *proc
	port   int    // TCP listen port
	marker string // created by the torrent-done script

	seeding chan struct{} // closed at the first "Seeding" status line
	once    sync.Once
}

// startTransmission starts transmission-cli with a private config
// directory (so nothing reads or writes $HOME) and returns once its port
// accepts connections. The peer stops in t.Cleanup.
//
// transmission ignores loopback peers that a tracker hands it, so the
// other side must dial Addr; and it waits about 13 s before its first
// request as a leech. It always hash-checks existing data on start.
func startTransmission(t testing.TB, opts TROpts) *Transmission {
	t.Helper()
	requireTool(t, "transmission-cli")
	port := opts.ListenPort
	if port == 0 {
		port = freePort(t)
	}
	cfg := t.TempDir()
	marker := filepath.Join(t.TempDir(), "complete")
	script := writeScript(t, marker)
	settings := map[string]any{
		"bind-address-ipv4":            loopback,
		"bind-address-ipv6":            "::1",
		"dht-enabled":                  false,
		"lpd-enabled":                  false,
		"pex-enabled":                  false,
		"utp-enabled":                  false,
		"port-forwarding-enabled":      false,
		"peer-port":                    port,
		"peer-port-random-on-start":    false,
		"encryption":                   0, // prefer plain, accept encrypted
		"rpc-enabled":                  false,
		"blocklist-enabled":            false,
		"alt-speed-enabled":            false,
		"speed-limit-down-enabled":     false,
		"speed-limit-up-enabled":       false,
		"ratio-limit-enabled":          false,
		"idle-seeding-limit-enabled":   false,
		"download-queue-enabled":       false,
		"seed-queue-enabled":           false,
		"queue-stalled-enabled":        false,
		"start-added-torrents":         true,
		"rename-partial-files":         false, // the file keeps its name while incomplete
		"incomplete-dir-enabled":       false,
		"download-dir":                 opts.Dir,
		"message-level":                2,
		"script-torrent-done-enabled":  true,
		"script-torrent-done-filename": script,
	}
	data, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "settings.json"), data, 0o600); err != nil {
		t.Fatalf("writing transmission settings: %v", err)
	}
	tr := &Transmission{port: port, marker: marker, seeding: make(chan struct{})}
	tr.proc = startProcWith(t, procConfig{onLine: tr.handleLine}, "transmission-cli",
		"-g", cfg, // settings.json above; resume and torrent copies go here too
		"-w", opts.Dir,
		"-p", strconv.Itoa(port),
		"-M",  // no port mapping
		"-B",  // no blocklist
		"-D",  // no download limit
		"-U",  // no upload limit
		"-et", // prefer unencrypted connections, accept either
		"-f", script,
		opts.Torrent,
	)
	waitTCP(t, tr.proc, port, startTimeout)
	return tr
}

// handleLine watches transmission-cli's once-a-second status line, which
// starts with "Seeding," once the torrent is complete.
func (tr *Transmission) handleLine(line string) {
	if strings.HasPrefix(line, "Seeding,") {
		tr.once.Do(func() { close(tr.seeding) })
	}
}

// Port returns the TCP port transmission listens on.
func (tr *Transmission) Port() int { return tr.port }

// Addr returns "127.0.0.1:PORT" for dialling transmission.
func (tr *Transmission) Addr() string { return hostPort(tr.port) }

// Proc returns the underlying process.
func (tr *Transmission) Proc() *proc { return tr.proc }

// WaitFinished waits until transmission has the complete data: its
// torrent-done script ran (a leech), or it reports seeding (a seed whose
// check passed, or a finished leech). It returns an error if it exits
// first or timeout passes.
func (tr *Transmission) WaitFinished(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if _, err := os.Stat(tr.marker); err == nil {
			return nil
		}
		select {
		case <-tr.seeding:
			return nil
		case <-tr.proc.done:
			return fmt.Errorf("transmission exited (%s) before finishing", tr.proc.state())
		case <-deadline.C:
			return fmt.Errorf("transmission not finished after %v", timeout)
		case <-tick.C:
		}
	}
}

// Opentracker is a running opentracker bound to 127.0.0.1.
type Opentracker struct {
	AnnounceURL string // http://127.0.0.1:PORT/announce
	UDPURL      string // udp://127.0.0.1:PORT/announce (BEP 15), same port
	ScrapeURL   string // http://127.0.0.1:PORT/scrape
	Port        int

	proc *proc
}

// startOpentracker starts opentracker for infoHashes (40 hex digits each)
// and returns its HTTP announce URL. See startOpentrackerServer.
func startOpentracker(t testing.TB, infoHashes []string) string {
	t.Helper()
	return startOpentrackerServer(t, infoHashes).AnnounceURL
}

// startOpentrackerServer starts opentracker on 127.0.0.1, TCP and UDP on
// one free port, tracking only infoHashes: Debian's build is
// whitelist-only. It returns once an announce for the first hash is
// authorised, which means the whitelist has been loaded. The tracker
// stops in t.Cleanup.
//
// Run as root, opentracker chroots to its directory and drops to user
// nobody, so the directory is made world-readable and the whitelist is
// named relative to it.
func startOpentrackerServer(t testing.TB, infoHashes []string) *Opentracker {
	t.Helper()
	requireTool(t, "opentracker")
	if len(infoHashes) == 0 {
		t.Fatal("startOpentracker: no info-hashes; Debian's opentracker would refuse every torrent")
	}
	var list strings.Builder
	for _, h := range infoHashes {
		hash, err := metainfo.ParseHash(h)
		if err != nil {
			t.Fatalf("startOpentracker: %q: %v", h, err)
		}
		list.WriteString(hex.EncodeToString(hash[:]))
		list.WriteByte('\n')
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte(list.String()), 0o644); err != nil {
		t.Fatalf("writing whitelist: %v", err)
	}
	port := freeTCPUDPPort(t)
	ps := strconv.Itoa(port)
	o := &Opentracker{
		AnnounceURL: "http://" + hostPort(port) + "/announce",
		UDPURL:      "udp://" + hostPort(port) + "/announce",
		ScrapeURL:   "http://" + hostPort(port) + "/scrape",
		Port:        port,
	}
	// -i applies to the -p and -P that follow it.
	o.proc = startProcWith(t, procConfig{dir: dir}, "opentracker",
		"-i", loopback, "-p", ps, "-P", ps,
		"-d", dir, "-w", "whitelist")
	waitTCP(t, o.proc, port, startTimeout)
	o.waitWhitelist(t, infoHashes[0])
	return o
}

// waitWhitelist polls with a "started" announce until the tracker
// authorises hash, then takes the probe peer off again. ("stopped" alone
// is no probe: opentracker can answer it before its whitelist is loaded.)
func (o *Opentracker) waitWhitelist(t testing.TB, hash string) {
	t.Helper()
	h, err := metainfo.ParseHash(hash)
	if err != nil {
		t.Fatal(err)
	}
	q := "info_hash=" + url.QueryEscape(string(h[:])) +
		"&peer_id=-HA0001-probe0000000&port=1&uploaded=0&downloaded=0&left=0&numwant=0&compact=1&event="
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for {
		body, err := httpGetLoopback(o.AnnounceURL + "?" + q + "started")
		if err == nil && !bytes.Contains(body, []byte("failure reason")) {
			if body, err := httpGetLoopback(o.AnnounceURL + "?" + q + "stopped"); err != nil || bytes.Contains(body, []byte("failure reason")) {
				t.Fatalf("opentracker kept the whitelist probe: %v %q", err, body)
			}
			return
		}
		last = fmt.Sprintf("%v %q", err, body)
		if time.Now().After(deadline) {
			t.Fatalf("opentracker never authorised %s: %s\n%s", hash, last, o.proc.Tail(50))
		}
		select {
		case <-o.proc.done:
			t.Fatalf("opentracker exited (%s):\n%s", o.proc.state(), o.proc.Tail(50))
		case <-tick.C:
		}
	}
}

// ScrapeStats are a tracker's counts for one torrent.
type ScrapeStats struct {
	Complete   int64 `bencode:"complete"`   // seeders
	Incomplete int64 `bencode:"incomplete"` // leechers
	Downloaded int64 `bencode:"downloaded"` // completed downloads ever
}

// Scrape asks the tracker for its counts for infoHash (40 hex digits).
func (o *Opentracker) Scrape(infoHash string) (ScrapeStats, error) {
	h, err := metainfo.ParseHash(infoHash)
	if err != nil {
		return ScrapeStats{}, err
	}
	body, err := httpGetLoopback(o.ScrapeURL + "?info_hash=" + url.QueryEscape(string(h[:])))
	if err != nil {
		return ScrapeStats{}, err
	}
	var resp struct {
		Files map[string]ScrapeStats `bencode:"files"`
	}
	if err := bencode.Unmarshal(body, &resp); err != nil {
		return ScrapeStats{}, fmt.Errorf("decoding scrape %q: %w", body, err)
	}
	return resp.Files[string(h[:])], nil
}

// WaitSwarm waits until the tracker counts at least seeders seeders and
// leechers leechers for infoHash, so that a peer started next is sure to
// be told about them.
func (o *Opentracker) WaitSwarm(t testing.TB, infoHash string, seeders, leechers int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		st, err := o.Scrape(infoHash)
		if err == nil && st.Complete >= seeders && st.Incomplete >= leechers {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tracker swarm for %s: got %+v (err %v), want %d seeders and %d leechers", infoHash, st, err, seeders, leechers)
		}
		select {
		case <-o.proc.done:
			t.Fatalf("opentracker exited (%s):\n%s", o.proc.state(), o.proc.Tail(50))
		case <-tick.C:
		}
	}
}

// httpGetLoopback fetches a 127.0.0.1 URL directly (never through a
// proxy) without keeping connections, so no transport goroutine lingers.
func httpGetLoopback(rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Hostname() != loopback {
		return nil, fmt.Errorf("refusing non-loopback URL %s", rawURL)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	resp, err := c.Get(rawURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	return body, nil
}
