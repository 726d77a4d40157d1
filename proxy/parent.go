package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// A parent proxy is one that all of the proxy's own HTTP traffic must go
// through, as on a network whose only way out is an organisation's proxy
// (Config.Parent): the requests it forwards and the ones it makes itself
// (negotiations, confirmations, plain fetches), the tunnels it opens for
// CONNECT, and, through the engine (ParentFor), web seeds and HTTP
// trackers. BitTorrent peers and UDP trackers cannot be reached through
// an HTTP proxy and are dialled directly, as without one.
//
// The parent resolves the names it is given, so the outbound policy sees
// names, not addresses: the proxy refuses what a name shows (an address
// literal outside the public Internet, a localhost name, its own
// listeners: checkTarget) and leaves the rest to the parent, which is the
// network's gatekeeper. The parent itself may be on a private network
// (where such proxies usually are): it is dialled whatever its address,
// but never if it is this proxy.

// ParseParent checks a parent proxy's URL: http://[user:password@]host:port,
// with nothing after the port but an optional "/". Only plain HTTP to the
// parent is supported; what goes to origins through it is still verified
// TLS where the origin's URL is HTTPS.
func ParseParent(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parent proxy %q: %w", s, err)
	}
	switch {
	case u.Scheme != "http":
		return nil, fmt.Errorf("parent proxy %q: only http:// parents are supported", s)
	case u.Hostname() == "" || u.Port() == "":
		return nil, fmt.Errorf("parent proxy %q: needs a host and a port", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("parent proxy %q: a proxy's URL has no path, query or fragment", s)
	}
	return &url.URL{Scheme: "http", User: u.User, Host: u.Host}, nil
}

// errParentRefused is a parent proxy that would not open a tunnel, or
// wants other credentials.
var errParentRefused = errors.New("proxy: the parent proxy refused")

// parentAddr is the parent's host:port as dialled, or "" without one.
func (p *Proxy) parentAddr() string {
	if p.cfg.Parent == nil {
		return ""
	}
	return p.cfg.Parent.Host
}

// ParentFor is the parent proxy for an outgoing request r, for an
// http.Transport's Proxy: nil without one, and an error when r's target
// is one the outbound policy refuses by its name (checkTarget). The
// engine's web seeds and trackers use it.
func (p *Proxy) ParentFor(r *http.Request) (*url.URL, error) {
	if p.cfg.Parent == nil {
		return nil, nil
	}
	if err := p.checkTarget(hostPort(r.URL)); err != nil {
		return nil, err
	}
	return p.cfg.Parent, nil
}

// checkTarget is the outbound policy for a target reached through the
// parent, which resolves its name: not one of the proxy's listeners, and,
// unless Config.AllowPrivateUpstream, not a localhost name or an address
// literal outside the public Internet.
func (p *Proxy) checkTarget(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%w: %q", errForbiddenTarget, hostport)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !p.cfg.AllowPrivateUpstream && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		return fmt.Errorf("%w: %s is this machine", errForbiddenTarget, hostport)
	}
	// The rest is the check of a dialled address, which an address
	// literal is.
	return p.controlUpstream("tcp", net.JoinHostPort(host, port), nil)
}

// dialParent connects to the parent proxy: whatever its address, since a
// proxy the user named may be on a private network, but never to one of
// this proxy's own listeners (a loop).
func (p *Proxy) dialParent(ctx context.Context, network string) (net.Conn, error) {
	addr := p.parentAddr()
	if p.isSelf(addr) {
		return nil, fmt.Errorf("%w: the parent proxy %s is this proxy", errForbiddenTarget, addr)
	}
	conn, err := p.parentDial(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("parent proxy: %w", err)
	}
	if p.isSelf(conn.RemoteAddr().String()) {
		conn.Close()
		return nil, fmt.Errorf("%w: the parent proxy %s is this proxy", errForbiddenTarget, addr)
	}
	return conn, nil
}

const (
	// parentConnectTimeout bounds a parent's answer to CONNECT.
	parentConnectTimeout = 30 * time.Second
	// maxParentHeader bounds the header of that answer.
	maxParentHeader = 64 << 10
)

// tunnelVia opens a tunnel to addr (host:port) through the parent proxy:
// a CONNECT, with the parent's credentials when its URL has them, answered
// with a 2xx. The connection returned carries the tunnel's bytes only.
func (p *Proxy) tunnelVia(ctx context.Context, addr string) (net.Conn, error) {
	if err := p.checkTarget(addr); err != nil {
		return nil, err
	}
	conn, err := p.dialParent(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(parentConnectTimeout))
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if auth := parentAuth(p.cfg.Parent); auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("parent proxy: %w", err)
	}
	lr := &io.LimitedReader{R: conn, N: maxParentHeader}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		if lr.N <= 0 {
			return nil, fmt.Errorf("parent proxy: its answer to CONNECT %s has a header over %d bytes", addr, maxParentHeader)
		}
		return nil, fmt.Errorf("parent proxy: reading its answer to CONNECT %s: %w", addr, err)
	}
	if resp.StatusCode/100 != 2 {
		conn.Close()
		return nil, fmt.Errorf("%w: CONNECT %s: %s", errParentRefused, addr, resp.Status)
	}
	conn.SetDeadline(time.Time{})
	if br.Buffered() == 0 {
		return conn, nil
	}
	// Bytes of the tunnel that came with the answer are read first.
	early := make([]byte, br.Buffered())
	br.Read(early)
	return &prefixedConn{Conn: conn, r: io.MultiReader(bytes.NewReader(early), conn)}, nil
}

// send makes an upstream request: every request of the proxy's own or
// forwarded goes through it. A parent proxy's 407 is an error, not an
// answer to pass on: the credentials are the proxy's (Config.Parent), and
// a client asked for them would offer its own to the wrong proxy.
func (p *Proxy) send(req *http.Request) (*http.Response, error) {
	resp, err := p.upstream.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusProxyAuthRequired && p.cfg.Parent != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s: it wants credentials (407)", errParentRefused, redact(req.URL))
	}
	return resp, err
}

// parentAuth is the Proxy-Authorization for the parent u's credentials,
// or "" when it has none.
func parentAuth(u *url.URL) string {
	if u == nil || u.User == nil {
		return ""
	}
	pass, _ := u.User.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
}

// prefixedConn is a connection whose first bytes were already read.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
