package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/certs"
	"github.com/tbproxy/tbproxy/swarm"
	"github.com/tbproxy/tbproxy/tracker"
)

// The tests in this file prove the outbound policy of HARDENING 40, 41,
// 42, 71 and 74. Nothing in them connects beyond loopback: an address
// elsewhere is first checked against the dialer's Control hook
// (mustRefuseAtControl), which refuses it before the socket connects,
// and only then handed to the proxy.

// mustRefuseAtControl fails the test at once unless the default upstream
// dialer's Control hook refuses hostport, an IP literal address. It runs
// before any real dial of an address off loopback, so that a regression
// of the policy fails the test rather than reaching the network.
func mustRefuseAtControl(t *testing.T, p *Proxy, hostport string) {
	t.Helper()
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		t.Fatalf("%s: not an address literal: %v", hostport, err)
	}
	// The dialer hands Control the address it resolved, unmapped for an
	// IPv4 destination; check both spellings.
	for _, a := range []string{ap.String(), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()} {
		if err := p.controlUpstream("tcp", a, nil); !errors.Is(err, errForbiddenTarget) {
			t.Fatalf("the dialer's Control lets %s through (%v): not dialling it", a, err)
		}
	}
}

// countingListenerOn is countingListener on another loopback address
// (such as [::1]:0); ok is false when the address cannot be listened on.
func countingListenerOn(t *testing.T, addr string) (q *quietListener, ok bool) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	q = &quietListener{addr: ln.Addr().String(), port: port}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			q.n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return q, true
}

// connectVia sends CONNECT target to the proxy at proxyAddr and returns
// the answer's status and, when it is 200, the tunnel.
func connectVia(t *testing.T, proxyAddr, target string) (int, net.Conn) {
	t.Helper()
	status, _, c := connectAnswer(t, proxyAddr, target)
	return status, c
}

// connectAnswer is connectVia, with the body of an answer that is not
// 200.
func connectAnswer(t *testing.T, proxyAddr, target string) (int, string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	return resp.StatusCode, "", bufferedConn{c, br}
}

// bufferedConn reads through the reader that read the CONNECT answer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// rawRequest sends one request, written out as is, to the proxy at
// proxyAddr and reads the answer.
func rawRequest(t *testing.T, proxyAddr, text string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, text)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// proxyClient is a client that sends everything through the proxy at
// proxyAddr and, unless follow, does not follow redirects.
func proxyClient(t *testing.T, proxyAddr string, follow bool) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}), DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// engineHTTPClient is an HTTP client like the engine's web seed and
// tracker clients: direct (no proxy), following redirects, and dialling
// with the proxy's DialUpstream, as cmd/tbproxy wires HTTPDial.
func engineHTTPClient(t *testing.T, p *Proxy) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DialContext: p.DialUpstream, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newEngine(t *testing.T) *swarm.Client {
	t.Helper()
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	return engine
}

