package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// opening is a torrent being opened: its cache entry made and the engine
// told, which takes a fresh torrent a few syscalls. It runs on its own
// goroutine, so that a response whose origin has confirmed the file need
// not wait for it before its headers go out (see serve). Whoever holds an
// opening waits for done before letting go of it.
type opening struct {
	done   chan struct{}
	t      *swarm.Torrent // once done, when err is nil
	err    error
	magnet bool // the torrent came by a magnet
}

// open starts opening the torrent of m for orig (openTorrent). A torrent
// the engine has already is joined at once, with no goroutine.
func (p *Proxy) open(orig *http.Request, m *metainfo.MetaInfo, idx int, mg *metainfo.Magnet) *opening {
	op := &opening{done: make(chan struct{}), magnet: mg != nil}
	run := func() {
		defer close(op.done)
		op.t, op.err = p.openTorrent(orig, m, idx, mg)
		p.openFailing.Store(op.err != nil)
	}
	if _, ok := p.cfg.Engine.Torrent(m.InfoHash); ok {
		run()
	} else if !p.goFlight(run) {
		// A response may let go of the opening without waiting (the
		// origin disowned the torrent meanwhile): the proxy owns the
		// goroutine, and Close waits for it.
		op.err = errProxyClosed
		close(op.done)
	}
	return op
}

// errNotOpened aborts a response whose headers went out on the origin's
// confirmation but whose torrent could not be opened.
var errNotOpened = errors.New("proxy: the torrent could not be opened after the headers went out")

// lateSpan is the body of a response whose headers went out on the
// origin's confirmation, before its torrent was open: the span's reader
// is made once the torrent is, when the body is first read. A torrent
// that cannot be opened within the first-byte budget aborts the response,
// as any stream that cannot go on does.
type lateSpan struct {
	p      *Proxy
	orig   *http.Request
	op     *opening
	m      *metainfo.MetaInfo
	idx    int
	pl     planned
	ctx    context.Context // ends the wait when the body is closed
	cancel context.CancelFunc

	once sync.Once
	b    *spanBody
	err  error
}

func (p *Proxy) newLateSpan(orig *http.Request, op *opening, m *metainfo.MetaInfo, idx int, pl planned) *lateSpan {
	ctx, cancel := context.WithCancel(orig.Context())
	return &lateSpan{p: p, orig: orig, op: op, m: m, idx: idx, pl: pl, ctx: ctx, cancel: cancel}
}

// span waits for the torrent and returns the span's body, made once.
func (l *lateSpan) span() (*spanBody, error) {
	l.once.Do(func() {
		timer := time.NewTimer(l.p.firstByte())
		defer timer.Stop()
		select {
		case <-l.op.done:
		case <-timer.C:
			l.err = fmt.Errorf("%w: not open after %v", errNotOpened, l.p.firstByte())
		case <-l.ctx.Done():
			l.err = l.ctx.Err()
		case <-l.p.base.Done():
			l.err = errProxyClosed
		}
		if l.err == nil && l.op.err != nil {
			l.err = fmt.Errorf("%w: %w", errNotOpened, l.op.err)
		}
		if l.err == nil {
			l.b, l.err = l.p.newSpan(l.orig, l.op.t, l.m, l.idx, l.pl)
		}
		if l.err != nil {
			if l.ctx.Err() == nil {
				l.p.log.Warn("aborting a response whose torrent did not open", "url", redact(l.orig.URL), "err", l.err)
			}
			return
		}
		l.b.watch(l.p, l.p.firstByte())
	})
	return l.b, l.err
}

func (l *lateSpan) Read(p []byte) (int, error) {
	b, err := l.span()
	if err != nil {
		return 0, err
	}
	return b.Read(p)
}

// WriteTo sends the headers, then the span once the torrent is open.
func (l *lateSpan) WriteTo(w io.Writer) (int64, error) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	b, err := l.span()
	if err != nil {
		return 0, err
	}
	return b.WriteTo(w)
}

// Close releases the span, or ends the wait for the torrent, and waits
// for the opening to finish.
func (l *lateSpan) Close() error {
	l.cancel()
	l.once.Do(func() { l.err = errTruncated })
	<-l.op.done
	if l.b != nil {
		return l.b.Close()
	}
	return nil
}
