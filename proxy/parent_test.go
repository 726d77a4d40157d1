package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// parentProxy is an organisation's forward proxy: it forwards plain
// requests (marked with parentMark, so the origin can tell) and opens
// CONNECT tunnels, and demands credentials when auth is set. It records
// what went through it.
type parentProxy struct {
	srv  *httptest.Server
	auth string // the Proxy-Authorization wanted; "" for none
	tr   *http.Transport

	mu       sync.Mutex
	seen     []string // "METHOD URL Range Accept" of each request forwarded
	connects []string // the targets of the tunnels opened
	conns    []net.Conn
	wg       sync.WaitGroup
}

// parentMark marks the requests a parentProxy forwards.
const parentMark = "X-Test-Parent"

func newParent(t *testing.T, user, pass string) *parentProxy {
	t.Helper()
	pp := &parentProxy{tr: &http.Transport{}}
	if user != "" {
		pp.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	pp.srv = httptest.NewServer(pp)
	t.Cleanup(func() {
		pp.srv.Close()
		pp.mu.Lock()
		for _, c := range pp.conns {
			c.Close()
		}
		pp.mu.Unlock()
		pp.wg.Wait()
		pp.tr.CloseIdleConnections()
	})
	return pp
}

// url is the parent's URL for Config.Parent, with credentials if given.
func (pp *parentProxy) url(t *testing.T, user, pass string) *url.URL {
	t.Helper()
	s := pp.srv.URL
	if user != "" {
		s = strings.Replace(s, "http://", "http://"+user+":"+pass+"@", 1)
	}
	u, err := ParseParent(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (pp *parentProxy) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if pp.auth != "" && r.Header.Get("Proxy-Authorization") != pp.auth {
		rw.Header().Set("Proxy-Authenticate", `Basic realm="corp"`)
		rw.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if r.Method == http.MethodConnect {
		pp.tunnel(rw, r)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(rw, "not a proxy request", http.StatusBadRequest)
		return
	}
	pp.mu.Lock()
	pp.seen = append(pp.seen, strings.Join([]string{r.Method, r.URL.String(), r.Header.Get("Range"), r.Header.Get("Accept")}, " "))
	pp.mu.Unlock()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Set(parentMark, "1")
	resp, err := pp.tr.RoundTrip(out)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	maps.Copy(rw.Header(), resp.Header)
	rw.WriteHeader(resp.StatusCode)
	io.Copy(rw, resp.Body)
}

func (pp *parentProxy) tunnel(rw http.ResponseWriter, r *http.Request) {
	up, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	c, buf, err := rw.(http.Hijacker).Hijack()
	if err != nil {
		up.Close()
		return
	}
	pp.mu.Lock()
	pp.connects = append(pp.connects, r.Host)
	pp.conns = append(pp.conns, c, up)
	pp.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	pp.wg.Add(2)
	go func() {
		defer pp.wg.Done()
		io.Copy(up, buf)
		up.Close()
	}()
	go func() {
		defer pp.wg.Done()
		io.Copy(c, up)
		c.Close()
	}()
}

// wantTunnels fails the test unless the parent opened exactly the
// tunnels to targets, in order.
func (pp *parentProxy) wantTunnels(t *testing.T, targets ...string) {
	t.Helper()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if !slices.Equal(pp.connects, targets) {
		t.Fatalf("tunnels through the parent: %q, want %q", pp.connects, targets)
	}
}

// requests are the requests the parent forwarded whose URL has path.
func (pp *parentProxy) requests(path string) []string {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	var out []string
	for _, s := range pp.seen {
		if u, _ := url.Parse(strings.Fields(s)[1]); u != nil && u.Path == path {
			out = append(out, s)
		}
	}
	return out
}

// TestParentProxy: with a parent proxy, everything the proxy and its
// engine ask of origins over HTTP goes through the parent, with the
// parent's credentials: the negotiation, the confirmation, the web seed's
// ranges, the tracker's announces, plain pages and CONNECT tunnels.
func TestParentProxy(t *testing.T) {
	pp := newParent(t, "corp", "s3cret")
	echo := echoServer(t)
	_, port, _ := net.SplitHostPort(echo)
	w := newWorld(t, 300<<10, func(c *Config) {
		c.Parent = pp.url(t, "corp", "s3cret")
		c.FirstByte = 10 * time.Second
		c.ConnectPorts = []int{atoiOr(port)}
	})
	var direct atomic.Int64 // requests that reached the origin not through the parent
	through := func(h http.HandlerFunc) http.HandlerFunc {
		return func(rw http.ResponseWriter, r *http.Request) {
			if r.Header.Get(parentMark) == "" {
				direct.Add(1)
				http.Error(rw, "only through the parent", http.StatusForbidden)
				return
			}
			h(rw, r)
		}
	}
	// No peers: the file comes from the origin, as the engine's web seed,
	// through the parent.
	w.lonely(t, "/corp.mp3", through(func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, "corp.mp3", time.Time{}, bytes.NewReader(w.content))
	}))
	resp, body := w.get(t, "/corp.mp3", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) {
		t.Fatalf("through the parent: status %d, %d bytes (want %d)", resp.StatusCode, len(body), len(w.content))
	}
	if resp.Header.Get("Etag") == "" || !strings.HasPrefix(resp.Header.Get("Etag"), `"bt-`) {
		t.Fatalf("not served from the torrent: ETag %q", resp.Header.Get("Etag"))
	}
	if n := direct.Load(); n != 0 {
		t.Fatalf("%d requests reached the origin not through the parent", n)
	}
	var negotiation, question, ranges int
	for _, s := range pp.requests("/corp.mp3") {
		switch {
		case strings.Contains(s, "application/x-bittorrent"):
			negotiation++
		case strings.Contains(s, "bytes=0-0"):
			question++
		case strings.Contains(s, "bytes="):
			ranges++
		}
	}
	if negotiation != 1 || question != 1 || ranges == 0 {
		t.Fatalf("through the parent: %d negotiations, %d confirmations, %d web seed ranges; want 1, 1, some\n%s",
			negotiation, question, ranges, strings.Join(pp.requests("/corp.mp3"), "\n"))
	}
	if len(pp.requests("/corp.mp3/announce")) == 0 {
		t.Fatal("the tracker was not announced to through the parent")
	}

	// A plain page passes through the parent unchanged.
	w.mux.HandleFunc("/corp.html", through(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "<p>intranet</p>")
	}))
	resp, body = w.get(t, "/corp.html", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "<p>intranet</p>" {
		t.Fatalf("plain page through the parent: %d %q", resp.StatusCode, body)
	}

	// A CONNECT tunnel is opened through the parent.
	status, c := connectVia(t, w.proxyURL.Host, echo)
	if status != http.StatusOK {
		t.Fatalf("CONNECT through the parent: status %d", status)
	}
	io.WriteString(c, "ping\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("through the tunnel: %q, %v", line, err)
	}
	c.Close()
	pp.wantTunnels(t, echo)
}

