//go:build linux

package integration

// End-to-end tests of `tbproxy run` (issue #6): the real binary between
// real HTTP clients (curl, wget, Python's urllib) and an in-test origin
// that answers the BitTorrent negotiation, with a python3-libtorrent seed
// as the swarm. Everything listens on 127.0.0.1.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
)

const (
	// proxyPieceLen is the piece length of every torrent here.
	proxyPieceLen = 256 << 10
	// proxyClientTimeout bounds one client run (curl --max-time and the like).
	proxyClientTimeout = 120 * time.Second
	// proxyIdleTimeout bounds the wait for /status.json to show no transfer.
	proxyIdleTimeout = 15 * time.Second
	// torrentType is the media type the negotiation is about.
	torrentType = "application/x-bittorrent"
)

// The tbproxy binary is built once per test run.
var tbproxyBuild struct {
	once sync.Once
	path string
	err  error
}

// tbproxyBinary builds ./cmd/tbproxy once per test binary and returns its
// path. It goes beside the test binary, which `go test` keeps in its own
// work directory and removes afterwards, so nothing is left behind.
func tbproxyBinary(t testing.TB) string {
	t.Helper()
	b := &tbproxyBuild
	b.once.Do(func() {
		parent := ""
		if exe, err := os.Executable(); err == nil {
			parent = filepath.Dir(exe)
		}
		dir, err := os.MkdirTemp(parent, "tbproxy-bin-")
		if err != nil {
			if dir, err = os.MkdirTemp("", "tbproxy-bin-"); err != nil {
				b.err = err
				return
			}
		}
		b.path = filepath.Join(dir, "tbproxy")
		cmd := exec.Command("go", "build", "-o", b.path, "./cmd/tbproxy")
		cmd.Dir = ".." // the module root; tests run in integration/
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/tbproxy: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// tbOpts configures startTBProxy.
type tbOpts struct {
	dataDir string   // empty: a fresh temporary directory
	ui      bool     // also serve the status page on its own port
	extra   []string // more flags
}

// tbProxy is a running `tbproxy run`.
type tbProxy struct {
	proc    *proc
	addr    string // 127.0.0.1:PORT of the proxy
	uiAddr  string // 127.0.0.1:PORT of the status page, or ""
	peer    string // 127.0.0.1:PORT of the engine's peer listener
	dataDir string
}

// startTBProxy starts the binary with its own data directory and ports and
// returns once /healthz answers. TBPROXY_DEBUG=1 logs at debug level.
func startTBProxy(t testing.TB, o tbOpts) *tbProxy {
	t.Helper()
	bin := tbproxyBinary(t)
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	p := &tbProxy{dataDir: o.dataDir}
	uiListen := ""
	if o.ui {
		uiListen = hostPort(0)
	}
	level := "info"
	if os.Getenv("TBPROXY_DEBUG") != "" {
		level = "debug"
	}
	args := []string{"run",
		"--listen", hostPort(0),
		"--ui-listen=" + uiListen,
		"--data-dir", o.dataDir,
		"--peer-listen", hostPort(0),
		"--allow-private",
		"--log-level", level,
	}
	args = append(args, o.extra...)
	// It binds ports of its own and prints them: ports picked free
	// beforehand could be taken meanwhile by another process's.
	var (
		mu           sync.Mutex
		addr, uiAddr string // guarded by mu
		peer         string // guarded by mu
		once         sync.Once
	)
	said := make(chan struct{})
	onLine := func(line string) {
		line = strings.TrimSpace(line)
		mu.Lock()
		defer mu.Unlock()
		if a, ok := strings.CutPrefix(line, "tbproxy is listening on "); ok {
			addr = a
		}
		if a, ok := strings.CutPrefix(line, "status:   http://"); ok {
			uiAddr = strings.TrimSuffix(a, "/")
		}
		if a, ok := strings.CutPrefix(line, "peers on "); ok {
			peer, _, _ = strings.Cut(a, ",")
			once.Do(func() { close(said) }) // the last line about where it listens
		}
	}
	p.proc = startProcWith(t, procConfig{onLine: onLine}, bin, args...)
	select {
	case <-said:
	case <-p.proc.Done():
		t.Fatalf("tbproxy exited (%s) before it said where it listens:\n%s", p.proc.state(), p.proc.Tail(50))
	case <-time.After(startTimeout):
		t.Fatalf("tbproxy did not say where it listens within %v:\n%s", startTimeout, p.proc.Tail(50))
	}
	mu.Lock()
	p.addr, p.uiAddr, p.peer = addr, uiAddr, peer
	mu.Unlock()
	if p.addr == "" || (o.ui && p.uiAddr == "") {
		t.Fatalf("tbproxy did not print its addresses:\n%s", p.proc.Tail(50))
	}
	deadline := time.Now().Add(startTimeout)
	for {
		body, err := httpGetLoopback("http://" + p.addr + "/healthz")
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("tbproxy not healthy within %v: %v\n%s", startTimeout, err, p.proc.Tail(50))
		}
		select {
		case <-p.proc.Done():
			t.Fatalf("tbproxy exited (%s) before it was healthy:\n%s", p.proc.state(), p.proc.Tail(50))
		case <-time.After(pollInterval):
		}
	}
}

// proxyStatus is the part of /status.json these tests read.
type proxyStatus struct {
	Transfers []struct {
		URL        string `json:"url"`
		Sent       int64  `json:"sent"`
		FromPeers  int64  `json:"bytes_from_peers"`
		FromOrigin int64  `json:"bytes_from_origin"`
	} `json:"transfers"`
	Transformed int64 `json:"requests_transformed"`
	Passed      int64 `json:"requests_passed_through"`
	Fallbacks   int64 `json:"requests_fallback"`
	Magnets     int64 `json:"requests_transformed_from_magnet"`
	BytesServed int64 `json:"bytes_served_from_torrents"`
}

// status reads /status.json from the status port when there is one, else
// from the proxy port (as a direct request).
func (p *tbProxy) status(t testing.TB) proxyStatus {
	t.Helper()
	addr := p.addr
	if p.uiAddr != "" {
		addr = p.uiAddr
	}
	body, err := httpGetLoopback("http://" + addr + "/status.json")
	if err != nil {
		t.Fatalf("reading /status.json: %v", err)
	}
	var st proxyStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("decoding /status.json %q: %v", body, err)
	}
	return st
}

// waitIdle polls /status.json until it lists no active transfer.
func (p *tbProxy) waitIdle(t testing.TB) proxyStatus {
	t.Helper()
	return p.waitIdleWithin(t, proxyIdleTimeout)
}

// waitIdleWithin is waitIdle with its own deadline.
func (p *tbProxy) waitIdleWithin(t testing.TB, within time.Duration) proxyStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := p.status(t)
		if len(st.Transfers) == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transfers still active after %v: %+v\n%s", len(st.Transfers), within, st.Transfers, p.proc.Tail(30))
		}
		time.Sleep(pollInterval)
	}
}

