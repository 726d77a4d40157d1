package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

func TestMain(m *testing.M) {
	// The test binary is tbproxy itself when a test runs it as the
	// command (see runMain), to see what a user sees: stderr and the
	// exit status.
	if os.Getenv("TBPROXY_TEST_AS_MAIN") == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"16384", 16384, true},
		{"256KiB", 256 << 10, true},
		{"256K", 256 << 10, true},
		{"1MiB", 1 << 20, true},
		{"1.5GiB", 3 << 29, true},
		{"10GiB", 10 << 30, true},
		{"10GB", 10e9, true},
		{" 2 MiB ", 2 << 20, true},
		{"", 0, false},
		{"-1", 0, false},
		{"abc", 0, false},
		{"1XB", 0, false},
		{"NaN", 0, false},
		{"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v", tt.in, got, err)
			}
		})
	}
}

func TestParseArgsInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	o := fs.String("o", "", "")
	v := fs.Bool("v", false, "")
	pos, err := parseArgs(fs, []string{"a", "-o", "out", "b", "-v", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pos, []string{"a", "b", "c"}) || *o != "out" || !*v {
		t.Fatalf("pos %q o %q v %v", pos, *o, *v)
	}
}

func TestUsage(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, io.Discard, &stderr); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"torrent", "-cache-size", "-mitm", "-listen", "-peer-listen", "-data-dir"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("help does not mention %s:\n%s", want, stderr.String())
		}
	}
	if err := run(context.Background(), []string{"bogus"}, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command: %v", err)
	}
}

func TestTorrentCreateAndShow(t *testing.T) {
	dir := t.TempDir()
	content := filepath.Join(dir, "episode.mp3")
	if err := os.WriteFile(content, bytes.Repeat([]byte("podcast "), 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "episode.torrent")
	var stdout bytes.Buffer
	args := []string{"torrent", "create", content, "--piece-length", "64KiB", "-o", out,
		"--tracker", "http://127.0.0.1:6969/announce,http://127.0.0.1:6970/announce", "--tracker", "udp://127.0.0.1:6969",
		"--web-seed", "http://127.0.0.1:8000/", "--comment", "hello\nworld", "--no-date"}
	if err := run(context.Background(), args, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(stdout.String())
	if len(lines) != 2 || lines[0] != out || len(lines[1]) != 40 {
		t.Fatalf("create printed %q", stdout.String())
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"torrent", "show", "--json", out}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	var s torrentSummary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"http://127.0.0.1:6969/announce", "http://127.0.0.1:6970/announce"}, {"udp://127.0.0.1:6969"}}
	if s.InfoHash != lines[1] || s.PieceLength != 64<<10 || s.TotalLength != 800_000 || s.NumPieces != 13 ||
		!reflect.DeepEqual(s.Trackers, want) || s.Created != "" || s.Comment != "hello\nworld" {
		t.Fatalf("show: %+v", s)
	}
	// The plain form quotes text that could upset a terminal.
	stdout.Reset()
	if err := run(context.Background(), []string{"torrent", "show", out}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), `"hello\nworld"`) {
		t.Fatalf("comment not quoted:\n%s", stdout.String())
	}
	// The magnet it prints shows the same torrent.
	stdout.Reset()
	if err := run(context.Background(), []string{"torrent", "show", "--json", s.Magnet}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	var ms torrentSummary
	if err := json.Unmarshal(stdout.Bytes(), &ms); err != nil || ms.InfoHash != s.InfoHash || ms.Name != "episode.mp3" {
		t.Fatalf("magnet show: %+v, %v", ms, err)
	}
}

func TestTorrentCreateErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no path", []string{"torrent", "create"}, "usage"},
		{"missing path", []string{"torrent", "create", "/nonexistent/x"}, "no such file"},
		{"bad piece length", []string{"torrent", "create", "--piece-length", "1000", "main.go"}, "multiple of 16384"},
		{"bad size", []string{"torrent", "create", "--piece-length", "lots", "main.go"}, "invalid size"},
		{"show garbage", []string{"torrent", "show", "main.go"}, "invalid torrent"},
		{"show bad magnet", []string{"torrent", "show", "magnet:?dn=x"}, "magnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestCACommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ca", "path", "--dir", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSpace(out.String())
	if path != filepath.Join(dir, "ca.pem") {
		t.Fatalf("path %q", path)
	}
	st, err := os.Stat(filepath.Join(dir, "ca-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"ca", "export", "--dir", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	pem1 := out.String()
	if !strings.HasPrefix(pem1, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("export: %q", pem1)
	}
	out.Reset()
	if err := run(context.Background(), []string{"ca", "rotate", "--dir", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	run(context.Background(), []string{"ca", "export", "--dir", dir}, &out, io.Discard)
	if out.String() == pem1 {
		t.Fatal("rotate kept the same CA")
	}
	if err := run(context.Background(), []string{"ca", "bogus"}, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Fatalf("unknown action: %v", err)
	}
}

// TestCommandHelp: every command's --help gives its synopsis, with what
// it takes besides flags, and then its flags; so does a wrong argument.
func TestCommandHelp(t *testing.T) {
	caActions := []string{"path", "export", "install", "uninstall", "rotate", "-dir"}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		// ca's --help lists the actions, as a missing action does.
		{[]string{"ca", "--help"}, caActions},
		{[]string{"ca", "install", "-h"}, caActions},
		{[]string{"ca"}, caActions},
		{[]string{"run", "--help"}, []string{"Usage: tbproxy [run] [flags]", "-listen"}},
		{[]string{"run", "stray"}, []string{`unexpected argument "stray"`, "Usage: tbproxy [run]", "-listen"}},
		{[]string{"publish", "-h"}, []string{"--dir DIR | DIR | --upstream URL", "-min-size"}},
		{[]string{"publish"}, []string{"tbproxy publish: ", "--upstream URL", "-min-size"}},
		{[]string{"tracker", "--help"}, []string{"Usage: tbproxy tracker [flags]", "-interval"}},
		{[]string{"tracker", "stray"}, []string{`unexpected argument "stray"`, "-interval"}},
		{[]string{"get", "--help"}, []string{"URL|MAGNET", "-data-dir"}},
		{[]string{"get"}, []string{"want exactly one URL", "URL|MAGNET", "-data-dir"}},
		{[]string{"torrent", "create", "--help"}, []string{"torrent create [flags] PATH", "-piece-length"}},
		{[]string{"torrent", "show"}, []string{"want exactly one TORRENT", "TORRENT|MAGNET", "-json"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var help bytes.Buffer
			err := run(context.Background(), tt.args, io.Discard, &help)
			if !errors.Is(err, errUsage) && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("%v, want a usage error", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(help.String(), want) {
					t.Errorf("the usage does not say %q:\n%s", want, help.String())
				}
			}
		})
	}
}

// writeShow writes content as show.mp3 in a new temporary directory and
// builds its torrent, in 64 KiB pieces.
func writeShow(t *testing.T, content []byte) (dir string, _ []byte, m *metainfo.MetaInfo) {
	t.Helper()
	dir = t.TempDir()
	file := filepath.Join(dir, "show.mp3")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), file, metainfo.BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return dir, content, m
}

func TestGet(t *testing.T) {
	dir, content, m := writeShow(t, bytes.Repeat([]byte("0123456789abcdef"), 100_000))
	torrent, _ := m.Marshal()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/show.mp3" && strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			w.Header().Set("Content-Type", "application/x-bittorrent")
			w.Write(torrent)
			return
		}
		http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(content))
	}))
	defer origin.Close()
	for _, tt := range []struct{ name, path string }{{"torrent", "/show.mp3"}, {"plain", "/plain.bin"}} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.name+".out")
			args := []string{"get", "-q", "--data-dir", filepath.Join(dir, "cache"), "--peer-listen", "127.0.0.1:0", "-o", out, origin.URL + tt.path}
			if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
		})
	}
	// A magnet link: the metadata comes from a peer (BEP 9), then the file.
	seed, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	st := swarm.NewMemoryStorage(&m.Info)
	if err := st.Fill(bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.AddTorrent(m, st, swarm.TorrentOptions{NoTrackers: true}); err != nil {
		t.Fatal(err)
	}
	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%s&dn=show.mp3&x.pe=%s", m.InfoHash, seed.Addr())
	out := filepath.Join(dir, "magnet.out")
	args := []string{"get", "-q", "--data-dir", filepath.Join(dir, "cache2"), "--peer-listen", "127.0.0.1:0", "-o", out, magnet}
	if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("magnet download: %d bytes, %v", len(got), err)
	}
}

// applyConfigText applies text, as a config file, to fs.
func applyConfigText(t *testing.T, fs *flag.FlagSet, text string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, true); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	os.WriteFile(path, []byte("listen = \"127.0.0.1:9999\"\ncache-size = \"2GiB\"\nmitm-exclude = [\"a.example\", \"*.b.example\"]\nallow-private = true\nencryption = \"require\"\nmagnet-timeout = \"3s\"\n"), 0o644)
	fs, o := runProxyFlags(io.Discard)
	p, explicit := configPath([]string{"--listen", "127.0.0.1:1", "--config", path})
	if p != path || !explicit {
		t.Fatalf("configPath = %q %v", p, explicit)
	}
	if err := applyConfigFile(fs, p, explicit); err != nil {
		t.Fatal(err)
	}
	if o.listen != "127.0.0.1:9999" || o.cacheSize != 2<<30 || len(o.mitmExclude) != 2 || !o.allowPrivate || o.encryption != swarm.EncryptionRequire || o.magnetWait != 3*time.Second {
		t.Fatalf("from the file: %+v", o)
	}
	if cfg, err := o.proxyConfig(); err != nil || cfg.MagnetTimeout != 3*time.Second {
		t.Fatalf("proxyConfig: MagnetTimeout %v, %v", cfg.MagnetTimeout, err)
	}
	// Flags given on the command line win.
	if _, err := parseArgs(fs, []string{"--listen", "127.0.0.1:1"}); err != nil || o.listen != "127.0.0.1:1" {
		t.Fatalf("flag did not override: %q %v", o.listen, err)
	}
	if _, err := parseArgs(fs, []string{"--encryption", "forced"}); err == nil {
		t.Fatal("--encryption forced was accepted")
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("lisen = \"x\"\n"), 0o644)
	fs, _ = runProxyFlags(io.Discard)
	if err := applyConfigFile(fs, bad, true); err == nil || !strings.Contains(err.Error(), `"lisen"`) {
		t.Fatalf("unknown key: %v", err)
	}
	fs, _ = runProxyFlags(io.Discard)
	if err := applyConfigFile(fs, filepath.Join(dir, "missing.toml"), false); err != nil {
		t.Fatalf("a missing default file is fine: %v", err)
	}
	if err := applyConfigFile(fs, filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Fatal("a missing named file is an error")
	}
	fs, o = runProxyFlags(io.Discard)
	if _, err := parseArgs(fs, []string{"--magnet-timeout", "0s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.proxyConfig(); err == nil || !strings.Contains(err.Error(), "magnet-timeout") {
		t.Fatalf("a zero magnet timeout: %v", err)
	}
}

