//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// server is a process that serves on a port of 127.0.0.1.
type server struct {
	proc      *process
	port      int
	accessLog string // nginx's access log (see accessLogFormat); "" when it keeps none
}

// url is an http:// URL of the server with path.
func (s *server) url(path string) string { return "http://" + hostPort(s.port) + path }

// startServer starts spec in env and returns once port accepts.
func startServer(ctx context.Context, env *runEnv, spec procSpec, port int) (*server, error) {
	p, err := env.start(spec)
	if err != nil {
		return nil, err
	}
	if err := waitAccept(ctx, p, port); err != nil {
		return nil, err
	}
	return &server{proc: p, port: port}, nil
}

// The paths nginx serves; see nginxConf.
const (
	plainPath = "/plain/" // the content directory, never negotiated
	seedPath  = "/ws/"    // the content directory, answering the BitTorrent Accept with a trackerless .torrent
)

// startNginx starts nginx as the plain origin: the page at /page.html, the
// content under plainPath and seedPath, and for each seedPath/NAME the
// torrent torrents/NAME.torrent on negotiation. With logged, it keeps an
// access log of what it sent (see readAccessLog). It returns once nginx
// accepts.
func startNginx(ctx context.Context, env *runEnv, ws *workspace, torrents string, logged bool) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(env.dir, "nginx-")
	if err != nil {
		return nil, err
	}
	accessLog := ""
	if logged {
		accessLog = filepath.Join(dir, "access.log")
	}
	conf, err := nginxConf(dir, port, ws.www, filepath.Dir(ws.content), torrents, accessLog, os.Geteuid() == 0)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	spec := procSpec{name: "nginx", path: "nginx", args: []string{"-p", dir, "-c", path, "-e", "stderr"}}
	s, err := startServer(ctx, env, spec, port)
	if err != nil {
		return nil, err
	}
	s.accessLog = accessLog
	return s, nil
}

// accessLogFormat is the line nginx logs per request when it keeps an
// access log: the status, the bytes sent (headers included) and the body
// bytes sent. nginx writes it when the request ends, complete or cut.
const accessLogFormat = "$status $bytes_sent $body_bytes_sent"

// httpLoad is what an nginx access log adds up to.
type httpLoad struct {
	requests int
	sent     int64 // headers included
	body     int64
}

// parseAccessLog adds up an access log in accessLogFormat.
func parseAccessLog(data []byte) (httpLoad, error) {
	var l httpLoad
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return l, fmt.Errorf("access log line %q: want status, bytes sent, body bytes sent", strings.TrimSpace(line))
		}
		sent, err1 := strconv.ParseInt(f[1], 10, 64)
		body, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil || sent < 0 || body < 0 || body > sent {
			return l, fmt.Errorf("access log line %q: bad byte counts", strings.TrimSpace(line))
		}
		l.requests++
		l.sent += sent
		l.body += body
	}
	return l, nil
}

// readAccessLog stops nginx gracefully (SIGQUIT: it finishes, and logs,
// every request in progress, which ends at once for a client that is
// gone), and adds up its access log.
func (s *server) readAccessLog() (httpLoad, error) {
	if s.accessLog == "" {
		return httpLoad{}, errors.New("nginx keeps no access log")
	}
	if !s.proc.stopWith(syscall.SIGQUIT) {
		return httpLoad{}, fmt.Errorf("nginx did not quit gracefully within %v, so its access log may lack requests", stopGrace)
	}
	data, err := os.ReadFile(s.accessLog)
	if err != nil {
		return httpLoad{}, err
	}
	return parseAccessLog(data)
}