// TestForbiddenUpstreamsRefused: with private upstreams off (the
// default), loopback, unspecified, link-local (the cloud metadata
// address), RFC 1918 and ULA destinations, IPv4-mapped or not, and a
// name that resolves to loopback (HARDENING 40, 41), are refused as a
// proxied GET (403), as a blind CONNECT (403, before the 200), inside an
// intercepted CONNECT (403), and by DialUpstream, the engine's dial for
// web seeds and trackers (errForbiddenTarget), over TCP and UDP. The
// services on this machine that they name see no connection.
func TestForbiddenUpstreamsRefused(t *testing.T) {
	engine := newEngine(t)
	q := countingListener(t)
	q6, haveV6 := countingListenerOn(t, "[::1]:0")
	qport, _ := strconv.Atoi(q.port)
	ports := []int{443, qport}
	if haveV6 {
		n, _ := strconv.Atoi(q6.port)
		ports = append(ports, n)
	}
	ca, err := certs.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blind, err := New(Config{Engine: engine, ConnectPorts: ports})
	if err != nil {
		t.Fatal(err)
	}
	blindAddr := serveProxy(t, blind)
	mitm, err := New(Config{Engine: engine, CA: ca, ConnectPorts: ports})
	if err != nil {
		t.Fatal(err)
	}
	mitmAddr := serveProxy(t, mitm)
	get := proxyClient(t, blindAddr, false)

	type target struct {
		host   string // a URL's host, without the port
		remote bool   // off this machine: never dialled unless Control refuses it first
	}
	targets := []target{
		{"127.0.0.1", false},
		{"[::ffff:127.0.0.1]", false},
		{"0.0.0.0", false},
		{"localhost", false}, // HARDENING 41: a name is judged by what it resolves to
		{"169.254.169.254", true},
		{"[::ffff:169.254.169.254]", true},
		{"10.0.0.1", true},
		{"[::ffff:10.0.0.1]", true},
		{"192.168.1.1", true},
		{"172.16.0.1", true},
		{"[fc00::1]", true},
		{"[fe80::1]", true},
	}
	if haveV6 {
		targets = append(targets, target{"[::1]", false})
	}
	for _, tg := range targets {
		// A local target names a listening service, whose count shows
		// whether it was reached; a remote one is only ever refused.
		httpPort, tlsPort := q.port, q.port
		if tg.host == "[::1]" {
			httpPort, tlsPort = q6.port, q6.port
		}
		if tg.remote {
			httpPort, tlsPort = "80", "443"
			mustRefuseAtControl(t, blind, tg.host+":"+httpPort)
			mustRefuseAtControl(t, blind, tg.host+":"+tlsPort)
		}
		hp, hps := tg.host+":"+httpPort, tg.host+":"+tlsPort

		for _, network := range []string{"tcp", "udp"} {
			if c, err := blind.DialUpstream(context.Background(), network, hp); !errors.Is(err, errForbiddenTarget) {
				if c != nil {
					c.Close()
				}
				t.Errorf("DialUpstream(%s, %s): %v, want errForbiddenTarget", network, hp, err)
			}
		}

		resp, err := get.Get("http://" + hp + "/latest/meta-data/")
		if err != nil {
			t.Fatalf("GET %s: %v", hp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "destination not allowed") {
			t.Errorf("GET http://%s/ through the proxy: %s %q, want 403", hp, resp.Status, body)
		}

		// Refused as a GET is, and without goproxy's error text, which
		// named the address and the policy.
		if status, body, _ := connectAnswer(t, blindAddr, hps); status != http.StatusForbidden || body != "tbproxy: destination not allowed\n" {
			t.Errorf("blind CONNECT %s: %d %q, want 403", hps, status, body)
		}

		tc := mitmTunnel(t, mitmAddr, hps, ca)
		if resp, body := getIn(t, tc, hps, "/"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET in an intercepted CONNECT to %s: %s %q, want 403", hps, resp.Status, body)
		}
		tc.Close()
	}
	if n := q.accepted(); n != 0 {
		t.Errorf("the service on 127.0.0.1 saw %d connections from refused targets", n)
	}
	if haveV6 {
		if n := q6.accepted(); n != 0 {
			t.Errorf("the service on [::1] saw %d connections from refused targets", n)
		}
	}
}

// TestNonHTTPSchemesRefused: a proxied request for a URL of another
// scheme than http (file, gopher, ftp) is answered 502 and contacts
// nothing, even with private upstreams allowed; the engine's tracker
// client refuses such announce URLs too, and its UDP announces dial
// under the same policy as everything else (HARDENING 40).
func TestNonHTTPSchemesRefused(t *testing.T) {
	engine := newEngine(t)
	q := countingListener(t)
	lenient, err := New(Config{Engine: engine, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, lenient)
	for _, u := range []string{
		"file:///etc/passwd",
		"file://localhost/etc/passwd",
		"gopher://" + q.addr + "/_GET%20/",
		"ftp://" + q.addr + "/",
		"dict://" + q.addr + "/",
	} {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		host := pu.Host
		if host == "" {
			host = "localhost"
		}
		resp, body := rawRequest(t, addr, "GET "+u+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(body), "root:") {
			t.Errorf("GET %s through the proxy: %s %q, want 502", u, resp.Status, body)
		}
	}

	strict, err := New(Config{Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	tc := &tracker.Client{
		HTTP: tracker.HTTPClient{Client: engineHTTPClient(t, strict)},
		UDP:  tracker.UDPClient{Dial: strict.DialUpstream},
	}
	for _, u := range []string{"gopher://" + q.addr + "/announce", "file:///etc/passwd", "ftp://" + q.addr + "/announce"} {
		if _, err := tc.Announce(context.Background(), u, tracker.AnnounceRequest{}); err == nil {
			t.Errorf("announce to %s: no error", u)
		}
	}
	// The UDP tracker at a loopback address is refused at its dial.
	if _, err := tc.Announce(context.Background(), "udp://"+q.addr+"/announce", tracker.AnnounceRequest{}); !errors.Is(err, errForbiddenTarget) {
		t.Errorf("UDP announce to %s: %v, want errForbiddenTarget", q.addr, err)
	}
	if n := q.accepted(); n != 0 {
		t.Errorf("the service behind the refused URLs saw %d connections", n)
	}
}

// byteCounter is a loopback service that tells whether it was sent any
// bytes.
type byteCounter struct {
	ln    net.Listener
	bytes atomic.Int64
	conns sync.WaitGroup
	done  chan struct{}
}

func newByteCounter(t *testing.T) *byteCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &byteCounter{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			go func() {
				defer b.conns.Done()
				defer c.Close()
				// One byte is enough to tell; closing then keeps a
				// regression from hanging its client.
				n, _ := io.Copy(io.Discard, io.LimitReader(c, 1))
				b.bytes.Add(n)
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener and waits until every connection it accepted
// has sent a byte or ended.
func (b *byteCounter) stop() {
	b.ln.Close()
	<-b.done
	b.conns.Wait()
}

// TestRebindingCaughtOnDialedAddress: the policy judges the address a
// connection actually reached, not the name asked for (HARDENING 41).
// Here a Config.Dial plays a resolver that answers a public-looking name
// with a loopback address at connect time: the connection is dropped
// before anything is sent on it, and the request, the CONNECT and the
// engine's dial are all refused.
func TestRebindingCaughtOnDialedAddress(t *testing.T) {
	engine := newEngine(t)
	svc := newByteCounter(t)
	var dials atomic.Int64
	rebinding := func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, svc.ln.Addr().String())
	}
	p, err := New(Config{Engine: engine, Dial: rebinding})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, p)

	if c, err := p.DialUpstream(context.Background(), "tcp", "rebind.example:80"); !errors.Is(err, errForbiddenTarget) {
		if c != nil {
			c.Close()
		}
		t.Errorf("DialUpstream of a name that rebinds to loopback: %v", err)
	}
	resp, err := proxyClient(t, addr, false).Get("http://rebind.example/secret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET of a name that rebinds to loopback: %s, want 403", resp.Status)
	}
	status, body, tunnel := connectAnswer(t, addr, "rebind.example:443")
	if status != http.StatusForbidden || body != "tbproxy: destination not allowed\n" {
		t.Errorf("CONNECT to a name that rebinds to loopback: %d %q, want 403", status, body)
	}
	if tunnel != nil {
		tunnel.Close() // ends the tunnel, so that stop need not wait for it
	}
	svc.stop()
	if dials.Load() == 0 {
		t.Fatal("the rebinding dialer was never used")
	}
	if n := svc.bytes.Load(); n != 0 {
		t.Errorf("the loopback service was sent bytes through refused connections (%d)", n)
	}
}

// fakeRemote is a connection that reports another remote address.
type fakeRemote struct {
	net.Conn
	remote net.Addr
}

func (f fakeRemote) RemoteAddr() net.Addr { return f.remote }

// TestRedirectToForbiddenTarget: an origin the policy allows (played by
// a loopback server that the proxy's dialer presents as 203.0.113.10, a
// documentation address never contacted) redirects to loopback, the
// proxy itself, link-local, RFC 1918 and ULA targets (HARDENING 42).
// The proxy does not follow: the client gets the 302 with its Location
// untouched, and a client that follows it through the proxy is refused.
// The engine's web seed and tracker clients, which follow redirects
// themselves, are refused at the redirected dial, since it goes through
// DialUpstream too. No target sees a connection.
func TestRedirectToForbiddenTarget(t *testing.T) {
	engine := newEngine(t)
	q := countingListener(t)
	ui := countingListener(t) // the proxy's own status listener
	var originHits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	defer origin.Close()

	const public = "203.0.113.10:80"
	pubAddr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(public))
	var p *Proxy
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == public {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, origin.Listener.Addr().String())
			if err != nil {
				return nil, err
			}
			return fakeRemote{c, pubAddr}, nil
		}
		// Everything else as the default dialer would, under its Control
		// hook; and what that would let through is not for this test to
		// reach.
		d := net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
			if err := p.controlUpstream(network, address, rc); err != nil {
				return err
			}
			return fmt.Errorf("test: not dialling %s", address)
		}}
		return d.DialContext(ctx, network, addr)
	}
	p, err := New(Config{Engine: engine, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddSelf(ui.addr); err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, p)

	targets := []string{
		"http://127.0.0.1:" + q.port + "/admin",
		"http://[::ffff:127.0.0.1]:" + q.port + "/admin",
		"http://localhost:" + q.port + "/admin",
		"http://0.0.0.0:" + q.port + "/admin",
		"http://" + ui.addr + "/status.json",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/",
		"http://192.168.1.1:8080/",
		"http://[fe80::1]/",
		"https://172.16.0.1/",
	}
	noFollow := proxyClient(t, addr, false)
	follow := proxyClient(t, addr, true)
	seeds := engineHTTPClient(t, p)
	trackers := tracker.HTTPClient{Client: seeds}
	for _, to := range targets {
		tu, _ := url.Parse(to)
		port := tu.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[tu.Scheme]
		}
		if a, err := netip.ParseAddr(tu.Hostname()); err == nil && !a.Unmap().IsLoopback() && !a.IsUnspecified() {
			mustRefuseAtControl(t, p, net.JoinHostPort(tu.Hostname(), port))
		}
		from := "http://" + public + "/moved?to=" + url.QueryEscape(to)

		// The proxy hands the redirect on as it came.
		resp, err := noFollow.Get(from)
		if err != nil {
			t.Fatalf("GET %s: %v", from, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != to {
			t.Errorf("redirect to %s: %s, Location %q; want 302 with it unchanged", to, resp.Status, resp.Header.Get("Location"))
		}

		// A client that follows it makes a request of its own, which the
		// policy refuses like any other.
		resp, err = follow.Get(from)
		switch {
		case tu.Scheme == "https":
			// Followed by a CONNECT, refused before its 200.
			if err == nil || !strings.Contains(err.Error(), "Forbidden") {
				if err == nil {
					resp.Body.Close()
				}
				t.Errorf("following to %s through the proxy: %v, want the CONNECT refused", to, err)
			}
		case err != nil:
			t.Errorf("following to %s through the proxy: %v", to, err)
		default:
			resp.Body.Close()
			want := http.StatusForbidden
			if strings.Contains(to, ui.addr) {
				want = http.StatusLoopDetected
			}
			if resp.StatusCode != want {
				t.Errorf("following to %s through the proxy: %s, want %d", to, resp.Status, want)
			}
		}

		// The engine's clients follow redirects, on DialUpstream.
		resp, err = seeds.Get(from)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, errForbiddenTarget) {
			t.Errorf("web seed client redirected to %s: %v, want errForbiddenTarget", to, err)
		}
		if _, err := trackers.Announce(context.Background(), from, tracker.AnnounceRequest{}); !errors.Is(err, errForbiddenTarget) {
			t.Errorf("tracker client redirected to %s: %v, want errForbiddenTarget", to, err)
		}
	}
	if originHits.Load() == 0 {
		t.Fatal("the redirecting origin was never reached")
	}
	if n := q.accepted(); n != 0 {
		t.Errorf("the loopback service saw %d connections through redirects", n)
	}
	if n := ui.accepted(); n != 0 {
		t.Errorf("the proxy's own listener saw %d connections through redirects", n)
	}
}

