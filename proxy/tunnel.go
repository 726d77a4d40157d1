package proxy

import (
	"context"
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

	watch atomic.Pointer[goneWatch] // the background read while a request is answered, if any
	// What a finished background read brought, handed to the reads that
	// follow it: its bytes first, then its error. Only the tunnel's
	// reader (goproxy's loop) touches them.
	early    []byte
	earlyErr error
}

func (c *trackedConn) Read(p []byte) (int, error) {
	c.endWatch()
	if c.waiting.Load() {
		if c.read.Load() >= tunnelHeaderBytes {
			return 0, errTunnelHeaders
		}
		p = p[:min(int64(len(p)), tunnelHeaderBytes-c.read.Load())]
	}
	var n int
	var err error
	switch {
	case len(c.early) > 0:
		n = copy(p, c.early)
		c.early = c.early[n:]
	case c.earlyErr != nil:
		err, c.earlyErr = c.earlyErr, nil
	default:
		n, err = c.Conn.Read(p)
	}
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

// errClientGone is the cause of a tunnel request's context once its
// client has closed the connection, or it broke.
var errClientGone = errors.New("proxy: the client closed the tunnel")

// goneWatch is a background read of a tunnel's connection.
type goneWatch struct {
	done     chan struct{}
	stopping atomic.Bool // set by endWatch: the read's error is its own doing
	buf      []byte      // what was read; written by the read until done
	err      error       // the error that ended the read, once done
}

// watchGone notices a client that leaves while the proxy answers a
// request in its tunnel. goproxy reads a tunnel's connection only for
// requests, so a client that closes it while its answer is prepared (the
// negotiation, the wait for the swarm's first verified bytes) would go
// unseen until a write to it failed; the http.Server watches its own
// connections this way. The request must have no body: the read takes
// what comes after its headers. The returned context, derived from
// parent, is cancelled with errClientGone once the read ends in an error
// (the client's close, or a reset) that endWatch did not cause. What it
// reads (a pipelined request, the TLS close alert) is kept for the
// tunnel's next reads, and it stops on its own once it holds
// tunnelHeaderBytes, so it never buffers more than a waiting tunnel may
// read. The next Read or Close ends it; a context that was not cancelled
// is left to its parent, goproxy's, which ends with the request.
func (c *trackedConn) watchGone(parent context.Context) context.Context {
	if c.earlyErr != nil {
		// The client sent this request and then closed the connection.
		ctx, cancel := context.WithCancelCause(parent)
		cancel(errClientGone)
		return ctx
	}
	limit := tunnelHeaderBytes - len(c.early)
	if c.watch.Load() != nil || limit <= 0 {
		return parent
	}
	ctx, cancel := context.WithCancelCause(parent)
	w := &goneWatch{done: make(chan struct{})}
	c.watch.Store(w)
	go func() {
		defer close(w.done)
		buf := make([]byte, 2<<10)
		for len(w.buf) < limit {
			n, err := c.Conn.Read(buf[:min(len(buf), limit-len(w.buf))])
			w.buf = append(w.buf, buf[:n]...)
			if err != nil {
				w.err = err
				if !w.stopping.Load() {
					cancel(errClientGone)
				}
				return
			}
		}
	}()
	return ctx
}

// endWatch stops a background read of watchGone, if one runs, and keeps
// what it read for the reads that follow: its error too, unless endWatch
// caused it by moving the read deadline into the past.
func (c *trackedConn) endWatch() {
	w := c.watch.Swap(nil)
	if w == nil {
		return
	}
	w.stopping.Store(true)
	c.Conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	c.SetReadDeadline(time.Time{}) // back to the waiting deadline, if one is set
	c.early = append(c.early, w.buf...)
	var ne net.Error
	if w.err != nil && !(errors.As(w.err, &ne) && ne.Timeout()) {
		c.earlyErr = w.err
	}
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

// Close closes the connection, and waits for a background read of
// watchGone to end.
func (c *trackedConn) Close() error {
	c.once.Do(func() { c.conns.CompareAndDelete(c.key, c) })
	w := c.watch.Swap(nil)
	err := c.Conn.Close()
	if w != nil {
		<-w.done
	}
	return err
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
