package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// runMain runs the test binary as the tbproxy command with args (see
// TestMain), with its own empty XDG directories, and returns its stderr
// and exit status.
func runMain(t *testing.T, args ...string) (stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TBPROXY_TEST_AS_MAIN=1",
		"XDG_CONFIG_HOME="+t.TempDir(), "XDG_CACHE_HOME="+t.TempDir(),
		// Under -race, the child would otherwise wait a second as it exits.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		code = exit.ExitCode()
	default:
		t.Fatalf("tbproxy %q: %v (stderr %q)", args, err, errb.String())
	}
	return errb.String(), code
}

// TestCLIErrorsAndExitCodes: a wrong command line is reported once, then
// the usage, with exit status 2; -h or --help anywhere prints the usage
// with status 0; any other error is reported once with status 1. A bad
// duration or size names the flag and says what it takes.
func TestCLIErrorsAndExitCodes(t *testing.T) {
	listen := []string{"--listen", "127.0.0.1:0", "--ui-listen", "", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}
	for _, tt := range []struct {
		args  []string
		code  int
		once  string // said exactly once
		usage string // the usage printed, "" for none
	}{
		// Every run carries listen, so that one that starts by mistake listens on loopback only.
		{append([]string{"run", "--bogus"}, listen...), 2, "flag provided but not defined: -bogus", "Usage: tbproxy [run]"},
		{append([]string{"--bogus"}, listen...), 2, "flag provided but not defined: -bogus", "Usage: tbproxy [run]"},
		{append([]string{"run", "--cache-size", "abc"}, listen...), 2, `-cache-size: invalid size "abc": want a number with an optional unit`, "Usage: tbproxy [run]"},
		{append([]string{"run", "--cache-size", "0"}, listen...), 2, `-cache-size: size "0": must be positive`, "Usage: tbproxy [run]"},
		{append([]string{"run", "--stall-budget", "x"}, listen...), 2, `-stall-budget: invalid duration "x": want a number with a unit, such as 500ms`, "Usage: tbproxy [run]"},
		{append([]string{"run", "--magnet-timeout", "8"}, listen...), 2, `-magnet-timeout: invalid duration "8"`, "Usage: tbproxy [run]"},
		{append([]string{"run", "stray"}, listen...), 2, `unexpected argument "stray"`, "Usage: tbproxy [run]"},
		{[]string{"get", "--bogus", "http://127.0.0.1:1/x"}, 2, "flag provided but not defined: -bogus", "Usage: tbproxy get"},
		{[]string{"get", "--stall-budget", "soon", "http://127.0.0.1:1/x"}, 2, `-stall-budget: invalid duration "soon"`, "Usage: tbproxy get"},
		{[]string{"tracker", "--interval", "5", "--listen", "127.0.0.1:0"}, 2, `-interval: invalid duration "5"`, "Usage: tbproxy tracker"},
		{[]string{"ca", "bogus"}, 2, `unknown action "bogus"`, "Usage: tbproxy ca"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`, "Usage: tbproxy [COMMAND]"},
		{append([]string{"run", "-h"}, listen...), 0, "Usage: tbproxy [run]", "Usage: tbproxy [run]"},
		{append(listen, "--help"), 0, "Usage: tbproxy [run]", "Usage: tbproxy [run]"},
		{[]string{"--help"}, 0, "Usage: tbproxy [COMMAND]", "Usage: tbproxy [COMMAND]"},
		{[]string{"get", "http://127.0.0.1:1/x", "-h"}, 0, "Usage: tbproxy get", "Usage: tbproxy get"},
		{[]string{"torrent", "create", "--help"}, 0, "Usage: tbproxy torrent create", "Usage: tbproxy torrent create"},
		{[]string{"ca", "install", "-h"}, 0, "Usage: tbproxy ca", "Usage: tbproxy ca"},
		{append([]string{"run", "--magnet-timeout", "0s"}, listen...), 1, "tbproxy: --magnet-timeout 0s: must be positive", ""},
		{append([]string{"run", "--parent-proxy", "socks5://127.0.0.1:1080"}, listen...), 1, `tbproxy: --parent-proxy: parent proxy "socks5://127.0.0.1:1080": only http:// parents are supported`, ""},
		{append([]string{"run", "--parent-proxy", "http://proxy.corp"}, listen...), 1, "needs a host and a port", ""},
	} {
		name, _, _ := strings.Cut(strings.Join(tt.args, " "), " --listen")
		t.Run(name, func(t *testing.T) {
			stderr, code := runMain(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			if n := strings.Count(stderr, tt.once); n != 1 {
				t.Errorf("%q said %d times, want once", tt.once, n)
			}
			if tt.usage != "" && !strings.Contains(stderr, tt.usage) {
				t.Errorf("no usage (%q)", tt.usage)
			}
			if tt.usage == "" && strings.Contains(stderr, "Usage:") {
				t.Errorf("usage printed for an error that is not one of usage")
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", stderr)
			}
		})
	}
}

// unwritableDirs are directories that exist but in which no file can be
// made. Root writes whatever the mode bits say, so a mode 0555 directory
// is one only for other users; a procfs directory is one for everyone.
func unwritableDirs(t *testing.T) map[string]string {
	t.Helper()
	dirs := map[string]string{}
	if os.Geteuid() != 0 {
		ro := filepath.Join(t.TempDir(), "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		dirs["mode 0555"] = ro
	}
	if st, err := os.Stat("/proc/self"); err == nil && st.IsDir() {
		dirs["procfs"] = "/proc/self"
	}
	if len(dirs) == 0 {
		t.Skip("running as root without /proc: no directory here is unwritable")
	}
	return dirs
}

// TestDataDirNotWritable: run and get stop at startup, with an error that
// says so, when the data directory cannot be written, as when it cannot
// be made; run no longer starts and fails its downloads.
func TestDataDirNotWritable(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dirs := unwritableDirs(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs["under a file"] = filepath.Join(file, "data")
	for name, dir := range dirs {
		want := "the data directory " + dir + " is not writable"
		if name == "under a file" {
			want = "not a directory"
		}
		for _, args := range [][]string{
			{"run", "--listen", "127.0.0.1:0", "--ui-listen", "", "--peer-listen", "127.0.0.1:0", "--data-dir", dir},
			{"get", "-q", "--peer-listen", "127.0.0.1:0", "--data-dir", dir, "-o", filepath.Join(t.TempDir(), "out"),
				"magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&x.pe=127.0.0.1:1"},
		} {
			t.Run(name+"/"+args[0], func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := run(ctx, args, io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), want) || ctx.Err() != nil {
					t.Fatalf("%v, want at once an error saying %q", err, want)
				}
				if code := exitCode(err, io.Discard); code != 1 {
					t.Fatalf("exit status %d, want 1", code)
				}
			})
		}
	}
}

// TestCacheSize: --cache-size 0 (from the flag or the config file) is
// refused, rather than shown as 0 B and taken as the cache's default.
func TestCacheSize(t *testing.T) {
	for _, v := range []string{"0", "0B", "0GiB", "0.1"} {
		fs, _ := runProxyFlags(io.Discard)
		if _, err := parseArgs(fs, []string{"--cache-size", v}); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("--cache-size %s: %v, want a usage error saying it must be positive", v, err)
		}
		fs, _ = runProxyFlags(io.Discard)
		path := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(path, []byte(fmt.Sprintf("cache-size = %q\n", v)), 0o644)
		if err := applyConfigFile(fs, path, true); err == nil || !strings.Contains(err.Error(), "cache-size: size") {
			t.Errorf("cache-size = %q in the config file: %v", v, err)
		}
	}
	fs, o := runProxyFlags(io.Discard)
	if _, err := parseArgs(fs, []string{"--cache-size", "1MiB"}); err != nil || o.cacheSize != 1<<20 {
		t.Fatalf("--cache-size 1MiB: %d, %v", o.cacheSize, err)
	}
	if got := fs.Lookup("cache-size").DefValue; got != "10GiB" {
		t.Errorf("default shown as %q, want 10GiB", got)
	}
}

// TestGetMagnetWithoutSources: a magnet with no tracker and no peer, and
// no DHT to find peers in, fails at once with an error that says what is
// missing, instead of waiting for metadata that can never come.
func TestGetMagnetWithoutSources(t *testing.T) {
	const ih = "0123456789abcdef0123456789abcdef01234567"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	args := []string{"get", "-q", "--data-dir", filepath.Join(dir, "cache"), "--peer-listen", "127.0.0.1:0",
		"-o", filepath.Join(dir, "out"), "magnet:?xt=urn:btih:" + ih + "&dn=x&ws=http://127.0.0.1:1/x"}
	err := run(ctx, args, io.Discard, io.Discard)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "no tracker (tr=) and no peer (x.pe=), and the DHT is off") {
		t.Fatalf("%v, want at once an error naming what is missing", err)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	for _, tt := range []struct {
		name   string
		magnet string
		dht    bool
		ok     bool
	}{
		{"nothing", "magnet:?xt=urn:btih:" + ih, false, false},
		{"web seed only", "magnet:?xt=urn:btih:" + ih + "&ws=http://127.0.0.1:1/", false, false},
		{"bad peer only", "magnet:?xt=urn:btih:" + ih + "&x.pe=nonsense", false, false},
		{"tracker", "magnet:?xt=urn:btih:" + ih + "&tr=http://127.0.0.1:1/announce", false, true},
		{"peer", "magnet:?xt=urn:btih:" + ih + "&x.pe=127.0.0.1:1", false, true},
		{"dht", "magnet:?xt=urn:btih:" + ih, true, true},
	} {
		mg, err := metainfo.ParseMagnet(tt.magnet)
		if err != nil {
			t.Fatal(err)
		}
		var peers []netip.AddrPort
		if a, err := netip.ParseAddrPort(mg.Params.Get("x.pe")); err == nil {
			peers = append(peers, a)
		}
		if err := magnetSources(mg, peers, tt.dht); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// TestCAUninstallNeedsRoot: uninstalling the CA from a store the user
// cannot change says so, as install does, and runs nothing.
func TestCAUninstallNeedsRoot(t *testing.T) {
	for name, ro := range unwritableDirs(t) {
		for _, tt := range []struct {
			name  string
			store systemStore
		}{
			{"CA directory", systemStore{caFile: filepath.Join(ro, "tbproxy.crt"), certsDir: t.TempDir()}},
			{"certificates directory", systemStore{caFile: filepath.Join(t.TempDir(), "missing", "tbproxy.crt"), certsDir: ro}},
		} {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				updated := false
				tt.store.update = func(io.Writer, io.Writer) error { updated = true; return nil }
				err := tt.store.uninstall(io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), "uninstalling the CA (run as root): "+ro) || updated {
					t.Fatalf("%v (update run: %v), want a run-as-root error and nothing run", err, updated)
				}
			})
		}
	}
	// Where it can, it removes the CA and updates the store.
	s := systemStore{caFile: filepath.Join(t.TempDir(), "tbproxy.crt"), certsDir: t.TempDir()}
	updated := 0
	s.update = func(io.Writer, io.Writer) error { updated++; return nil }
	if err := s.install([]byte("pem"), io.Discard, io.Discard); err != nil || updated != 1 {
		t.Fatalf("install: %v, %d updates", err, updated)
	}
	if err := s.uninstall(io.Discard, io.Discard); err != nil || updated != 2 {
		t.Fatalf("uninstall: %v, %d updates", err, updated)
	}
	if _, err := os.Stat(s.caFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the CA is still there: %v", err)
	}
	for _, dir := range []string{filepath.Dir(s.caFile), s.certsDir} {
		if des, _ := os.ReadDir(dir); len(des) != 0 {
			t.Fatalf("left in %s: %v", dir, des)
		}
	}
}