// selfSigned makes a self-signed certificate for names and ips, valid
// from notBefore to notAfter.
func selfSigned(t *testing.T, notBefore, notAfter time.Time, names []string, ips []net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tbproxy test origin"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// tlsOrigin serves body over TLS with cert on loopback, counting requests.
func tlsOrigin(t *testing.T, cert tls.Certificate, body string, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, body)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes that fail are the point
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// TestUpstreamTLSFailsClosed: with MITM on, an origin whose certificate
// is untrusted, expired or for another host is never re-signed as valid:
// the client inside the tunnel gets a 502 naming the certificate, and the
// origin no request (HARDENING 71). A GET of an https URL sent to the
// proxy as is fails the same way. An origin with a good certificate, in
// the same proxy, is answered.
func TestUpstreamTLSFailsClosed(t *testing.T) {
	engine := newEngine(t)
	now := time.Now()
	loop := []net.IP{net.IPv4(127, 0, 0, 1)}
	good := selfSigned(t, now.Add(-time.Hour), now.Add(24*time.Hour), nil, loop)
	untrusted := selfSigned(t, now.Add(-time.Hour), now.Add(24*time.Hour), nil, loop)
	expired := selfSigned(t, time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), nil, loop)
	otherHost := selfSigned(t, now.Add(-time.Hour), now.Add(24*time.Hour), []string{"example.com"}, nil)
	roots := x509.NewCertPool()
	for _, c := range []tls.Certificate{good, expired, otherHost} {
		roots.AddCert(c.Leaf)
	}

	type origin struct {
		name string
		srv  *httptest.Server
		hits *atomic.Int64
		ok   bool
	}
	var origins []origin
	var ports []int
	for _, o := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{{"good", good, true}, {"untrusted", untrusted, false}, {"expired", expired, false}, {"other host", otherHost, false}} {
		hits := new(atomic.Int64)
		srv := tlsOrigin(t, o.cert, "origin content", hits)
		origins = append(origins, origin{o.name, srv, hits, o.ok})
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		n, _ := strconv.Atoi(port)
		ports = append(ports, n)
	}
	ca, err := certs.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Engine: engine, CA: ca, RootCAs: roots, ConnectPorts: ports, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, p)

	for _, o := range origins {
		target := o.srv.Listener.Addr().String()
		tc := mitmTunnel(t, addr, target, ca)
		resp, body := getIn(t, tc, target, "/")
		tc.Close()
		direct, dbody := rawRequest(t, addr, "GET https://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\nConnection: close\r\n\r\n")
		if o.ok {
			if resp.StatusCode != http.StatusOK || string(body) != "origin content" || direct.StatusCode != http.StatusOK || string(dbody) != "origin content" {
				t.Errorf("%s certificate: %s %q in the tunnel, %s %q as a GET", o.name, resp.Status, body, direct.Status, dbody)
			}
			continue
		}
		for how, r := range map[string]struct {
			resp *http.Response
			body []byte
		}{"in the tunnel": {resp, body}, "as a GET": {direct, dbody}} {
			if r.resp.StatusCode != http.StatusBadGateway || bytes.Contains(r.body, []byte("origin content")) || !bytes.Contains(r.body, []byte("certificate")) {
				t.Errorf("%s certificate, %s: %s %q, want 502 about the certificate", o.name, how, r.resp.Status, r.body)
			}
		}
		if n := o.hits.Load(); n != 0 {
			t.Errorf("the origin with the %s certificate got %d requests", o.name, n)
		}
	}
}