// nginxConf is nginx's configuration: in the foreground, logging errors
// only (and, unless accessLog is "", each request to accessLog), everything it writes under dir, serving files with sendfile and
// long keep-alive, as a tuned static origin would. A request under
// seedPath whose Accept names application/x-bittorrent is answered with
// the file's .torrent (with Vary: Accept), as a Transparent BitTorrent
// origin does; every other request gets the file. As root, nginx's
// workers stay root, to read the bench's private temporary directory.
func nginxConf(dir string, port int, www, content, torrents, accessLog string, root bool) (string, error) {
	for _, p := range []string{dir, www, content, torrents, accessLog} {
		if strings.ContainsAny(p, "\"\\$;{}'\n") {
			return "", fmt.Errorf("cannot use path %q in nginx.conf", p)
		}
	}
	q := func(path string) string { return `"` + path + `"` }
	var b strings.Builder
	b.WriteString("daemon off;\nmaster_process on;\nworker_processes auto;\n")
	if root {
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, "pid %s;\nerror_log stderr warn;\n", q(dir+"/nginx.pid"))
	b.WriteString("events { worker_connections 4096; }\n")
	b.WriteString("http {\n")
	if accessLog == "" {
		b.WriteString("  access_log off;\n")
	} else {
		fmt.Fprintf(&b, "  log_format bench '%s';\n  access_log %s bench;\n", accessLogFormat, q(accessLog))
	}
	b.WriteString("  sendfile on;\n  tcp_nopush on;\n")
	b.WriteString("  keepalive_requests 1000000;\n  keepalive_timeout 120s;\n")
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "  %s_temp_path %s;\n", tmp, q(dir+"/"+tmp))
	}
	b.WriteString("  types { text/html html; application/octet-stream bin; application/x-bittorrent torrent; }\n")
	b.WriteString("  default_type application/octet-stream;\n")
	b.WriteString("  map $http_accept $bt_wanted { default 0; \"~application/x-bittorrent\" 1; }\n")
	b.WriteString("  server {\n")
	fmt.Fprintf(&b, "    listen %s;\n", hostPort(port))
	fmt.Fprintf(&b, "    root %s;\n", q(www))
	fmt.Fprintf(&b, "    location %s { alias %s; }\n", plainPath, q(content+"/"))
	fmt.Fprintf(&b, "    location %s {\n      add_header Vary Accept;\n", seedPath)
	fmt.Fprintf(&b, "      if ($bt_wanted) { rewrite ^%s(.*)$ /torrents/$1.torrent last; }\n", seedPath)
	fmt.Fprintf(&b, "      alias %s;\n    }\n", q(content+"/"))
	fmt.Fprintf(&b, "    location /torrents/ { internal; add_header Vary Accept; alias %s; }\n", q(torrents+"/"))
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

// startTinyproxy starts tinyproxy in the foreground with room for wrk's
// connections, logging warnings to a file, and returns once it accepts.
func startTinyproxy(ctx context.Context, env *runEnv) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(env.dir, "tinyproxy-")
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(dir, "\"\n") {
		return nil, fmt.Errorf("cannot use path %q in tinyproxy.conf", dir)
	}
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 600\nMaxClients 256\nAllow 127.0.0.1\n"+
		"LogFile \"%s/tinyproxy.log\"\nLogLevel Warning\nPidFile \"%s/tinyproxy.pid\"\n", port, dir, dir)
	path := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return startServer(ctx, env, procSpec{name: "tinyproxy", path: "tinyproxy", args: []string{"-d", "-c", path}}, port)
}

// startTBProxy starts `tbproxy run` on a fresh data directory, with its
// engine on a free port and no status page, and returns once it accepts
// proxy requests.
func startTBProxy(ctx context.Context, env *runEnv, ws *workspace) (*server, error) {
	data, err := os.MkdirTemp(env.dir, "tbproxy-data-")
	if err != nil {
		return nil, err
	}
	// It binds a port of its own and says which: a port picked free
	// beforehand could be taken meanwhile, by another proxy's peer port
	// when several start at once.
	args := []string{"run",
		"--listen", "127.0.0.1:0",
		"--ui-listen=",
		"--data-dir", data,
		"--peer-listen", "127.0.0.1:0",
		"--allow-private",
		"--log-level", "info",
	}
	return startSaying(ctx, env, procSpec{name: "tbproxy run", path: ws.tbproxy, args: args}, "tbproxy")
}

// startMinproxy starts the minimal Go proxy (bench/cmd/minproxy) and
// returns once it accepts proxy requests.
func startMinproxy(ctx context.Context, env *runEnv, ws *workspace) (*server, error) {
	return startSaying(ctx, env, procSpec{name: "minproxy", path: ws.minproxy, args: []string{"-listen", "127.0.0.1:0"}}, "minproxy")
}