// TestCacheLogComponentOnce: the cache's log lines from run say
// component=cache once.
func TestCacheLogComponentOnce(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	// An entry without metainfo: the cache logs its removal as it opens.
	if err := os.Mkdir(filepath.Join(dir, "0123456789abcdef0123456789abcdef01234567"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--listen", "127.0.0.1:0", "--ui-listen", "", "--peer-listen", "127.0.0.1:0", "--data-dir", dir}, pw, &stderr)
		pw.Close()
	}()
	_, err := bufio.NewReader(pr).ReadString('\n') // up: the cache is open
	cancel()
	go io.Copy(io.Discard, pr)
	if rerr := <-done; err != nil || rerr != nil {
		t.Fatalf("run: %v, %v", err, rerr)
	}
	var line string
	for l := range strings.Lines(stderr.String()) {
		if strings.Contains(l, "unusable cache entry") {
			line = l
		}
	}
	if n := strings.Count(line, "component=cache"); n != 1 {
		t.Fatalf("component=cache %d times in %q, want once; stderr:\n%s", n, line, stderr.String())
	}
}

// TestProgressFirstRate: the progress bar's first rate is the bytes over
// the time since the download started, not over the microseconds since
// the first of them arrived (tens of GB/s).
func TestProgressFirstRate(t *testing.T) {
	const total = 256 << 10
	var stderr bytes.Buffer
	body := &slowStart{wait: 200 * time.Millisecond, r: bytes.NewReader(make([]byte, total))}
	dest := filepath.Join(t.TempDir(), "out")
	if err := save(dest, io.Discard, body, total, false, &stderr, nil); err != nil {
		t.Fatal(err)
	}
	rates := regexp.MustCompile(`([0-9.]+) ([kMGTP]?B)/s`).FindAllStringSubmatch(stderr.String(), -1)
	if len(rates) == 0 {
		t.Fatalf("no rate shown:\n%q", stderr.String())
	}
	unit := map[string]float64{"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15}
	for _, m := range rates {
		v, _ := strconv.ParseFloat(m[1], 64)
		// 256 KiB in no less than 200 ms: 1.3 MB/s at most.
		if rate := v * unit[m[2]]; rate > 2e6 {
			t.Fatalf("rate %s %s/s shown for 256 KiB over 200 ms:\n%q", m[1], m[2], stderr.String())
		}
	}
}

// slowStart is a reader whose first bytes come after wait, as a
// download's do.
type slowStart struct {
	wait    time.Duration
	started bool
	r       io.Reader
}

func (s *slowStart) Read(p []byte) (int, error) {
	if !s.started {
		s.started = true
		time.Sleep(s.wait)
	}
	return s.r.Read(p)
}

// lockedBuffer is a bytes.Buffer that goroutines may write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