// proxyURL is the value for -x and http_proxy.
func (p *tbProxy) proxyURL() string { return "http://" + p.addr }

// originFile is one file the test origin serves.
type originFile struct {
	content string      // path of the file's bytes on disk; empty: 503 to plain requests
	torrent []byte      // the negotiation answer; nil serves the file to everyone
	extra   http.Header // set on the negotiation answer
	// noRanges answers 503 to a plain request with a Range (a web seed's)
	// while a whole-file GET still works.
	noRanges bool

	plainGets  atomic.Int64 // GETs answered with the file (any range but the first byte alone)
	confirms   atomic.Int64 // GETs of the first byte alone: the proxy's confirmations
	plainBytes atomic.Int64 // body bytes of those answers
	torrents   atomic.Int64 // negotiation answers
}

// originRequest is what the origin saw of one request.
type originRequest struct {
	Method, Path, Accept, Via, Range string
}

// testOrigin is an HTTP(S) origin that answers a GET whose Accept lists
// application/x-bittorrent with a torrent (Vary: Accept), and every other
// request with the file through http.ServeContent. It is its own tracker:
// /announce hands out the seeds, /announce-empty nobody.
type testOrigin struct {
	srv *httptest.Server
	URL string

	refusePlain atomic.Bool // answer 503 instead of the file's bytes

	mu    sync.Mutex
	files map[string]*originFile // by URL path; guarded by mu
	peers []netip.AddrPort       // handed out by /announce; guarded by mu
	log   []originRequest        // every request; guarded by mu
}

func newTestOrigin(t testing.TB, useTLS bool) *testOrigin {
	t.Helper()
	o := &testOrigin{files: map[string]*originFile{}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	// Handshakes that clients refuse on purpose are expected here.
	o.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	o.URL = o.srv.URL
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOrigin) addFile(path string, f *originFile) *originFile {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.files[path] = f
	return f
}

func (o *testOrigin) setPeers(peers ...netip.AddrPort) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.peers = peers
}

// requests returns the requests seen so far for path.
func (o *testOrigin) requests(path string) []originRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []originRequest
	for _, r := range o.log {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func wantsTorrent(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(strings.ToLower(v), torrentType) {
			return true
		}
	}
	return false
}

func (o *testOrigin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.log = append(o.log, originRequest{
		Method: r.Method, Path: r.URL.Path, Accept: strings.Join(r.Header.Values("Accept"), ", "),
		Via: strings.Join(r.Header.Values("Via"), ", "), Range: r.Header.Get("Range"),
	})
	f := o.files[r.URL.Path]
	peers := o.peers
	o.mu.Unlock()

	switch r.URL.Path {
	case "/announce", "/announce-empty":
		var compact []byte
		if r.URL.Path == "/announce" {
			for _, p := range peers {
				ip := p.Addr().As4()
				compact = append(compact, ip[:]...)
				compact = append(compact, byte(p.Port()>>8), byte(p.Port()))
			}
		}
		body, err := bencode.Marshal(map[string]any{"interval": 60, "peers": string(compact)})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
		return
	case "/page.html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("ETag", `"page-v1"`)
		io.WriteString(w, pageHTML)
		return
	}
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if f.torrent != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) && wantsTorrent(r) {
		if r.Method == http.MethodGet {
			f.torrents.Add(1)
		}
		w.Header().Set("Content-Type", torrentType)
		w.Header().Set("Vary", "Accept")
		w.Header().Set("ETag", `"origin-torrent"`)
		for k, vs := range f.extra {
			w.Header()[k] = vs
		}
		w.Write(f.torrent)
		return
	}
	if f.torrent != nil {
		w.Header().Set("Vary", "Accept")
	}
	if o.refusePlain.Load() || f.content == "" || (f.noRanges && r.Header.Get("Range") != "") {
		http.Error(w, "origin refuses to serve the file", http.StatusServiceUnavailable)
		return
	}
	fh, err := os.Open(f.content)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer fh.Close()
	var out http.ResponseWriter = countingWriter{w, &f.plainBytes}
	switch {
	case r.Method != http.MethodGet:
	case r.Header.Get("Range") == "bytes=0-0":
		f.confirms.Add(1)
		out = w // the question's byte is not the file served
	default:
		f.plainGets.Add(1)
	}
	w.Header().Set("ETag", `"origin-file"`)
	if strings.HasSuffix(r.URL.Path, ".mp3") {
		w.Header().Set("Content-Type", "audio/mpeg")
	}
	http.ServeContent(out, r, filepath.Base(r.URL.Path), time.Time{}, fh)
}