// TestListenersBeyondLoopback: the proxy and the status page listen beyond
// loopback only with the client networks named (HARDENING 47).
func TestListenersBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		args []string
		bad  string // what the error names; "" when accepted
	}{
		{nil, ""},
		{[]string{"--listen", "0.0.0.0:8080"}, "--listen"},
		{[]string{"--ui-listen", "0.0.0.0:8081"}, "--ui-listen"},
		{[]string{"--ui-listen", ":8081"}, "--ui-listen"},
		{[]string{"--ui-listen", "192.0.2.1:8081"}, "--ui-listen"},
		{[]string{"--ui-listen", "localhost:8081"}, ""},
		{[]string{"--ui-listen", "[::1]:8081"}, ""},
		{[]string{"--ui-listen", ""}, ""},
		{[]string{"--ui-listen", "0.0.0.0:8081", "--allow-clients", "192.0.2.0/24"}, ""},
	} {
		fs, o := runProxyFlags(io.Discard)
		if _, err := parseArgs(fs, tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := o.proxyConfig()
		if tc.bad == "" && err != nil || tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad+" ")) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.bad)
		}
	}
}

// TestTrackerRateFlags: publish and tracker refuse a negative rate limit
// before they listen on anything.
func TestTrackerRateFlags(t *testing.T) {
	for _, args := range [][]string{
		{"tracker", "--listen", "127.0.0.1:0", "--rate", "-1"},
		{"publish", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--tracker-rate", "-0.5"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Errorf("%v: %v, want a negative-rate error", args, err)
		}
	}
}

// TestPublishArgs: publish takes its directory as --dir or as its one
// argument, and says what is wrong with anything else.
func TestPublishArgs(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing to publish", nil, "say what to publish"},
		{"two sources", []string{"--dir", dir, "--upstream", "http://127.0.0.1:1/"}, "exclude each other"},
		{"directory twice", []string{"--dir", dir, dir}, "unexpected argument"},
		{"two directories", []string{dir, dir}, "unexpected argument"},
		{"directory and upstream", []string{"--upstream", "http://127.0.0.1:1/", dir}, "unexpected argument"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			err := run(context.Background(), append([]string{"publish"}, tt.args...), io.Discard, &stderr)
			if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("err %v, stderr %q; want usage saying %q", err, stderr.String(), tt.want)
			}
		})
	}

	// The directory as the one argument is published.
	content := bytes.Repeat([]byte("tbproxy publish "), 1<<17) // 2 MiB, over --min-size
	if err := os.WriteFile(filepath.Join(dir, "ep.bin"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"publish", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), dir}, pw, io.Discard)
		pw.Close()
	}()
	defer func() {
		cancel()
		go io.Copy(io.Discard, pr)
		if err := <-done; err != nil {
			t.Errorf("publish: %v", err)
		}
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("publish's first line: %v", err)
	}
	fields := strings.Fields(line)
	first := fields[len(fields)-1]
	if !strings.Contains(line, dir) || !strings.HasPrefix(first, "http://127.0.0.1:") {
		t.Fatalf("publish says %q", line)
	}
	req, _ := http.NewRequest(http.MethodGet, first+"/ep.bin", nil)
	req.Header.Set("Accept", "application/x-bittorrent, */*")
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Content-Type") == "application/x-bittorrent" {
			m, err := metainfo.Parse(body)
			if err != nil || m.Info.TotalLength != int64(len(content)) {
				t.Fatalf("metainfo for ep.bin: %v", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ep.bin was never offered as a torrent: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInterruptDuringStartup: an interrupt (a cancelled context) that
// arrives while 'tbproxy run' is still starting makes it exit: the proxy,
// closed before its server was up, does not serve after all.
func TestInterruptDuringStartup(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the interrupt came during startup
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--listen", "127.0.0.1:0", "--ui-listen", "",
			"--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, io.Discard, io.Discard)
	}()
	select {
	case err := <-done:
		t.Logf("run returned: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("tbproxy run did not exit within 15 s of an interrupt received during startup")
	}
}
