package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/certs"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// mitmTunnel opens a CONNECT tunnel to target through the proxy at
// proxyAddr and speaks TLS in it, trusting ca.
func mitmTunnel(t *testing.T, proxyAddr, target string, ca *certs.CA) *tls.Conn {
	t.Helper()
	status, c := connectVia(t, proxyAddr, target)
	if status != http.StatusOK {
		t.Fatalf("CONNECT %s: status %d", target, status)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: host})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// getIn sends a GET for path with the given Host header in the tunnel and
// reads the answer.
func getIn(t *testing.T, tc *tls.Conn, host, path string) (*http.Response, []byte) {
	t.Helper()
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/plain\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestMITMHostMustMatchTunnel: inside an intercepted tunnel, a request
// whose Host names another host or port than the CONNECT is refused with
// 421 and goes nowhere (HARDENING 54, 75); otherwise the CONNECT port
// policy could be escaped. A request for the tunnel's own authority is
// answered.
func TestMITMHostMustMatchTunnel(t *testing.T) {
	other := countingListener(t) // a service on a port CONNECT does not allow
	var hits atomic.Int64
	addr, target, ca := mitmProxy(t, &hits, 0)
	_, port, _ := net.SplitHostPort(target)

	tc := mitmTunnel(t, addr, target, ca)
	resp, body := getIn(t, tc, target, "/")
	if resp.StatusCode != http.StatusOK || string(body) != "origin" {
		t.Fatalf("the tunnel's own host: %s %q", resp.Status, body)
	}
	for _, host := range []string{
		other.addr,                 // another port on the same host
		"localhost:" + other.port,  // another name for it
		"127.0.0.1",                // no port: 443, not the tunnel's
		"example.invalid:" + port,  // another host on the tunnel's port
		"127.0.0.1:" + port + "@x", // not a host:port at all
	} {
		tc := mitmTunnel(t, addr, target, ca)
		resp, body := getIn(t, tc, host, "/")
		if resp.StatusCode != http.StatusMisdirectedRequest && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Host %q in a tunnel to %s: %s %q, want 421", host, target, resp.Status, body)
		}
	}
	if got := other.accepted(); got != 0 {
		t.Fatalf("the service behind another Host saw %d connections", got)
	}
	// The same authority, spelled differently, is the tunnel's.
	for _, host := range []string{"127.0.0.1:" + port, "[::ffff:127.0.0.1]:" + port} {
		tc := mitmTunnel(t, addr, target, ca)
		if resp, body := getIn(t, tc, host, "/"); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %q in a tunnel to %s: %s %q", host, target, resp.Status, body)
		}
	}
}

// TestMITMUpgrade: a protocol upgrade (a wss:// WebSocket) in an
// intercepted tunnel gets the origin's 101 and then carries bytes both
// ways: goproxy needs the 101's two-way body unwrapped (guardTunnel).
func TestMITMUpgrade(t *testing.T) {
	addr, target, ca := mitmProxyFor(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(c, "echo: "+line)
	}, 0)

	tc := mitmTunnel(t, addr, target, ca)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(tc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", target)
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a WebSocket upgrade in the tunnel: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	io.WriteString(tc, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo: hello\n" {
		t.Fatalf("after the upgrade: %q, %v", line, err)
	}
}

// TestMITMBrokenChunkedBody: an origin's chunked answer that breaks off
// inside an intercepted tunnel reaches the client unterminated, and the
// proxy lives on (the abort that a client of the proxy's own server gets,
// see TestChunkedPassThroughTruncated, has no server to catch it here).
func TestMITMBrokenChunkedBody(t *testing.T) {
	addr, target, ca := mitmProxyFor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(strings.Repeat("x", 5000)))
		w.(http.Flusher).Flush()
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	}, 0)
	for range 2 {
		tc := mitmTunnel(t, addr, target, ca)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(tc, "GET /stream HTTP/1.1\r\nHost: %s\r\nAccept: text/plain\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		tc.Close()
		if err == nil {
			t.Fatalf("%d bytes of a broken body ended cleanly in the tunnel", len(body))
		}
	}
}

// TestMITMClientGone: in an intercepted tunnel goproxy gives a request a
// context that never ends while it is answered, so a client that left
// while its stream waited for the swarm's first verified bytes held the
// stream until its first-byte budget ran out (here a minute). The proxy
// watches the tunnel's connection (watchGone): the stream ends once the
// client closes it. Requests sent one after another, and two sent at
// once, are still answered in the tunnel.
func TestMITMClientGone(t *testing.T) {
	content := make([]byte, 256<<10)
	rand.Read(content)
	src := filepath.Join(t.TempDir(), "slow.bin")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), src, metainfo.BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	torrent, _ := m.Marshal()
	stop := make(chan struct{})
	p, addr, target, ca := mitmServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/later":
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "origin")
		case r.URL.Path != "/slow.bin":
			io.WriteString(w, "origin")
		case strings.Contains(r.Header.Get("Accept"), negotiate.MediaType):
			w.Header().Set("Content-Type", negotiate.MediaType)
			w.Write(torrent)
		default: // the file itself never comes
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		}
	}, 0, func(c *Config) { c.FirstByte = time.Minute })
	defer close(stop)

	tc := mitmTunnel(t, addr, target, ca)
	fmt.Fprintf(tc, "GET /slow.bin HTTP/1.1\r\nHost: %s\r\n\r\n", target)
	waitUntil(t, 10*time.Second, func() bool { return len(p.Status().Transfers) == 1 }, "no stream started")
	tc.Close()
	waitUntil(t, 10*time.Second, func() bool { return len(p.Status().Transfers) == 0 },
		"the stream of a client that closed its tunnel is still there (the first-byte budget is a minute)")

	tc = mitmTunnel(t, addr, target, ca)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(tc)
	read := func(what string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "origin" {
			t.Fatalf("%s: %q, %v", what, body, err)
		}
	}
	req := fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\n\r\n", target)
	io.WriteString(tc, req)
	read("the first request")
	io.WriteString(tc, req)
	read("the next request")
	io.WriteString(tc, req+req)
	read("the first of two sent at once")
	read("the second of two sent at once")
	// A request sent while the one before it is answered: the watch
	// reads it, and hands it on.
	fmt.Fprintf(tc, "GET /later HTTP/1.1\r\nHost: %s\r\n\r\n", target)
	time.Sleep(100 * time.Millisecond)
	io.WriteString(tc, req)
	read("a slow answer")
	read("the request sent while it was prepared")
}

// waitUntil polls cond until it holds, or fails the test with msg once d
// has passed.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