const pageHTML = "<!doctype html><title>tbproxy</title><p>an ordinary page</p>\n"

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// certPEM is the origin's certificate, for --upstream-ca and --cacert.
func (o *testOrigin) certPEM(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "origin.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// port is the origin's TCP port.
func (o *testOrigin) port(t testing.TB) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(o.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

// proxyWorld is an origin serving /pub/episode.mp3 (a torrent whose tracker
// is the origin, pointing at a libtorrent seed), with the bytes in memory
// for comparisons.
type proxyWorld struct {
	origin      *testOrigin
	file        *originFile
	path        string // URL path of the episode
	url         string // its full URL
	content     string // its path on disk
	torrentPath string // its .torrent file
	data        []byte
	meta        *metainfo.MetaInfo
	torrent     []byte
	seed        *LTPeer
	etag        string // the ETag tbproxy must give it
}

func newProxyWorld(t testing.TB, size int64, useTLS bool) *proxyWorld {
	t.Helper()
	requireTool(t, "libtorrent")
	w := &proxyWorld{origin: newTestOrigin(t, useTLS), path: "/pub/episode.mp3"}
	w.url = w.origin.URL + w.path
	w.content = makeContent(t, t.TempDir(), "episode.mp3", size, size)
	torrentPath, m := makeTorrent(t, w.content, proxyPieceLen, []string{w.origin.URL + "/announce"})
	w.meta, w.torrentPath = m, torrentPath
	var err error
	if w.torrent, err = os.ReadFile(torrentPath); err != nil {
		t.Fatal(err)
	}
	if w.data, err = os.ReadFile(w.content); err != nil {
		t.Fatal(err)
	}
	w.etag = `"bt-` + hex.EncodeToString(m.InfoHash[:]) + `-0"`
	w.file = w.origin.addFile(w.path, &originFile{content: w.content, torrent: w.torrent})
	w.seed = startLibtorrent(t, LTOpts{Torrent: torrentPath, SaveDir: filepath.Dir(w.content), Seed: true, SeedMode: true})
	w.origin.setPeers(netip.MustParseAddrPort(w.seed.Addr()))
	return w
}

// seedUploaded waits up to a few seconds for the seed to report at least
// want bytes uploaded (its status comes every 0.5 s) and returns its
// latest total.
func (w *proxyWorld) seedUploaded(want int64) int64 {
	deadline := time.Now().Add(3 * time.Second)
	for {
		up := w.seed.LastStatus().TotalUpload
		if up >= want || time.Now().After(deadline) {
			return up
		}
		time.Sleep(pollInterval)
	}
}

// addStalledFile serves, at path, a torrent that no source can deliver:
// its tracker (announce) knows no peer and the origin answers 503 to the
// plain request that the implicit web seed makes.
func addStalledFile(t testing.TB, o *testOrigin, path, announce string) {
	t.Helper()
	content := makeContent(t, t.TempDir(), filepath.Base(path), 4<<20, 4242)
	_, m := makeTorrent(t, content, proxyPieceLen, []string{announce})
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	o.addFile(path, &originFile{torrent: data})
}

// checkStalledClientLeaves fetches a torrent no source can deliver, gives
// up after a few seconds as an impatient client would, and expects the
// transfer to end within the given time once the client is gone.
func checkStalledClientLeaves(t *testing.T, p *tbProxy, within time.Duration, target string, curlArgs ...string) {
	t.Helper()
	args := append([]string{"--max-time", "4"}, curlArgs...)
	res, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), p.proxyURL(), target, false, args...)
	if err == nil {
		t.Logf("the client got status %d, %d bytes", res.status, res.bodyLen)
	}
	left := time.Now()
	p.waitIdleWithin(t, within)
	t.Logf("the transfer ended %v after its client left", time.Since(left).Round(100*time.Millisecond))
}

// startStalledClient starts a curl of a torrent no source can deliver and
// returns once /status.json shows its transfer.
func startStalledClient(t *testing.T, p *tbProxy, target string, curlArgs ...string) *proc {
	t.Helper()
	args := append([]string{"-sS", "-x", p.proxyURL(), "-o", filepath.Join(t.TempDir(), "body")}, curlArgs...)
	c := startProc(t, "curl", append(args, target)...)
	deadline := time.Now().Add(proxyIdleTimeout)
	for len(p.status(t).Transfers) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the transfer never showed up\n%s", c.Tail(10))
		}
		time.Sleep(pollInterval)
	}
	return c
}

// toolEnv is a clean environment with a private HOME, plus extra.
func toolEnv(t testing.TB, extra ...string) []string {
	home := t.TempDir()
	env := append(cleanEnv(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"), "XDG_DATA_HOME="+filepath.Join(home, ".local", "share"))
	return append(env, extra...)
}

// runTool runs a client to completion with env, in its own process group
// (killed with the test binary), and returns its stdout and stderr.
func runTool(ctx context.Context, env []string, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, proxyClientTimeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w; stderr: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), stderr.String(), err
}

// curlResult is one curl run.
type curlResult struct {
	status  int
	header  http.Header // the last response's headers
	body    []byte      // nil when curl wrote no file
	bodyLen int64
	speed   float64 // bytes/s, as curl measured it
	elapsed float64 // seconds
}

// runCurl runs curl through the proxy (when proxyURL is set) and collects
// the response. extra goes before the URL. The body is read into memory
// unless keepBody is false.
func runCurl(ctx context.Context, env []string, dir, proxyURL, target string, keepBody bool, extra ...string) (curlResult, error) {
	var res curlResult
	out, err := os.CreateTemp(dir, "body-")
	if err != nil {
		return res, err
	}
	out.Close()
	hdr := out.Name() + ".headers"
	args := []string{"-sS", "--max-time", strconv.Itoa(int(proxyClientTimeout / time.Second)),
		"-o", out.Name(), "-D", hdr,
		"-w", "%{http_code} %{size_download} %{speed_download} %{time_total}"}
	if proxyURL != "" {
		args = append(args, "-x", proxyURL)
	} else {
		args = append(args, "--noproxy", "*")
	}
	args = append(args, extra...)
	args = append(args, target)
	stdout, _, err := runTool(ctx, env, "curl", args...)
	if err != nil {
		return res, err
	}
	if _, err := fmt.Sscan(stdout, &res.status, &res.bodyLen, &res.speed, &res.elapsed); err != nil {
		return res, fmt.Errorf("curl -w output %q: %v", stdout, err)
	}
	if res.header, err = lastHeaderBlock(hdr); err != nil {
		return res, err
	}
	if keepBody {
		if res.body, err = os.ReadFile(out.Name()); err != nil {
			return res, err
		}
	}
	os.Remove(out.Name())
	os.Remove(hdr)
	return res, nil
}

// curl is runCurl that fails the test on error and keeps the body.
func curl(t testing.TB, proxyURL, target string, extra ...string) curlResult {
	t.Helper()
	res, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), proxyURL, target, true, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// lastHeaderBlock parses the last response header block of a curl -D file
// (a CONNECT answer or a 100 Continue come before it).
func lastHeaderBlock(path string) (http.Header, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blocks := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n")
	last := ""
	for _, b := range blocks {
		if strings.HasPrefix(strings.TrimSpace(b), "HTTP/") {
			last = strings.TrimSpace(b)
		}
	}
	if last == "" {
		return nil, fmt.Errorf("no response headers in %q", data)
	}
	_, rest, _ := strings.Cut(last, "\n")
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(rest + "\n\n"))).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parsing headers %q: %v", last, err)
	}
	return http.Header(h), nil
}

