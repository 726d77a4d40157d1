package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Inside an intercepted CONNECT tunnel goproxy reads the TLS handshake and
// each request itself, on the hijacked connection, with no deadline and
// no cap on the headers: the http.Server's ReadHeaderTimeout,
// IdleTimeout and MaxHeaderBytes no longer apply. The proxy keeps them
// there too (HARDENING 54, 55): it tracks the connections it accepts
// (trackedListener), and while a tunnel waits for a request (during the
// handshake, and from the end of one response to the next request's
// headers) it bounds the time and the bytes read.

// Tunnel limits, the defaults of Proxy.tunnelHeader and tunnelIdle.
const (
	// tunnelHeaderTimeout bounds the TLS handshake and the first
	// request's headers of a tunnel.
	tunnelHeaderTimeout = 10 * time.Second
	// tunnelIdleTimeout bounds the wait for each later request's headers.
	tunnelIdleTimeout = 2 * time.Minute
)

// tunnelHeaderBytes caps what a tunnel may read while it waits for a
// request: the server's header cap, with room for TLS records and the
// parser's read-ahead into a body.
const tunnelHeaderBytes = maxHeaderBytes + 32<<10

// errTunnelHeaders ends a tunnel whose client sent more than
// tunnelHeaderBytes before a request was complete.
var errTunnelHeaders = errors.New("proxy: request headers in a tunnel too large")

// trackedListener registers every connection it accepts, by remote
// address, until the connection is closed.
type trackedListener struct {
	net.Listener
	conns *sync.Map // remote address → *trackedConn
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, conns: l.conns, key: c.RemoteAddr().String()}
	l.conns.Store(tc.key, tc)
	return tc, nil
}

// trackedConn is an accepted connection. While waiting is set it counts
// the bytes read and fails once they pass tunnelHeaderBytes.
type trackedConn struct {
	net.Conn
	conns    *sync.Map
	key      string
	waiting  atomic.Bool
	deadline atomic.Int64 // while waiting: the read deadline, in Unix nanoseconds
	read     atomic.Int64 // bytes read since waiting was set
	once     sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.waiting.Load() {
		if c.read.Load() >= tunnelHeaderBytes {
			return 0, errTunnelHeaders
		}
		p = p[:min(int64(len(p)), tunnelHeaderBytes-c.read.Load())]
	}
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// SetReadDeadline keeps a waiting tunnel's deadline when it is cleared:
// the http.Server clears it as it hands the connection over (Hijack),
// after the CONNECT handler has set it.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() && c.waiting.Load() {
		t = time.Unix(0, c.deadline.Load())
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetWriteDeadline and SetReadDeadline.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// ReadFrom hands the wrapped connection's ReadFrom what the http.Server's
// response writer copies to it, so that a file goes out with sendfile(2)
// (the warm cache's path, swarm.Reader's WriteTo): without it the wrapper
// would hide the socket's ReadFrom, and every byte would be copied
// through user space.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r) // c.Conn has no ReadFrom: nothing to hide
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.conns.CompareAndDelete(c.key, c) })
	return c.Conn.Close()
}

// awaitRequest bounds the wait for the tunnel's next request: d for its
// headers, and tunnelHeaderBytes read.
func (c *trackedConn) awaitRequest(d time.Duration) {
	at := time.Now().Add(d)
	c.read.Store(0)
	c.deadline.Store(at.UnixNano())
	c.waiting.Store(true)
	c.Conn.SetReadDeadline(at)
}

// requestRead lifts the bounds once a request's headers are in: its body
// and the response take as long as they take.
func (c *trackedConn) requestRead() {
	c.waiting.Store(false)
	c.Conn.SetReadDeadline(time.Time{})
}

// tunnelConn returns the accepted connection a request came on, if the
// proxy tracks it.
func (p *Proxy) tunnelConn(r *http.Request) *trackedConn {
	if r == nil {
		return nil
	}
	v, ok := p.conns.Load(r.RemoteAddr)
	if !ok {
		return nil
	}
	return v.(*trackedConn)
}

// guardTunnel makes resp, an answer in the tunnel of c (nil outside
// one), bound the wait for the tunnel's next request once its body has
// been sent (goproxy closes it then). The body is wrapped before goproxy
// sees the response, which keeps its Content-Length. A 101's two-way body
// is left as it is: goproxy needs it whole to carry the upgraded
// protocol, and the tunnel ends with it.
func guardTunnel(c *trackedConn, resp *http.Response, idle time.Duration) *http.Response {
	if c == nil || resp == nil {
		return resp
	}
	if upgraded(resp) {
		return resp
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	resp.Body = &afterClose{ReadCloser: resp.Body, after: func() { c.awaitRequest(idle) }}
	return resp
}

// afterClose runs after once its body is closed.
type afterClose struct {
	io.ReadCloser
	after func()
	once  sync.Once
}

// WriteTo keeps the body's own WriteTo, which io.Copy would otherwise
// lose behind the wrapper.
func (a *afterClose) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := a.ReadCloser.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, onlyReader{a.ReadCloser})
}

func (a *afterClose) Close() error {
	err := a.ReadCloser.Close()
	a.once.Do(a.after)
	return err
}