// TestMITMExcludeTunnelsUntouched: a host in MITMExclude is tunnelled
// blindly even with MITM on, so a client that pins its origin's
// certificate sees that very certificate (HARDENING 74); the same origin
// by another name, not excluded, is intercepted with a leaf of the
// proxy's CA.
func TestMITMExcludeTunnelsUntouched(t *testing.T) {
	engine := newEngine(t)
	now := time.Now()
	cert := selfSigned(t, now.Add(-time.Hour), now.Add(24*time.Hour), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	var hits atomic.Int64
	origin := tlsOrigin(t, cert, "origin content", &hits)
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	pinned := x509.NewCertPool()
	pinned.AddCert(cert.Leaf)
	ca, err := certs.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Engine: engine, CA: ca, RootCAs: pinned, MITMExclude: []string{"localhost"},
		ConnectPorts: []int{n}, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, p)

	// Excluded: the client's TLS session is the origin's own.
	target := "localhost:" + port
	status, tunnel := connectVia(t, addr, target)
	if status != http.StatusOK {
		t.Fatalf("CONNECT %s: %d", target, status)
	}
	tc := tls.Client(tunnel, &tls.Config{RootCAs: pinned, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("pinned handshake through an excluded tunnel: %v", err)
	}
	if got := tc.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, cert.Leaf.Raw) {
		t.Fatalf("excluded host: the client got a certificate from %q, not the origin's", got.Issuer)
	}
	if resp, body := getIn(t, tc, target, "/"); resp.StatusCode != http.StatusOK || string(body) != "origin content" {
		t.Fatalf("in the excluded tunnel: %s %q", resp.Status, body)
	}
	tc.Close()

	// Not excluded: intercepted, with the proxy's leaf.
	target = origin.Listener.Addr().String()
	tc = mitmTunnel(t, addr, target, ca)
	leaf := tc.ConnectionState().PeerCertificates[0]
	if bytes.Equal(leaf.Raw, cert.Leaf.Raw) || leaf.CheckSignatureFrom(ca.Certificate()) != nil {
		t.Fatalf("a host not excluded was not intercepted: leaf from %q", leaf.Issuer)
	}
	if resp, body := getIn(t, tc, target, "/"); resp.StatusCode != http.StatusOK || string(body) != "origin content" {
		t.Fatalf("in the intercepted tunnel: %s %q", resp.Status, body)
	}
	tc.Close()
}