// mbps formats a rate for the logs.
func mbps(bytesPerSec float64) string { return fmt.Sprintf("%.1f MB/s", bytesPerSec/1e6) }

// checkWhole fails unless res is a 200 with exactly want, as audio/mpeg.
func checkWhole(t testing.TB, what string, res curlResult, want []byte, etag string) {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("%s: status %d, headers %v", what, res.status, res.header)
	}
	if !bytes.Equal(res.body, want) {
		t.Fatalf("%s: body differs: %d bytes, want %d", what, len(res.body), len(want))
	}
	if ct := res.header.Get("Content-Type"); ct != "audio/mpeg" {
		t.Errorf("%s: Content-Type %q, want audio/mpeg", what, ct)
	}
	if cl := res.header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Errorf("%s: Content-Length %q, want %d", what, cl, len(want))
	}
	if etag != "" && res.header.Get("ETag") != etag {
		t.Errorf("%s: ETag %q, want %s", what, res.header.Get("ETag"), etag)
	}
}

// TestProxyTransparentDownload: curl, wget and Python's urllib fetch a
// torrent-backed episode through tbproxy and get the file itself, byte
// for byte, with the file's headers; the bytes came from the peer.
func TestProxyTransparentDownload(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 32<<20, false)
	p := startTBProxy(t, tbOpts{ui: true})

	res := curl(t, p.proxyURL(), w.url)
	checkWhole(t, "curl", res, w.data, w.etag)
	if lm := res.header.Get("Last-Modified"); lm != "" {
		t.Logf("Last-Modified %s", lm)
	}
	if !strings.Contains(res.header.Get("Via"), "tbproxy") {
		t.Errorf("Via %q does not name tbproxy", res.header.Get("Via"))
	}
	t.Logf("curl, first download from the swarm: %d bytes in %.2fs, %s", res.bodyLen, res.elapsed, mbps(res.speed))
	up := w.seedUploaded(int64(len(w.data)))
	t.Logf("the libtorrent seed uploaded %d bytes; the origin served %d file bytes in %d plain GETs",
		up, w.file.plainBytes.Load(), w.file.plainGets.Load())
	if up == 0 {
		t.Errorf("the libtorrent seed uploaded nothing")
	}
	if w.file.plainBytes.Load() >= int64(len(w.data)) {
		t.Errorf("the origin served %d bytes of a %d-byte file: not a swarm download", w.file.plainBytes.Load(), len(w.data))
	}
	if w.file.torrents.Load() == 0 {
		t.Errorf("the origin never answered the negotiation")
	}

	t.Run("wget", func(t *testing.T) {
		requireTool(t, "wget")
		out := filepath.Join(t.TempDir(), "episode.mp3")
		start := time.Now()
		_, stderr, err := runTool(t.Context(), toolEnv(t, "http_proxy="+p.proxyURL()),
			"wget", "--no-config", "--no-hsts", "-nv", "--server-response", "--timeout=60", "--tries=1", "-O", out, w.url)
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		sameFile(t, out, w.content)
		if !strings.Contains(stderr, "Content-Type: audio/mpeg") || !strings.Contains(stderr, "Content-Length: "+strconv.Itoa(len(w.data))) {
			t.Errorf("wget saw other headers:\n%s", stderr)
		}
		t.Logf("wget: %d bytes in %v, %s", len(w.data), elapsed.Round(time.Millisecond), mbps(float64(len(w.data))/elapsed.Seconds()))
	})

	t.Run("python urllib", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "episode.mp3")
		const script = `import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f, 1 << 20)
    print(r.status, r.headers.get("Content-Type"), r.headers.get("Content-Length"), r.headers.get("ETag"))
`
		stdout, _, err := runTool(t.Context(), toolEnv(t, "http_proxy="+p.proxyURL()), systemPython, "-c", script, w.url, out)
		if err != nil {
			t.Fatal(err)
		}
		sameFile(t, out, w.content)
		want := fmt.Sprintf("200 audio/mpeg %d %s", len(w.data), w.etag)
		if got := strings.TrimSpace(stdout); got != want {
			t.Errorf("urllib saw %q, want %q", got, want)
		}
	})

	st := p.waitIdle(t)
	t.Logf("status: %d transformed, %d passed through, %d fallbacks, %d bytes served from torrents",
		st.Transformed, st.Passed, st.Fallbacks, st.BytesServed)
	if st.Transformed < 3 {
		t.Errorf("requests_transformed = %d, want at least 3 (curl, wget, urllib)", st.Transformed)
	}
	if st.Fallbacks != 0 {
		t.Errorf("requests_fallback = %d, want 0", st.Fallbacks)
	}
	if st.BytesServed < 3*int64(len(w.data)) {
		t.Errorf("bytes_served_from_torrents = %d, want at least %d", st.BytesServed, 3*len(w.data))
	}
	if n := w.file.torrents.Load(); n < 3 {
		t.Errorf("the origin answered %d negotiations, want at least 3", n)
	}
}