// startSaying starts spec, a server that binds a port of its own and says
// which in a line "NAME is listening on 127.0.0.1:PORT" (listeningPort),
// and returns once it accepts connections there.
func startSaying(ctx context.Context, env *runEnv, spec procSpec, name string) (*server, error) {
	ports := make(chan int, 1)
	spec.onLine = func(line string) {
		if port, ok := listeningPort(name, line); ok {
			select {
			case ports <- port:
			default:
			}
		}
	}
	p, err := env.start(spec)
	if err != nil {
		return nil, err
	}
	wait, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case port := <-ports:
		if err := waitAccept(ctx, p, port); err != nil {
			return nil, err
		}
		return &server{proc: p, port: port}, nil
	case <-p.Done():
		return nil, p.exitErr("exited before listening")
	case <-wait.Done():
		return nil, fmt.Errorf("%s did not say where it listens: %w", spec.name, wait.Err())
	}
}

// listeningPort reads the port from a line "NAME is listening on
// 127.0.0.1:PORT", as tbproxy and minproxy print.
func listeningPort(name, line string) (int, bool) {
	addr, ok := strings.CutPrefix(line, name+" is listening on ")
	if !ok {
		return 0, false
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(addr))
	if err != nil || ap.Port() == 0 {
		return 0, false
	}
	return int(ap.Port()), true
}

// publisher is a running `tbproxy publish` of the content directory.
type publisher struct {
	*server
	base      string        // the URL clients reach it by: its own port, or a relay's
	published chan struct{} // closed when it logs that it has hashed a file and seeds it
}

// announce is the URL of its tracker on its own port.
func (p *publisher) announce() string { return p.url("/announce") }

// startPublisher starts `tbproxy publish` of the content directory on
// port (0 for a free one), with its generated metainfo in data, and
// returns once it accepts. With public > 0, it tells clients (in announce
// and url-list) to reach it on that port of 127.0.0.1, where a relay
// forwards to it.
func startPublisher(ctx context.Context, env *runEnv, ws *workspace, data string, port, public int) (*publisher, error) {
	return startPublisherIn(ctx, env, ws, filepath.Dir(ws.content), data, port, public)
}

// startPublisherIn is startPublisher of the directory dir.
func startPublisherIn(ctx context.Context, env *runEnv, ws *workspace, dir, data string, port, public int) (*publisher, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"publish",
		"--dir", dir,
		"--listen", hostPort(port),
		"--peer-listen", "127.0.0.1:0",
		"--data-dir", data,
		"--min-size", "1MiB",
		"--log-level", "info",
	}
	base := "http://" + hostPort(port)
	if public > 0 {
		base = "http://" + hostPort(public)
		args = append(args, "--public-url", base)
	}
	published := make(chan struct{})
	var once sync.Once
	onLine := func(line string) {
		if strings.Contains(line, "msg=published ") {
			once.Do(func() { close(published) })
		}
	}
	s, err := startServer(ctx, env, procSpec{name: "tbproxy publish", path: ws.tbproxy, args: args, onLine: onLine}, port)
	if err != nil {
		return nil, err
	}
	return &publisher{server: s, base: base, published: published}, nil
}