// TestConnectDialFailure: a blind CONNECT to an allowed target that
// cannot be reached gets 502 with tbproxy's own words, not the dial
// error (which names addresses and the machine's state).
func TestConnectDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(closed)
	n, _ := strconv.Atoi(port)
	p, err := New(Config{Engine: newEngine(t), ConnectPorts: []int{n}, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	status, body, _ := connectAnswer(t, serveProxy(t, p), closed)
	if status != http.StatusBadGateway || body != "tbproxy: the origin could not be reached\n" {
		t.Fatalf("CONNECT to a closed port: %d %q, want 502", status, body)
	}
}

// TestPublicAddr: special-purpose blocks beyond netip's predicates are
// not public, and an IPv6 address that carries an IPv4 one for a
// translator or tunnel is judged by it. The non-public ones are refused
// by the dialer's Control, before any packet.
func TestPublicAddr(t *testing.T) {
	p, err := New(Config{Engine: newEngine(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tt := range []struct {
		addr   string
		public bool
	}{
		{"93.184.215.14", true},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"100.64.0.1", false}, // carrier-grade NAT
		{"100.127.255.254", false},
		{"100.128.0.1", true},
		{"0.1.2.3", false},
		{"192.0.0.8", false},
		{"198.18.0.1", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"64:ff9b::7f00:1", false},      // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", false},   // NAT64 of 169.254.169.254
		{"64:ff9b::5db8:d70e", true},    // NAT64 of a public address
		{"64:ff9b:1::5db8:d70e", false}, // local-use NAT64
		{"2002:7f00:1::1", false},       // 6to4 of 127.0.0.1
		{"2002:a00:1::1", false},        // 6to4 of 10.0.0.1
		{"2002:5db8:d70e::1", true},
		{"::7f00:1", false}, // IPv4-compatible 127.0.0.1
		{"::a00:1", false},
		{"fec0::1", false},
		{"::ffff:100.64.0.1", false},
	} {
		a := netip.MustParseAddr(tt.addr)
		if got := publicAddr(a); got != tt.public {
			t.Errorf("publicAddr(%s) = %v, want %v", tt.addr, got, tt.public)
		}
		if !tt.public {
			mustRefuseAtControl(t, p, netip.AddrPortFrom(a, 443).String())
		}
	}
}

// TestRequestFraming (HARDENING 51): a request whose framing is
// ambiguous or malformed is refused and reaches no origin; one with both
// Content-Length and chunked framing is read as chunked, goes on chunked
// only, and ends its connection, so that what a client framed by the
// Content-Length is never read as a request of its own (smuggling).
func TestRequestFraming(t *testing.T) {
	var mu sync.Mutex
	var seen []string // requests whose body the origin read whole
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %d %v %q %q", r.Method, r.URL.Path, r.ContentLength, r.TransferEncoding, r.Header.Get("Content-Length"), b))
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer origin.Close()
	p, err := New(Config{Engine: newEngine(t), AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := serveProxy(t, p)
	h := origin.Listener.Addr().String()
	start := "POST http://" + h + "/a HTTP/1.1\r\nHost: " + h + "\r\n"
	smuggled := "GET http://" + h + "/smuggled HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
	for _, tt := range []struct {
		name, text string
		status     int
		seen       []string
	}{
		{"Content-Length and chunked", start + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			200, []string{`POST /a -1 [chunked] "" ""`}},
		{"chunked, identity", start + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, 501, nil},
		{"gzip, chunked", start + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, nil},
		{"bare LF in a chunk size", start + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + smuggled, 400, nil},
		{"Content-Length +5", start + "Content-Length: +5\r\n\r\nhello", 400, nil},
		{"two Content-Lengths", start + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tt.text)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			// Nothing more comes: the connection ends, and a smuggled
			// request is never answered.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after the answer: %d bytes, %v; want the connection closed", n, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, tt.seen) {
				t.Fatalf("the origin read %q, want %q", seen, tt.seen)
			}
		})
	}
}