// TestProxyRangeAndHead: ranges are answered from the torrent's bytes by
// tbproxy itself (206, suffix, multipart, 416); a HEAD gets the headers
// its GET would get, from the torrent, and starts no download.
func TestProxyRangeAndHead(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, false)
	p := startTBProxy(t, tbOpts{})
	size := len(w.data)

	// HEAD first, on a proxy that has seen nothing yet.
	t.Run("HEAD", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-I")
		if res.status != http.StatusOK {
			t.Fatalf("HEAD: status %d", res.status)
		}
		if cl := res.header.Get("Content-Length"); cl != strconv.Itoa(size) {
			t.Errorf("HEAD: Content-Length %q, want %d", cl, size)
		}
		if et := res.header.Get("ETag"); et != w.etag {
			t.Errorf("HEAD: ETag %q, want the GET's %q", et, w.etag)
		}
		// The probe, the metainfo, and the confirmation that the
		// origin's file is the torrent's (its first byte), as for a GET.
		reqs := w.origin.requests(w.path)
		if len(reqs) != 3 || reqs[0].Method != http.MethodHead || !strings.Contains(reqs[0].Accept, torrentType) ||
			reqs[1].Method != http.MethodGet || !strings.Contains(reqs[1].Accept, torrentType) ||
			reqs[2].Method != http.MethodGet || strings.Contains(reqs[2].Accept, torrentType) || reqs[2].Range != "bytes=0-0" {
			t.Fatalf("the origin saw %+v, want a HEAD for the torrent, its GET, and a confirmation", reqs)
		}
		st := p.status(t)
		if len(st.Transfers) != 0 {
			t.Fatalf("HEAD started a transfer: %+v", st)
		}
		if w.file.plainGets.Load() != 0 {
			t.Fatal("HEAD made the origin serve the file")
		}
	})

	t.Run("bytes=1000-2000", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-r", "1000-2000")
		if res.status != http.StatusPartialContent || !bytes.Equal(res.body, w.data[1000:2001]) {
			t.Fatalf("status %d, %d bytes", res.status, len(res.body))
		}
		if cr := res.header.Get("Content-Range"); cr != fmt.Sprintf("bytes 1000-2000/%d", size) {
			t.Errorf("Content-Range %q", cr)
		}
		if res.header.Get("ETag") != w.etag {
			t.Errorf("ETag %q, want %s", res.header.Get("ETag"), w.etag)
		}
	})
	t.Run("suffix", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-r", "-500")
		if res.status != http.StatusPartialContent || !bytes.Equal(res.body, w.data[size-500:]) {
			t.Fatalf("status %d, %d bytes", res.status, len(res.body))
		}
		if cr := res.header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", size-500, size-1, size) {
			t.Errorf("Content-Range %q", cr)
		}
	})
	t.Run("two ranges", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-r", "0-0,5-9")
		if res.status != http.StatusPartialContent {
			t.Fatalf("status %d", res.status)
		}
		mt, params, err := mime.ParseMediaType(res.header.Get("Content-Type"))
		if err != nil || mt != "multipart/byteranges" {
			t.Fatalf("Content-Type %q (%v)", res.header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(bytes.NewReader(res.body), params["boundary"])
		want := []struct {
			start, end int
		}{{0, 0}, {5, 9}}
		for i, r := range want {
			part, err := mr.NextPart()
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			got, _ := io.ReadAll(part)
			if !bytes.Equal(got, w.data[r.start:r.end+1]) {
				t.Errorf("part %d: %x, want %x", i, got, w.data[r.start:r.end+1])
			}
			if cr := part.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", r.start, r.end, size) {
				t.Errorf("part %d: Content-Range %q", i, cr)
			}
		}
		if _, err := mr.NextPart(); !errors.Is(err, io.EOF) {
			t.Errorf("more than two parts: %v", err)
		}
	})
	t.Run("unsatisfiable", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-r", "999999999-")
		if res.status != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("status %d", res.status)
		}
		if cr := res.header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", size) {
			t.Errorf("Content-Range %q", cr)
		}
	})
	for _, r := range w.origin.requests(w.path) {
		if r.Method == http.MethodGet && wantsTorrentHeader(r.Accept) && r.Range != "" {
			t.Errorf("a negotiation request carried Range %q", r.Range)
		}
	}
	st := p.waitIdle(t)
	if st.Transformed != 5 { // the HEAD and the four ranges
		t.Errorf("requests_transformed = %d, want 5", st.Transformed)
	}
}

func wantsTorrentHeader(accept string) bool {
	return strings.Contains(strings.ToLower(accept), torrentType)
}

// TestProxyConditional: the content-addressed ETag drives If-None-Match
// and If-Range.
func TestProxyConditional(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, false)
	p := startTBProxy(t, tbOpts{})

	first := curl(t, p.proxyURL(), w.url)
	checkWhole(t, "first GET", first, w.data, w.etag)

	res := curl(t, p.proxyURL(), w.url, "-H", "If-None-Match: "+w.etag)
	if res.status != http.StatusNotModified || len(res.body) != 0 {
		t.Errorf("If-None-Match with the ETag: status %d, %d bytes", res.status, len(res.body))
	}
	res = curl(t, p.proxyURL(), w.url, "-H", `If-None-Match: "something-else"`)
	if res.status != http.StatusOK || !bytes.Equal(res.body, w.data) {
		t.Errorf("If-None-Match with another tag: status %d, %d bytes", res.status, len(res.body))
	}
	res = curl(t, p.proxyURL(), w.url, "-r", "100-199", "-H", "If-Range: "+w.etag)
	if res.status != http.StatusPartialContent || !bytes.Equal(res.body, w.data[100:200]) {
		t.Errorf("If-Range with the ETag: status %d, %d bytes", res.status, len(res.body))
	}
	res = curl(t, p.proxyURL(), w.url, "-r", "100-199", "-H", `If-Range: "origin-file"`)
	if res.status != http.StatusOK || !bytes.Equal(res.body, w.data) {
		t.Errorf("If-Range with another value: status %d, %d bytes, want the whole file", res.status, len(res.body))
	}
	p.waitIdle(t)
}