// publishOnce has a publisher hash file (in the content directory) and
// keep its metainfo in data, so that every later publisher on data loads
// it ready, and returns that metainfo. The first request for it only starts the hashing: the
// publisher answers plainly while the hash takes longer than its short
// wait, so the bench waits for the publisher to log that it is done, and
// then checks that it answers with metainfo.
func publishOnce(ctx context.Context, ws *workspace, data, file string) (mi *metainfo.MetaInfo, err error) {
	env, err := newRunEnv(ws, torrent{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	pub, err := startPublisherIn(ctx, env, ws, filepath.Dir(file), data, 0, 0)
	if err != nil {
		return nil, err
	}
	url := pub.url("/" + filepath.Base(file))
	if _, err := curl(ctx, env, curlReq{url: url, accept: btType, want: -1}); err != nil {
		return nil, err
	}
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	limit := startTimeout + time.Duration(float64(st.Size())/50e6*float64(time.Second))
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-pub.published:
	case <-pub.proc.Done():
		return nil, pub.proc.exitErr("exited before publishing")
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, fmt.Errorf("tbproxy publish did not hash %s within %v; last output:\n%s", file, limit, pub.proc.out)
	}
	meta := filepath.Join(env.dir, "published.torrent")
	if _, err := curl(ctx, env, curlReq{url: url, accept: btType, out: meta, want: -1}); err != nil {
		return nil, err
	}
	return readTorrent(meta)
}

// waitSeeds waits until the tracker at announce counts at least n seeds
// of ih: a peer can be found only once it has announced.
func waitSeeds(ctx context.Context, announce string, ih metainfo.Hash, n int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	c := &tracker.HTTPClient{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	seen := -1
	for {
		got, err := c.Scrape(ctx, announce, []metainfo.Hash{ih})
		if err == nil {
			if seen = got[ih].Complete; seen >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tracker %s counts %d seed(s) of %s, want %d: %w (last error: %v)", announce, seen, ih, n, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// relay forwards each TCP connection to its port on 127.0.0.1 to target,
// and counts the bytes target sends back: the bytes an HTTP server
// serves, headers included. The count is kept as the bytes pass, so it
// can be read at any time. With a round trip (newDelayRelay) it emulates
// a wide-area path as well (see wan.go).
type relay struct {
	ln     net.Listener
	target string
	served atomic.Int64  // bytes read from target (and passed on) so far
	rtt    time.Duration // the emulated path's round trip; 0 for none
	quit   chan struct{} // closed by close: ends the path's waits

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open connections, both sides; guarded by mu
	closed bool                  // guarded by mu

	wg sync.WaitGroup // the accept loop and every connection's copies
}

func newRelay(target string) (*relay, error) { return newDelayRelay(target, 0) }

func newDelayRelay(target string, rtt time.Duration) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, rtt: rtt, quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.accept)
	return r, nil
}

func (r *relay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Go(func() { r.serve(c.(*net.TCPConn)) })
	}
}

// track adds c to the open connections; false once the relay is closed.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

// serve relays one connection until both directions have ended.
func (r *relay) serve(client *net.TCPConn) {
	defer client.Close()
	if !r.track(client) {
		return
	}
	defer r.untrack(client)
	nc, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	up := nc.(*net.TCPConn)
	defer up.Close()
	if !r.track(up) {
		return
	}
	defer r.untrack(up)
	if r.rtt > 0 {
		// The handshake: nothing passes for one round trip.
		if !r.wait(r.rtt) {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.pipe(up, client, nil) })
	r.pipe(client, up, &r.served)
	wg.Wait()
}

// pipe is the plain pipe, or the emulated path's delayedPipe.
func (r *relay) pipe(dst, src *net.TCPConn, count *atomic.Int64) {
	if r.rtt > 0 {
		r.delayedPipe(dst, src, count)
		return
	}
	pipe(dst, src, count)
}

// pipe copies src to dst, adding what it reads to count as it goes, and
// then half-closes dst, as a client or server that finished sending would.
// Reading and writing by hand, rather than io.Copy, keeps the count live.
func pipe(dst, src *net.TCPConn, count *atomic.Int64) {
	buf := make([]byte, 256<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if count != nil {
				count.Add(int64(n))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				_ = src.CloseRead()
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.CloseWrite()
}

// close stops accepting, cuts every connection, and returns once every
// goroutine has ended.
func (r *relay) close() {
	r.mu.Lock()
	if !r.closed {
		close(r.quit)
	}
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	_ = r.ln.Close()
	r.wg.Wait()
}

// quietWrites waits until p's wchar has not moved for quiet, at most
// limit, and returns it. It polls every 50 ms.
func quietWrites(ctx context.Context, p *process, quiet, limit time.Duration) (int64, error) {
	deadline := time.Now().Add(limit)
	last, err := p.written()
	if err != nil {
		return 0, err
	}
	still := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Since(still) < quiet && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
		w, err := p.written()
		if err != nil {
			return 0, err
		}
		if w != last {
			last, still = w, time.Now()
		}
	}
	if time.Since(still) < quiet {
		return last, errors.New(p.name + " kept writing")
	}
	return last, nil
}
