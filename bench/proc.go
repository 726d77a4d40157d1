//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 5 * time.Second
	// rssInterval paces the /proc sampling of anonymous memory.
	rssInterval = 100 * time.Millisecond
	// tailLines is how many output lines a process keeps for error messages.
	tailLines = 30
)

// procSpec describes a process to start.
type procSpec struct {
	name   string   // for messages
	path   string   // executable
	args   []string // arguments after path
	home   string   // private HOME; created if missing
	onLine func(line string)
}

// process is a running child in its own process group. It is stopped
// with its whole group, and dies with the harness (Pdeathsig).
type process struct {
	name    string
	pid     int       // also the process group id
	started time.Time // just before the fork

	out      *lineTail
	outBytes atomic.Int64 // bytes written to its stdout and stderr so far
	hwm      atomic.Int64 // peak RSS (VmHWM) in bytes, as last read or reported
	anonPeak atomic.Int64 // highest RssAnon seen, in bytes

	done  chan struct{}    // closed once reaped and its output drained
	state *os.ProcessState // valid after done; nil if it could not be reaped
	err   error            // cmd.Wait's error; valid after done

	stopOnce sync.Once
}

// startProcess starts spec in a new process group with a private HOME and
// no proxy variables.
func startProcess(spec procSpec) (*process, error) {
	if err := os.MkdirAll(spec.home, 0o755); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.name, err)
	}
	p := &process{name: spec.name, out: &lineTail{}, done: make(chan struct{})}
	emit := func(line string) {
		p.out.add(line)
		if spec.onLine != nil {
			spec.onLine(line)
		}
	}
	stdout, stderr := &lineWriter{emit: emit, count: &p.outBytes}, &lineWriter{emit: emit, count: &p.outBytes}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Dir = spec.home
	cmd.Env = childEnv(spec.home)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second // a stray grandchild must not hold Wait
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.name, err)
	}
	p.pid = cmd.Process.Pid
	go p.sampleRSS()
	go func() {
		p.err = cmd.Wait()
		stdout.flush()
		stderr.flush()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

// childEnv is the harness's environment without proxy variables, with
// HOME and the XDG directories under home.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy",
			"home", "xdg_config_home", "xdg_cache_home", "xdg_data_home":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
	)
}

// sampleRSS follows the process's memory until it ends. The kernel's
// own peak (VmHWM) is read, not sampled, so the ticks only need to catch
// it before the process exits; callers that see a download finish take a
// snapshot at once. Peak RSS also counts the file pages a client maps
// (libtorrent maps its files), which is why the peak of anonymous memory
// (sampled) is tracked as well. wait4's ru_maxrss is no use here: a child
// started with vfork, as os/exec does, inherits the harness's own peak.
func (p *process) sampleRSS() {
	tick := time.NewTicker(rssInterval)
	defer tick.Stop()
	for {
		p.snapshot()
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
	}
}

// snapshot reads the process's memory figures now.
func (p *process) snapshot() {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/status")
	if err != nil {
		return // gone already
	}
	if kb, ok := statusField(data, "VmHWM:"); ok {
		raise(&p.hwm, kb<<10)
	}
	if kb, ok := statusField(data, "RssAnon:"); ok {
		raise(&p.anonPeak, kb<<10)
	}
}

// notePeak records a peak RSS the process reported about itself.
func (p *process) notePeak(bytes int64) { raise(&p.hwm, bytes) }

// raise sets v to x if x is larger.
func raise(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// statusField reads a "Name:   123 kB" line of a /proc status file.
func statusField(data []byte, name string) (int64, bool) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// Done is closed once the process has exited and been reaped.
func (p *process) Done() <-chan struct{} { return p.done }

// stop ends the process group: SIGTERM, then SIGKILL after stopGrace.
// It returns once the leader is reaped, and kills what is left of its
// group. A process that already ended is left alone.
func (p *process) stop() { p.stopWith(syscall.SIGTERM) }

// stopWith is stop with sig instead of SIGTERM. It reports whether the
// leader ended without SIGKILL (or had ended already, or was stopped
// before), which is false only when it needed SIGKILL in this call.
func (p *process) stopWith(sig syscall.Signal) bool {
	clean := true
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(-p.pid, sig)
		timer := time.NewTimer(stopGrace)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
			clean = false
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			<-p.done
		}
		_ = syscall.Kill(-p.pid, syscall.SIGKILL) // hook scripts left in the group
	})
	return clean
}

// waitExit waits up to d for the process to exit by itself, and stops it
// otherwise.
func (p *process) waitExit(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.stop()
	}
}

// cpu gives the user plus system time of an ended process.
func (p *process) cpu() (time.Duration, error) {
	<-p.done
	if p.state == nil {
		return 0, fmt.Errorf("%s: not reaped: %v", p.name, p.err)
	}
	ru, ok := p.state.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, errors.New("no rusage on this platform")
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for user space whatever the kernel's own tick.
const userHZ = 100

// cpuSoFar gives the user plus system time of the running process, from
// /proc/PID/stat, in 10 ms steps. It counts every thread of the process,
// not its children.
func (p *process) cpuSoFar() (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	return statCPU(data)
}

// statCPU reads utime and stime, fields 14 and 15, from a /proc stat
// line. The command name (field 2) may hold spaces and parentheses, so
// the fields are counted from its closing parenthesis.
func statCPU(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// written gives wchar from /proc/PID/io: the bytes the process has passed
// to write(2), writev(2), sendfile(2) and their kin, to any file or socket,
// summed over all its threads. See bench/README.md for why comparison 4
// may use it as a network counter.
func (p *process) written() (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/io")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("wchar:")); ok {
			return strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
		}
	}
	return 0, errors.New("no wchar in /proc io")
}

// exitErr describes how an ended process failed, with its last output.
func (p *process) exitErr(what string) error {
	return fmt.Errorf("%s %s (%v); last output:\n%s", p.name, what, p.err, p.out.String())
}

// lineTail keeps the last tailLines lines of output.
type lineTail struct {
	mu    sync.Mutex
	lines []string // oldest first, at most 2*tailLines
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) >= 2*tailLines {
		t.lines = append(t.lines[:0], t.lines[len(t.lines)-tailLines:]...)
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines[max(0, len(t.lines)-tailLines):]
	return "  " + strings.Join(lines, "\n  ")
}

// lineWriter splits output into lines at '\n' or '\r' and passes on the
// non-empty ones. os/exec writes stdout and stderr from two goroutines.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte // bytes after the last line break
	emit    func(string)
	count   *atomic.Int64 // every byte written is added here; nil for none
}

const maxLine = 64 << 10

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	if w.count != nil {
		w.count.Add(int64(n))
	}
	for {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			w.partial = append(w.partial, b...)
			if len(w.partial) > maxLine {
				w.flushLocked()
			}
			return n, nil
		}
		w.partial = append(w.partial, b[:i]...)
		w.flushLocked()
		b = b[i+1:]
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
}

func (w *lineWriter) flushLocked() {
	if line := strings.TrimSpace(string(w.partial)); line != "" {
		w.emit(line)
	}
	w.partial = w.partial[:0]
}