// TestProxyPassThrough: what is not a transparent torrent answer reaches
// the client unchanged.
func TestProxyPassThrough(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, false)
	nt := w.origin.addFile("/pub/nt/episode.mp3", &originFile{content: w.content, torrent: w.torrent,
		extra: http.Header{"Cache-Control": {"no-transform"}}})
	p := startTBProxy(t, tbOpts{})

	t.Run("html page", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.origin.URL+"/page.html")
		if res.status != http.StatusOK || string(res.body) != pageHTML || res.header.Get("ETag") != `"page-v1"` {
			t.Fatalf("status %d, ETag %q, body %q", res.status, res.header.Get("ETag"), res.body)
		}
		if ct := res.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
	})
	t.Run("client asks for the torrent", func(t *testing.T) {
		res := curl(t, p.proxyURL(), w.url, "-H", "Accept: "+torrentType)
		if res.status != http.StatusOK || !bytes.Equal(res.body, w.torrent) {
			t.Fatalf("status %d, %d bytes, want the %d-byte torrent", res.status, len(res.body), len(w.torrent))
		}
		if ct := res.header.Get("Content-Type"); ct != torrentType {
			t.Errorf("Content-Type %q", ct)
		}
		if res.header.Get("ETag") != `"origin-torrent"` {
			t.Errorf("ETag %q, want the origin's", res.header.Get("ETag"))
		}
	})
	t.Run("no-transform", func(t *testing.T) {
		before := p.status(t)
		res := curl(t, p.proxyURL(), w.origin.URL+"/pub/nt/episode.mp3")
		checkWhole(t, "no-transform", res, w.data, `"origin-file"`)
		if nt.plainGets.Load() != 1 || nt.plainBytes.Load() != int64(len(w.data)) {
			t.Errorf("the origin served %d bytes in %d GETs, want the whole file once", nt.plainBytes.Load(), nt.plainGets.Load())
		}
		if after := p.status(t); after.Transformed != before.Transformed {
			t.Errorf("requests_transformed went from %d to %d", before.Transformed, after.Transformed)
		}
	})
	t.Run("Via loop", func(t *testing.T) {
		before := len(w.origin.requests(w.path))
		res := curl(t, p.proxyURL(), w.url, "-H", "Via: 1.1 tbproxy")
		checkWhole(t, "behind another tbproxy", res, w.data, `"origin-file"`)
		reqs := w.origin.requests(w.path)[before:]
		if len(reqs) != 1 || wantsTorrentHeader(reqs[0].Accept) {
			t.Fatalf("the origin saw %+v, want one request without %s", reqs, torrentType)
		}
		t.Logf("the origin saw Via %q", reqs[0].Via)
	})
	st := p.waitIdle(t)
	if st.Transformed != 0 {
		t.Errorf("requests_transformed = %d, want 0", st.Transformed)
	}
	if st.Passed < 3 {
		t.Errorf("requests_passed_through = %d, want at least 3", st.Passed)
	}
	// Protocol bytes may flow (libtorrent may meet itself through the
	// tracker and send a handshake); file bytes must not.
	if up := w.seed.LastStatus().PayloadUpload; up != 0 {
		t.Errorf("the seed uploaded %d file bytes though nothing was transformed", up)
	}
}