// TestParentProxyRefuses: a parent that wants other credentials, a
// parent that is the proxy itself, and a target the policy refuses by
// its name are each a clear error to the client, and nothing is sent to
// the parent for the refused target.
func TestParentProxyRefuses(t *testing.T) {
	pp := newParent(t, "corp", "s3cret")
	echo := echoServer(t)
	_, port, _ := net.SplitHostPort(echo)
	w := newWorld(t, 64<<10, func(c *Config) {
		c.Parent = pp.url(t, "corp", "wrong")
		c.ConnectPorts = []int{atoiOr(port)}
	})
	resp, body := w.get(t, "/page.html", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "parent proxy refused") || resp.Header.Get("Proxy-Authenticate") != "" {
		t.Fatalf("wrong credentials: %d %q (Proxy-Authenticate %q)", resp.StatusCode, body, resp.Header.Get("Proxy-Authenticate"))
	}
	if status, body, _ := connectAnswer(t, w.proxyURL.Host, echo); status != http.StatusBadGateway || !strings.Contains(body, "parent proxy refused") {
		t.Fatalf("CONNECT with wrong credentials: %d %q", status, body)
	}

	// The policy, off for loopback origins in the world, refuses by name.
	strict := newParent(t, "", "")
	w2 := newWorld(t, 64<<10, func(c *Config) {
		c.Parent = strict.url(t, "", "")
		c.AllowPrivateUpstream = false
	})
	for _, u := range []string{w2.origin.URL + "/page.html", "http://localhost:9/", "http://10.1.2.3/x"} {
		resp, err := w2.client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s through the parent: status %d, want 403", u, resp.StatusCode)
		}
	}
	if seen := strict.requests("/page.html"); len(seen) != 0 {
		t.Fatalf("refused targets reached the parent: %q", seen)
	}

	// A parent that is the proxy itself is a loop.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := ParseParent("http://" + ln.Addr().String())
	px, err := New(Config{Engine: w.proxy.cfg.Engine, AllowPrivateUpstream: true, Parent: self})
	if err != nil {
		t.Fatal(err)
	}
	proxyURL, _ := url.Parse("http://" + serveProxyOn(t, px, ln))
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Get(w.origin.URL + "/page.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the proxy as its own parent: status %d %q, want 403", resp.StatusCode, body)
	}
}

