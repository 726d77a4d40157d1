package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// A large plain-HTTP body that the proxy passes through untouched goes
// from the origin's socket to the client's with splice(2), as nginx sends
// a file: no byte is copied through the proxy's memory. The upstream
// Transport still makes the exchange (dial under the policy, request,
// headers, keep-alive); the body's first bytes are read through its
// buffers as usual, and once a read goes straight from the socket into
// the proxy's own buffer, no buffer holds body bytes any more and the
// rest of the body, whose length the Content-Length gives, is spliced.
// The Transport then closes that connection (its body was not read to
// the end through it) instead of reusing it.

// spliceMin is the smallest body worth splicing.
const spliceMin = 1 << 20

// upstreamConn is a TCP connection the upstream Transport dialled. It
// notes the buffer each read fills, so that a body can tell when a read
// came straight from the socket.
type upstreamConn struct {
	net.Conn
	tcp      *net.TCPConn
	lastRead atomic.Pointer[byte]
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	if len(p) > 0 {
		c.lastRead.Store(&p[0])
	}
	return c.Conn.Read(p)
}

// spliceDial wraps the TCP connections dial makes in upstreamConn.
func spliceDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if tcp, ok := c.(*net.TCPConn); ok && err == nil {
			return &upstreamConn{Conn: tcp, tcp: tcp}, nil
		}
		return c, err
	}
}

// connOf makes req note, in *conn, the upstream connection the Transport
// sends it on, when that may be spliced from: plain HTTP.
func connOf(req *http.Request, conn **upstreamConn) *http.Request {
	if req.URL.Scheme != "http" {
		return req
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		*conn, _ = info.Conn.(*upstreamConn)
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

// passBody is the body of a response passed through: r is the body,
// through any buffer of the proxy's, and c closes it. When up is set the
// body may be spliced from it, and left is what remains of it.
type passBody struct {
	r       io.Reader
	c       io.Closer
	up      *upstreamConn
	left    int64
	spliced *atomic.Int64 // counts the bytes spliced
	// abort: the answer goes to a client of the proxy's own HTTP server
	// (not through a MITM tunnel), whose connection is aborted when the
	// origin's body breaks off (see WriteTo).
	abort bool
	// broke is the error that ended reading the origin's body early.
	broke error
}

// passBody is resp's body, read through r, to be passed through;
// spliced from up when resp is a large plain body of known length.
func (p *Proxy) passBody(r io.Reader, resp *http.Response, up *upstreamConn) *passBody {
	b := &passBody{r: r, c: resp.Body, spliced: &p.spliced, abort: fromServer(resp.Request)}
	if up != nil && resp.ContentLength >= spliceMin && len(resp.TransferEncoding) == 0 && !resp.Uncompressed &&
		resp.Request != nil && resp.Request.Method != http.MethodHead {
		b.up, b.left = up, resp.ContentLength
	}
	return b
}

// fromServer reports whether req, or the request it was cloned from, came
// to the proxy's own HTTP server: a request read inside a MITM tunnel
// carries none of its context.
func fromServer(req *http.Request) bool {
	return req != nil && req.Context().Value(http.ServerContextKey) != nil
}

func (b *passBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF && b.broke == nil {
		b.broke = err
	}
	return n, err
}

func (b *passBody) Close() error { return b.c.Close() }

// WriteTo passes the body on to w (writeTo). When the origin's body
// breaks off, a client of the proxy's own server has its connection
// aborted (http.ErrAbortHandler): goproxy only logs the error, and a
// chunked answer would otherwise end with a clean last chunk, a shorter
// body than the origin's passed off as whole. Inside a MITM tunnel,
// goproxy leaves such an answer unterminated itself.
func (b *passBody) WriteTo(w io.Writer) (int64, error) {
	n, err := b.writeTo(w)
	if err != nil && b.abort && b.broke != nil {
		b.c.Close() // goproxy's own Close is skipped by the panic
		panic(http.ErrAbortHandler)
	}
	return n, err
}

// writeTo copies the body to w in 256 KiB steps, so goproxy's io.Copy of
// a large body makes an eighth of the syscalls that the 32 KiB buffer of
// the socket's own ReadFrom would; or splices it, when it can, once the
// buffers above the socket are empty.
func (b *passBody) writeTo(w io.Writer) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	rf, ok := w.(io.ReaderFrom)
	if b.up == nil || !ok {
		return io.CopyBuffer(onlyWriter{w}, onlyReader{b}, *buf)
	}
	var written int64
	for {
		b.up.lastRead.Store(nil)
		n, err := b.Read(*buf)
		direct := b.up.lastRead.Load() == &(*buf)[0]
		if n > 0 {
			m, werr := w.Write((*buf)[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
		}
		switch {
		case err == io.EOF || b.left <= 0:
			return written, nil
		case err != nil:
			return written, err
		case direct:
			// Read straight from the socket: nothing above it holds
			// body bytes, and the rest is on the socket.
			lr := &io.LimitedReader{R: b.up.tcp, N: b.left}
			m, err := rf.ReadFrom(lr)
			written += m
			b.left -= m
			b.spliced.Add(m)
			if err == nil && b.left > 0 {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				// Which side failed is not told apart here: aborting
				// a client that has gone costs nothing.
				b.broke = err
			}
			return written, err
		}
	}
}