// TestProxyFallback: unusable metainfo is refetched plainly; a torrent
// with no peers still delivers through the origin as implicit web seed.
func TestProxyFallback(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, false)
	size := strconv.Itoa(len(w.data))

	badInt := bytes.Replace(w.torrent, []byte("6:lengthi"+size+"e"), []byte("6:lengthi0"+size+"e"), 1)
	if bytes.Equal(badInt, w.torrent) {
		t.Fatal("the torrent has no length field to spoil")
	}
	traversal, err := bencode.Marshal(map[string]any{
		"announce": w.origin.URL + "/announce",
		"info": map[string]any{
			"name":         "pub",
			"piece length": w.meta.Info.PieceLength,
			"pieces":       string(w.meta.Info.Pieces),
			"files": []any{
				map[string]any{"length": len(w.data), "path": []any{"..", "episode.mp3"}},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metainfo.Parse(traversal); err == nil {
		t.Log("note: metainfo.Parse accepts a path with ..")
	}
	broken := []struct {
		name, path string
		torrent    []byte
	}{
		{"truncated", "/truncated/episode.mp3", w.torrent[:len(w.torrent)/2]},
		{"bad bencode", "/badint/episode.mp3", badInt},
		{"path traversal", "/traversal/episode.mp3", traversal},
	}
	files := make([]*originFile, len(broken))
	for i, b := range broken {
		files[i] = w.origin.addFile(b.path, &originFile{content: w.content, torrent: b.torrent})
	}

	quietDir := t.TempDir()
	quiet := makeContent(t, quietDir, "quiet.mp3", 16<<20+12345, 606)
	_, qm := makeTorrent(t, quiet, proxyPieceLen, []string{w.origin.URL + "/announce-empty"})
	qt, err := qm.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	qf := w.origin.addFile("/quiet/quiet.mp3", &originFile{content: quiet, torrent: qt})

	slowDir := t.TempDir()
	slow := makeContent(t, slowDir, "slow.mp3", 4<<20+7, 707)
	_, sm := makeTorrent(t, slow, proxyPieceLen, []string{w.origin.URL + "/announce-empty"})
	st, err := sm.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sf := w.origin.addFile("/slow/slow.mp3", &originFile{content: slow, torrent: st, noRanges: true})

	p := startTBProxy(t, tbOpts{})
	for i, b := range broken {
		t.Run(b.name, func(t *testing.T) {
			f := files[i]
			res := curl(t, p.proxyURL(), w.origin.URL+b.path)
			checkWhole(t, b.name, res, w.data, `"origin-file"`)
			// The proxy may have asked the origin to confirm the file
			// before it had read the metainfo (askEarly).
			if f.torrents.Load() != 1 || f.plainGets.Load() != 1 || f.confirms.Load() > 1 {
				t.Errorf("the origin answered %d negotiations, %d plain GETs and %d confirmations, want 1, 1 and at most 1",
					f.torrents.Load(), f.plainGets.Load(), f.confirms.Load())
			}
			if st := p.status(t); st.Fallbacks != int64(i+1) || st.Transformed != 0 {
				t.Errorf("status: %d fallbacks, %d transformed; want %d and 0", st.Fallbacks, st.Transformed, i+1)
			}
		})
	}

	t.Run("no peers, origin as web seed", func(t *testing.T) {
		want, err := os.ReadFile(quiet)
		if err != nil {
			t.Fatal(err)
		}
		res := curl(t, p.proxyURL(), w.origin.URL+"/quiet/quiet.mp3")
		checkWhole(t, "no peers", res, want, `"bt-`+qm.InfoHash.String()+`-0"`)
		t.Logf("no peers: %d bytes in %.2fs (%s); the origin served %d bytes in %d GETs as a web seed",
			res.bodyLen, res.elapsed, mbps(res.speed), qf.plainBytes.Load(), qf.plainGets.Load())
		if qf.plainBytes.Load() < int64(len(want)) {
			t.Errorf("the origin served %d bytes, want at least %d through the web seed", qf.plainBytes.Load(), len(want))
		}
		if st := p.status(t); st.Transformed != 1 {
			t.Errorf("requests_transformed = %d, want 1", st.Transformed)
		}
		if got := w.origin.requests("/announce-empty"); len(got) == 0 {
			t.Log("note: the engine never announced to the torrent's tracker")
		}
	})

	// No peer, and the origin refuses the web seed's range requests: after
	// the first-byte budget the client gets the plain answer.
	t.Run("no source delivers, plain answer", func(t *testing.T) {
		want, err := os.ReadFile(slow)
		if err != nil {
			t.Fatal(err)
		}
		before := p.status(t)
		res := curl(t, p.proxyURL(), w.origin.URL+"/slow/slow.mp3")
		checkWhole(t, "no source", res, want, `"origin-file"`)
		t.Logf("the plain answer came after %.1fs", res.elapsed)
		if sf.plainGets.Load() != 1 {
			t.Errorf("the origin answered %d whole-file GETs, want 1", sf.plainGets.Load())
		}
		if after := p.status(t); after.Fallbacks != before.Fallbacks+1 {
			t.Errorf("requests_fallback went from %d to %d, want one more", before.Fallbacks, after.Fallbacks)
		}
	})
	p.waitIdle(t)
}

// TestProxyConcurrency: 20 curls of one URL share one download and all get
// the same bytes; a client killed mid-download leaves no transfer behind.
func TestProxyConcurrency(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, false)
	p := startTBProxy(t, tbOpts{})

	t.Run("20 curls", func(t *testing.T) {
		const n = 20
		env := toolEnv(t)
		dir := t.TempDir()
		results := make([]curlResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = runCurl(t.Context(), env, dir, p.proxyURL(), w.url, true)
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		for i := range n {
			if errs[i] != nil {
				t.Errorf("curl %d: %v", i, errs[i])
				continue
			}
			if results[i].status != http.StatusOK || !bytes.Equal(results[i].body, w.data) {
				t.Errorf("curl %d: status %d, %d bytes, identical %v", i, results[i].status, len(results[i].body), bytes.Equal(results[i].body, w.data))
			}
		}
		t.Logf("20 concurrent curls: %d MB in %v, %s in all", n*len(w.data)>>20, elapsed.Round(time.Millisecond),
			mbps(float64(n*len(w.data))/elapsed.Seconds()))
		st := p.waitIdle(t)
		if st.Transformed != n {
			t.Errorf("requests_transformed = %d, want %d", st.Transformed, n)
		}
		if up := w.seedUploaded(int64(len(w.data))); up > 2*int64(len(w.data)) {
			t.Errorf("the seed uploaded %d bytes for a %d-byte file: the requests did not share one download", up, len(w.data))
		}
	})

	t.Run("client killed", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "slow.mp3")
		slow := startProc(t, "curl", "-sS", "-x", p.proxyURL(), "--limit-rate", "256k", "-o", out, w.url)
		deadline := time.Now().Add(proxyIdleTimeout)
		for {
			st := p.status(t)
			if len(st.Transfers) == 1 && st.Transfers[0].Sent > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the slow download never showed up as a transfer: %+v\n%s", st, slow.Tail(10))
			}
			time.Sleep(pollInterval)
		}
		if err := syscall.Kill(-slow.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-slow.Done()
		p.waitIdle(t)
	})

	addStalledFile(t, w.origin, "/pub/stalled/stalled.mp3", w.origin.URL+"/announce-empty")
	stalledURL := w.origin.URL + "/pub/stalled/stalled.mp3"
	t.Run("client leaves a stalled torrent", func(t *testing.T) {
		checkStalledClientLeaves(t, p, proxyIdleTimeout, stalledURL)
	})

	t.Run("SIGTERM during a stalled transfer", func(t *testing.T) {
		p := startTBProxy(t, tbOpts{})
		startStalledClient(t, p, stalledURL)
		begin := time.Now()
		p.proc.Stop()
		if code := p.proc.ExitCode(); code != 0 {
			t.Errorf("tbproxy did not exit on SIGTERM (exit %d after %v): it was killed", code, time.Since(begin).Round(time.Millisecond))
		}
	})
}

// TestProxyMITM: with --mitm, HTTPS is intercepted and transformed;
// without it, CONNECT is a blind tunnel.
func TestProxyMITM(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 16<<20, true)
	originCA := w.origin.certPEM(t)
	ports := "443," + strconv.Itoa(w.origin.port(t))

	// The same torrent announced to a plain-HTTP tracker, so that the
	// interception itself is tested apart from the engine's HTTPS.
	tracker := newTestOrigin(t, false)
	tracker.setPeers(netip.MustParseAddrPort(w.seed.Addr()))
	m := *w.meta
	m.Announce, m.AnnounceList = tracker.URL+"/announce", nil
	plainTracked, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	const plainPath = "/pub/plain-tracker/episode.mp3"
	w.origin.addFile(plainPath, &originFile{content: w.content, torrent: plainTracked})

	mitm := func(t *testing.T) (*tbProxy, string) {
		caDir := filepath.Join(t.TempDir(), "ca")
		p := startTBProxy(t, tbOpts{extra: []string{"--mitm", "--ca-dir", caDir, "--upstream-ca", originCA, "--connect-ports", ports}})
		return p, filepath.Join(caDir, "ca.pem")
	}

	t.Run("intercepted", func(t *testing.T) {
		p, caPEM := mitm(t)
		if !isCA(t, caPEM) {
			t.Fatal("ca.pem holds no CA certificate")
		}
		res := curl(t, p.proxyURL(), w.origin.URL+plainPath, "--cacert", caPEM)
		checkWhole(t, "https through MITM", res, w.data, w.etag)
		t.Logf("https through MITM: %d bytes in %.2fs, %s", res.bodyLen, res.elapsed, mbps(res.speed))
		if st := p.waitIdle(t); st.Transformed != 1 {
			t.Errorf("requests_transformed = %d, want 1", st.Transformed)
		}
		if up := w.seedUploaded(int64(len(w.data))); up == 0 {
			t.Error("the libtorrent seed uploaded nothing")
		}
		// What curl verified was minted by tbproxy: the origin's own
		// certificate does not verify against tbproxy's CA.
		if _, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), "", w.url, false, "--cacert", caPEM); err == nil {
			t.Error("the origin's certificate verified against tbproxy's CA")
		}
	})

	// A publisher is usually its own tracker and always the implicit web
	// seed: over HTTPS the engine must trust --upstream-ca as the proxy
	// does, or it can neither announce nor fetch from the origin.
	t.Run("intercepted, origin is its own HTTPS tracker", func(t *testing.T) {
		p, caPEM := mitm(t)
		res, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), p.proxyURL(), w.url, true, "--cacert", caPEM, "--max-time", "30")
		if err != nil {
			t.Fatalf("%v\n%s", err, p.proc.Tail(20))
		}
		checkWhole(t, "https through MITM, HTTPS tracker", res, w.data, w.etag)
		p.waitIdle(t)
	})

	// goproxy gives a MITM'd request a context that does not end when the
	// client goes away, so a response waiting for its first byte outlives
	// its client until the first-byte budget (proxy.DefaultFirstByte, 20 s)
	// runs out. Bounded, but not prompt as it is without MITM.
	addStalledFile(t, w.origin, "/pub/stalled/stalled.mp3", tracker.URL+"/announce-empty")
	stalledURL := w.origin.URL + "/pub/stalled/stalled.mp3"
	t.Run("intercepted, client leaves a stalled torrent", func(t *testing.T) {
		p, caPEM := mitm(t)
		checkStalledClientLeaves(t, p, 30*time.Second, stalledURL, "--cacert", caPEM)
	})

	// SIGTERM must end tbproxy within the harness's grace (5 s), even with
	// an intercepted response waiting for bytes.
	t.Run("intercepted, SIGTERM during a stalled transfer", func(t *testing.T) {
		p, caPEM := mitm(t)
		startStalledClient(t, p, stalledURL, "--cacert", caPEM)
		begin := time.Now()
		p.proc.Stop()
		if code := p.proc.ExitCode(); code != 0 {
			t.Errorf("tbproxy did not exit on SIGTERM (exit %d after %v): it was killed", code, time.Since(begin).Round(time.Millisecond))
		}
	})

	t.Run("tunnel", func(t *testing.T) {
		p := startTBProxy(t, tbOpts{extra: []string{"--connect-ports", ports}})
		before := w.file.plainGets.Load()
		res := curl(t, p.proxyURL(), w.url, "--cacert", originCA)
		checkWhole(t, "https tunnel", res, w.data, `"origin-file"`)
		if w.file.plainGets.Load() != before+1 {
			t.Errorf("the origin did not serve the file itself")
		}
		if st := p.status(t); st.Transformed != 0 || st.Passed != 0 {
			t.Errorf("a blind tunnel was counted: %+v", st)
		}
	})

	t.Run("port not allowed", func(t *testing.T) {
		p := startTBProxy(t, tbOpts{})
		_, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), p.proxyURL(), w.url, false, "--cacert", originCA)
		if err == nil {
			t.Fatal("CONNECT to a port outside --connect-ports succeeded")
		}
	})
}