func TestParseParent(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" is an error
	}{
		{"http://proxy.corp:3128", "http://proxy.corp:3128"},
		{"http://u:p@10.0.0.1:8080/", "http://u:p@10.0.0.1:8080"},
		{"http://[::1]:3128", "http://[::1]:3128"},
		{"https://proxy.corp:3128", ""},
		{"socks5://proxy.corp:1080", ""},
		{"http://proxy.corp", ""},
		{"proxy.corp:3128", ""},
		{"http://proxy.corp:3128/path", ""},
		{"http://proxy.corp:3128/?q=1", ""},
		{"", ""},
	} {
		u, err := ParseParent(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseParent(%q) = %v, want an error", tt.in, u)
		case tt.want != "" && (err != nil || u.String() != tt.want):
			t.Errorf("ParseParent(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}

// echoServer echoes lines on a loopback port until the test ends, and
// returns its address.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func atoiOr(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestParentProxyMITM: an intercepted tunnel's requests reach the HTTPS
// origin through a tunnel the parent opens, with TLS to the origin
// verified end to end.
func TestParentProxyMITM(t *testing.T) {
	pp := newParent(t, "corp", "s3cret")
	var hits atomic.Int64
	_, addr, target, ca := mitmServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "secure origin")
	}, 0, func(c *Config) { c.Parent = pp.url(t, "corp", "s3cret") })
	tc := mitmTunnel(t, addr, target, ca)
	defer tc.Close()
	resp, body := getIn(t, tc, target, "/")
	if resp.StatusCode != http.StatusOK || string(body) != "secure origin" || hits.Load() != 1 {
		t.Fatalf("through the parent, intercepted: %s %q (%d hits)", resp.Status, body, hits.Load())
	}
	pp.wantTunnels(t, target)
}

// TestTunnelViaHostileParent: a parent's answer to CONNECT is read with
// limits: a header without end is an error, a status other than 2xx is a
// refusal, and tunnel bytes sent with the answer reach the tunnel first.
func TestTunnelViaHostileParent(t *testing.T) {
	for _, tt := range []struct {
		name, answer, want string // want: the error's text, or the tunnel's first bytes
		ok                 bool
	}{
		{"endless header", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxParentHeader) + "\r\n\r\n", "header over", false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", "reading its answer", false},
		{"refused", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "refused", false},
		{"early bytes", "HTTP/1.1 200 Connection established\r\n\r\nhello", "hello", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			defer wg.Wait()
			defer ln.Close()
			wg.Go(func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.answer)
				io.Copy(io.Discard, c) // until the proxy hangs up
			})
			w := newWorld(t, 1<<10, func(c *Config) { c.Parent, _ = ParseParent("http://" + ln.Addr().String()) })
			conn, err := w.proxy.tunnelVia(t.Context(), "example.com:443")
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("tunnelVia: %v, want an error with %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got := make([]byte, len(tt.want))
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != tt.want {
				t.Fatalf("the tunnel's first bytes: %q, %v", got, err)
			}
		})
	}
}