// isCA reports whether path holds a CA certificate.
func isCA(t testing.TB, path string) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	return err == nil && c.IsCA
}

// TestProxyCache: a second download comes from the cache with the seed
// gone and the origin refusing the file; so does a third after a restart.
func TestProxyCache(t *testing.T) {
	requireTool(t, "curl")
	w := newProxyWorld(t, 32<<20, false)
	dataDir := t.TempDir()
	p := startTBProxy(t, tbOpts{dataDir: dataDir})

	res := curl(t, p.proxyURL(), w.url)
	checkWhole(t, "first download", res, w.data, w.etag)
	t.Logf("first download (swarm): %.2fs, %s", res.elapsed, mbps(res.speed))
	p.waitIdle(t)

	w.seed.Proc().Stop()
	w.origin.refusePlain.Store(true)
	gets := w.file.plainGets.Load()

	res = curl(t, p.proxyURL(), w.url)
	checkWhole(t, "second download, seed gone", res, w.data, w.etag)
	t.Logf("second download (cache): %.2fs, %s", res.elapsed, mbps(res.speed))
	p.waitIdle(t)

	p.proc.Stop()
	if code := p.proc.ExitCode(); code != 0 {
		t.Errorf("tbproxy exited with %d on SIGTERM", code)
	}
	p2 := startTBProxy(t, tbOpts{dataDir: dataDir})
	res = curl(t, p2.proxyURL(), w.url)
	checkWhole(t, "third download, after a restart", res, w.data, w.etag)
	t.Logf("third download (cache after restart): %.2fs, %s", res.elapsed, mbps(res.speed))
	p2.waitIdle(t)
	if n := w.file.plainGets.Load(); n != gets {
		t.Errorf("the origin was asked for the file %d times after the seed went away", n-gets)
	}

	// The origin gone as well: the proxy, disconnected, answers from its
	// cache (RFC 9111, section 4.2.4), with the same representation.
	w.origin.srv.Close()
	res = curl(t, p2.proxyURL(), w.url)
	checkWhole(t, "fourth download, origin gone", res, w.data, w.etag)
	p2.waitIdle(t)

	// And after another restart, at once: which torrent the URL is in is
	// kept in the data directory, and the cache gives the torrent even
	// before reseeding has reached it.
	p2.proc.Stop()
	p3 := startTBProxy(t, tbOpts{dataDir: dataDir})
	res = curl(t, p3.proxyURL(), w.url)
	checkWhole(t, "fifth download, origin gone, after a restart", res, w.data, w.etag)
	p3.waitIdle(t)

	// A restarted proxy seeds what it cached before anyone asks for it: a
	// libtorrent leecher told of nothing but its peer port gets the file.
	p3.proc.Stop()
	p4 := startTBProxy(t, tbOpts{dataDir: dataDir})
	leechDir := t.TempDir()
	leech := startLibtorrent(t, LTOpts{Torrent: w.torrentPath, SaveDir: leechDir, Peers: []string{p4.peer}})
	if err := leech.WaitFinished(2 * time.Minute); err != nil {
		t.Fatalf("a libtorrent leecher of the restarted proxy: %v\n%s", err, p4.proc.Tail(30))
	}
	if got, err := os.ReadFile(filepath.Join(leechDir, filepath.Base(w.content))); err != nil || !bytes.Equal(got, w.data) {
		t.Fatalf("the leecher's copy differs (%d bytes): %v", len(got), err)
	}
}
